"""What the diffusers adapters share: loading a pipeline with clear errors, and binding conditioning.

`DiffusersDenoiser` gives `from_pretrained` (a local folder or a Hub id, checked against the
subclass's ``SUPPORTED`` pipeline kinds) and `from_pipeline`; `_bound_copy` is the shallow
copy that ``condition`` fills with the prompt embeddings (modules shared, counters reset).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from constrained_diffusion.denoisers.base import Denoiser

D = TypeVar("D", bound="DiffusersDenoiser")


def load_pipeline(path_or_id: str | os.PathLike[str], expected: tuple[str, ...], torch_dtype: torch.dtype | None) -> Any:
    """``DiffusionPipeline.from_pretrained`` with clear errors for a missing path or the wrong kind.

    Raises:
        FileNotFoundError: a local-looking path that does not exist.
        ValueError: a folder without a diffusers pipeline, or a pipeline not in ``expected``.
    """
    from diffusers import DiffusionPipeline

    text = os.fspath(path_or_id)
    path = Path(text)
    absent: dict[str, None] = {}
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"{text} holds no diffusers pipeline (no model_index.json)")
        index = json.loads((path / "model_index.json").read_text())
        kind = index.get("_class_name")
        if kind not in expected:
            raise ValueError(f"{text} holds a {kind}; expected one of {', '.join(expected)}")
        # components saved as null (e.g. no text encoders) must be passed as None explicitly
        absent = {k: None for k, v in index.items() if not k.startswith("_") and (v is None or v == [None, None])}
    else:
        hub_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and not text.endswith("/")
        if not hub_id:
            raise FileNotFoundError(f"no such folder: {text} (and it is not a Hub id of the form org/name)")
    pipe = DiffusionPipeline.from_pretrained(text, torch_dtype=torch_dtype, **absent)
    if type(pipe).__name__ not in expected:
        raise ValueError(f"{text} is a {type(pipe).__name__}; expected one of {', '.join(expected)}")
    if torch_dtype is not None:
        _cast_components(pipe, torch_dtype)
    return pipe


def _cast_components(pipe: Any, dtype: torch.dtype) -> None:
    """Cast every module of ``pipe`` whose floating-point parameters are not all in ``dtype``.

    diffusers 0.42 without ``accelerate`` loads an ``SD3Transformer2DModel`` in float32 whatever
    ``torch_dtype`` says (the VAE does take it); the adapters need the dtype that was asked for.
    """
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module) and any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
            module.to(dtype=dtype)


class DiffusersDenoiser(Denoiser):
    """Base of the adapters over a diffusers pipeline; subclasses take ``(pipe, height, width)``."""

    SUPPORTED: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_pretrained(cls: type[D], path_or_id: str | os.PathLike[str], torch_dtype: torch.dtype | None = None,
                        device: torch.device | str | None = None, **kwargs: Any) -> D:
        """Load a pipeline of one of the ``SUPPORTED`` kinds from a local folder or a Hub id.

        ``kwargs`` go to `from_pipeline`: ``height``, ``width``, the compile options
        (``compile=True``, ``compile_mode``, ``compile_backend``) and the family's own.
        """
        pipe = load_pipeline(path_or_id, cls.SUPPORTED, torch_dtype)
        if device is not None:
            pipe = pipe.to(device)
        return cls.from_pipeline(pipe, **kwargs)

    @classmethod
    def from_pipeline(cls: type[D], pipe: Any, height: int | None = None, width: int | None = None, **options: Any) -> D:
        """Wrap an existing pipeline (its modules are shared, not copied); ``options`` go to the constructor
        (``compile=True``, ``compile_mode=...``, ``compile_backend=...``: `constrained_diffusion.denoisers.compiled`)."""
        return cls(pipe, height, width, **options)  # type: ignore[call-arg]

    def _bound_copy(self: D) -> D:
        """A shallow copy for ``condition`` to fill: same modules, fresh NFE/NBE counters."""
        bound = object.__new__(type(self))
        bound.__dict__.update(self.__dict__)
        bound.nfe = bound.nbe = 0
        return bound
