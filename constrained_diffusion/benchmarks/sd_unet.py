"""Solver cost on the full Stable Diffusion 1.x UNet: seconds per inner step and peak memory.

The UNet is built from a configuration (Stable Diffusion 1.5's by default: 859.5M parameters)
with random weights (no download: a forward's arithmetic does not depend on them) and made an
epsilon-prediction `NetworkDenoiser` under SD's scaled-linear schedule, with a fixed random
text conditioning ``(1, 77, cross_attention_dim)`` bound to the UNet's forward. For plain
inference and each solver it runs one denoising step with ``inner_steps`` constraint
iterations on a latent inpainting problem. Each measurement runs in a fresh process, so the
peaks do not bleed into one another, and times the second of two identical runs, so
first-call costs (cuDNN's kernel selection) stay out; on CUDA the peak is the allocator's, on
CPU the sampled resident set size. A solver that cannot run on this model or dtype is
reported as a failure, not raised.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from constrained_diffusion.benchmarks.architectures import SD15_UNET, build_denoiser, parameter_count
from constrained_diffusion.constraints import Inpainting
from constrained_diffusion.denoisers import NetworkDenoiser, VPSchedule
from constrained_diffusion.metrics.memory import PeakMemory
from constrained_diffusion.models.loading import parse_dtype
from constrained_diffusion.sampling import ConstrainedSampler


@dataclass
class SDStepCosts:
    """What `measure_sd_step_costs` measured, per row (``"plain"`` and each solver).

    Attributes:
        parameters: the UNet's parameter count.
        seconds: seconds of the timed step.
        nfe: network forwards of the timed step.
        nbe: network backwards of the timed step.
        peak_mb: peak memory of the step above the level at its start (the model's own footprint).
        failures: a solver that could not run, and the first line of its error.
    """

    parameters: int
    seconds: dict[str, float] = field(default_factory=dict)
    nfe: dict[str, int] = field(default_factory=dict)
    nbe: dict[str, int] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def seconds_per_inner_step(self, solver: str, inner_steps: int) -> float:
        """``(step seconds - one plain forward) / inner steps``."""
        return (self.seconds[solver] - self.seconds["plain"]) / inner_steps


def _bind_conditioning(cond: Tensor) -> Callable[..., tuple[tuple[Any, ...], dict[str, Any]]]:
    """A forward pre-hook that passes ``encoder_hidden_states=cond`` (expanded to the batch)."""

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return args, {**kwargs, "encoder_hidden_states": cond.expand(args[0].shape[0], -1, -1)}

    return hook


def conditioned_unet_denoiser(config: dict[str, Any], size: int, device: str = "cpu",
                              dtype: torch.dtype | str = torch.float32) -> NetworkDenoiser:
    """A random-weight ``UNet2DConditionModel`` of ``config`` as an epsilon `NetworkDenoiser`.

    The weights (seed 0) and a text conditioning ``(1, 77, cross_attention_dim)`` (seed 1) are
    random; the conditioning is bound to the UNet's forward, so the UNet itself is the network
    (``f(x_t, t)``) and the denoiser's device and dtype are the UNet's. Samples are latents
    ``(in_channels, size, size)``; the schedule is SD's scaled-linear betas, leading spacing.
    """
    from diffusers import UNet2DConditionModel

    torch_dtype = parse_dtype(dtype)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config)
    cond = torch.randn(1, 77, config["cross_attention_dim"], generator=torch.Generator().manual_seed(1))
    unet = unet.to(device, torch_dtype).eval().requires_grad_(False)
    unet.register_forward_pre_hook(_bind_conditioning(cond.to(device, torch_dtype)), with_kwargs=True)
    return NetworkDenoiser(unet, VPSchedule.scaled_linear(spacing="leading", offset=1),
                           (config.get("in_channels", 4), size, size), prediction="epsilon")


def measure_step(name: str, size: int, inner_steps: int, device: str, dtype: str,
                 config: dict[str, Any], arch: str = "sd15", depth: int | None = None,
                 tiny: bool = False) -> dict[str, float]:
    """One row, meant for a fresh process: build, warm up, then time and measure one step.

    ``name`` is ``"plain"`` (no inner steps) or a solver. ``arch="sd15"`` times the UNet of
    ``config`` as a `NetworkDenoiser`; ``"sd3"`` / ``"flux"`` the transformer adapters of
    `constrained_diffusion.benchmarks.architectures.build_denoiser` (``depth``, ``tiny``), with
    their text conditioning. Returns ``seconds``, ``nfe``, ``nbe``, ``peak_mb`` and ``params``.
    """
    if arch == "sd15":
        model = conditioned_unet_denoiser(config, size, device, dtype)
    else:
        model = build_denoiser(arch, size, device, dtype, depth=depth, tiny=tiny)
    channels = model.sample_shape[0]
    g = torch.Generator().manual_seed(2)
    x_T = torch.randn(1, channels, size, size, generator=g).to(device, model.dtype)
    y = torch.randn(1, channels, size, size, generator=g).to(device, model.dtype)
    mask = torch.zeros(1, 1, size, size, device=device, dtype=model.dtype)
    mask[..., : size // 2] = 1
    constraint = Inpainting(y, mask)
    with torch.no_grad():
        model(x_T, model.timesteps(1)[0])  # warm-up
    k = 0 if name == "plain" else inner_steps
    sampler = ConstrainedSampler(model, "inexact-newton" if name == "plain" else name, steps=1, inner_steps=k)
    sampler.sample(constraint, x_T=x_T, progress=False)  # warm-up: first-call kernel selection, allocator growth
    with PeakMemory(device) as peak:
        result = sampler.sample(constraint, x_T=x_T, progress=False)
    network = getattr(model, "network", None)
    params = sum(p.numel() for p in network.parameters()) if isinstance(network, nn.Module) else parameter_count(model)
    return {"seconds": result.seconds, "nfe": result.nfe, "nbe": result.nbe, "peak_mb": peak.megabytes,
            "params": float(params)}


def measure_sd_step_costs(solvers: Sequence[str], size: int = 64, inner_steps: int = 2, device: str = "cpu",
                          dtype: str = "float32", unet_config: dict[str, Any] | None = None,
                          log: Callable[[str], object] = print, arch: str = "sd15", depth: int | None = None,
                          tiny: bool = False, processes: bool = True) -> SDStepCosts:
    """Measure plain inference and each solver, each in a fresh (spawned) process.

    Args:
        solvers: registered solver names.
        size: the latent side (64: 512x512 images).
        inner_steps: constraint iterations of the timed step.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        unet_config: the UNet's configuration (default `SD15_UNET`; ``arch="sd15"`` only).
        log: called with one line per finished row.
        arch: ``"sd15"`` (the UNet of ``unet_config``), ``"sd3"`` or ``"flux"`` (their public
            configurations, `constrained_diffusion.benchmarks.architectures`).
        depth: a transformer's number of blocks (``None``: the full model).
        tiny: tiny widths of ``arch`` (a smoke test).
        processes: one fresh process per row (``False``: all in this process, whose memory
            peaks then bleed into one another; for smoke tests).

    Raises:
        Exception: whatever plain inference raised (a solver's failure is recorded instead).
    """
    config = SD15_UNET if unet_config is None else unet_config
    ctx = mp.get_context("spawn")
    costs = SDStepCosts(parameters=0)
    for name in ["plain", *solvers]:
        with ctx.Pool(1) if processes else contextlib.nullcontext() as pool:
            try:
                row_args = (name, size, inner_steps, device, dtype, config, arch, depth, tiny)
                row = pool.apply(measure_step, row_args) if pool is not None else measure_step(*row_args)
            except Exception as exc:  # a solver this model or dtype cannot run is reported, not fatal
                if name == "plain":
                    raise
                costs.failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:100]
                log(f"{name}: {costs.failures[name]}")
                continue
        costs.parameters = int(row["params"])
        costs.seconds[name], costs.nfe[name], costs.nbe[name] = row["seconds"], int(row["nfe"]), int(row["nbe"])
        costs.peak_mb[name] = row["peak_mb"]
        log(f"{name}: {row}")
    return costs
