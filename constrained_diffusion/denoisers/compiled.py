"""Compiled forwards for the diffusers adapters: ``torch.compile``, channels-last and SDPA.

``StableDiffusionDenoiser(pipe, compile=True)`` (and `SD3Denoiser`, `FluxDenoiser`, every
``from_pretrained`` / ``from_pipeline``) calls the network through
``torch.compile(network, mode=compile_mode, backend=compile_backend, dynamic=False)``:

* ``compile_mode``: ``None`` / ``"default"``, ``"reduce-overhead"`` (CUDA graphs: the graph is
  captured once per input shape and replayed, which removes the launch overhead that dominates a
  batch-1 UNet forward on a GPU), ``"max-autotune"`` (autotuned kernels and CUDA graphs) or
  ``"max-autotune-no-cudagraphs"``.
* ``compile_backend``: ``"inductor"`` (default, generated kernels) or any registered backend,
  e.g. ``"aot_eager"`` (traces forward and backward, runs them eagerly: what the CPU tests use,
  because it compiles in about a second).
* In the CUDA-graph modes every call starts a new graph step and its outputs are cloned: a
  replay overwrites the previous replay's output buffers, and the finite difference keeps
  ``D(x_t)`` while it evaluates ``D(x_t + h' e)``.
* ``dynamic=False``: every input shape gets its own static graph. The finite difference of
  `InexactNewton` evaluates ``D(x_t + h' e)`` at the batch of ``D(x_t)`` (the unperturbed
  forward is reused, `fd_jvp` with ``fx``), so plain evaluations and perturbed ones share one
  graph; classifier-free guidance doubles the batch in both alike.
* A UNet on CUDA is moved to ``torch.channels_last`` (the convolutions' fast layout for cuDNN
  in half precision); attention runs through ``scaled_dot_product_attention`` (diffusers'
  ``AttnProcessor2_0``, its default: a classic ``AttnProcessor`` is replaced).

The compiled callable wraps the same module (the pipeline's, not a copy), so weights and memory
are shared; the first call of each shape compiles (seconds to minutes; time it apart, as
``bench-sd --end-to-end`` does with its warm-up run). The results equal the eager ones to float
tolerance (tests: ``tests/test_compiled.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""The ``mode`` values of ``torch.compile``."""


@dataclass(frozen=True)
class CompileOptions:
    """How an adapter calls its network.

    Attributes:
        compile: compile the network with ``torch.compile``.
        mode: ``torch.compile``'s ``mode`` (one of `COMPILE_MODES`) or ``None`` (its default).
        backend: ``torch.compile``'s ``backend`` (``"inductor"``, ``"aot_eager"``, ...).

    Raises:
        ValueError: an unknown ``compile_mode``, an empty ``compile_backend``, or either given
            without ``compile=True``, naming the parameter.

    Examples:
        >>> CompileOptions(True, "reduce-overhead").mode
        'reduce-overhead'
        >>> CompileOptions(False, "fast")
        Traceback (most recent call last):
        ...
        ValueError: compile_mode must be None or one of ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs'), got 'fast'
    """

    compile: bool = False
    mode: str | None = None
    backend: str = "inductor"

    def __post_init__(self) -> None:
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        if self.mode is not None and self.mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be None or one of {COMPILE_MODES}, got {self.mode!r}")
        if not isinstance(self.backend, str) or not self.backend:
            raise ValueError(f"compile_backend must be a non-empty backend name, got {self.backend!r}")
        if not self.compile and (self.mode is not None or self.backend != "inductor"):
            raise ValueError("compile_mode / compile_backend: given without compile=True (pass compile=True to compile)")


def use_sdpa(module: nn.Module) -> None:
    """Replace diffusers' classic ``AttnProcessor`` by ``AttnProcessor2_0`` (``scaled_dot_product_attention``)."""
    processors = getattr(module, "attn_processors", None)
    if not processors or not any(type(p).__name__ == "AttnProcessor" for p in processors.values()):
        return
    from diffusers.models.attention_processor import AttnProcessor2_0

    module.set_attn_processor({name: AttnProcessor2_0() if type(p).__name__ == "AttnProcessor" else p
                               for name, p in processors.items()})


def compiled_forward(module: nn.Module, options: CompileOptions, channels_last: bool = False) -> Callable[..., Any]:
    """The callable an adapter calls instead of ``module``: ``module`` itself, or its compiled form.

    Args:
        module: the UNet or transformer (modified in place: channels-last, SDPA processors).
        options: whether and how to compile.
        channels_last: move ``module`` to ``torch.channels_last`` (UNets on CUDA).

    Returns:
        ``module`` when ``options.compile`` is false, else
        ``torch.compile(module, mode=..., backend=..., dynamic=False)``.
    """
    if not options.compile:
        return module
    use_sdpa(module)
    if channels_last:
        module.to(memory_format=torch.channels_last)
    compiled = torch.compile(module, mode=options.mode, backend=options.backend, dynamic=False)
    return _owned_outputs(compiled) if options.mode in CUDA_GRAPH_MODES else compiled


CUDA_GRAPH_MODES: tuple[str, ...] = ("reduce-overhead", "max-autotune")
"""The modes that replay CUDA graphs, whose outputs live in memory the next replay overwrites."""


def _owned_outputs(compiled: Callable[..., Any]) -> Callable[..., Any]:
    """Call ``compiled`` as a new CUDA-graph step and clone its tensor outputs.

    A replayed graph writes its outputs into the same static buffers every time, so the
    ``D(x_t)`` that a finite difference keeps would be overwritten by ``D(x_t + h' e)``; the
    clone (one latent-sized copy per forward) keeps every output valid.
    """

    def call(*args: Any, **kwargs: Any) -> Any:
        torch.compiler.cudagraph_mark_step_begin()
        out = compiled(*args, **kwargs)
        if isinstance(out, tuple):
            return tuple(o.clone() if isinstance(o, torch.Tensor) else o for o in out)
        return out.clone() if isinstance(out, torch.Tensor) else out

    return call
