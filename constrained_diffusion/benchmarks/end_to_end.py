"""Whole samples on the Stable Diffusion 1.5 architecture: seconds, NFE and peak memory per method.

`build_denoiser` gives SD 1.5's UNet and VAE with random weights (the arithmetic of a real
checkpoint). Each method samples the same problem on a random 512x512 image (``size = 64``
latents) from the same noise, from the constraint's construction (encoding the known pixels)
to the decoded images:

* ``plain`` — the paper's inpainting recipe with no inner steps: 20 steps, 20 forwards;
* ``paper-inpainting`` — the recipe (`cd.recipes.get`): 20 steps x 5 inner steps of inexact
  Newton on the latent mask, 220 forwards;
* ``paper-sr8`` — the recipe: x8 super-resolution through the decoder, 20 x 10, 420 forwards;
* ``gradient-descent`` / ``exact-jvp`` — the paper-inpainting configuration with that solver
  instead: the same 20 x 5 steps.

Every method runs once untimed (compilation, cuDNN's kernel choice, allocator growth), then
``runs`` times, timed with the device synchronised; min and median seconds, NFE, NBE and the
peak memory above the level before the timed runs (`PeakMemory`: CUDA's allocator, or the
sampled resident set size on a CPU). In float16 and bfloat16 the finite difference takes the
precision-aware step (``h=None``, `default_h`) instead of the recipes' float32 ``h = 0.005``.
A method that fails is a row with its error, not an exception.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from constrained_diffusion.benchmarks.architectures import build_denoiser
from constrained_diffusion.constraints import Inpainting, SuperResolution
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.metrics.memory import PeakMemory
from constrained_diffusion.sampling.result import SampleResult

METHODS: tuple[str, ...] = ("plain", "paper-inpainting", "paper-sr8", "gradient-descent", "exact-jvp")
MODES: tuple[str, ...] = ("eager", "compiled")


@dataclass
class EndToEndRow:
    """One method in one setting.

    Attributes:
        method: one of `METHODS`.
        dtype: ``"float16"``, ``"bfloat16"`` or ``"float32"``.
        mode: ``"eager"`` or ``"compiled"``.
        batch: samples per call.
        seconds: the timed runs, each a whole batch.
        nfe: network forwards of one run.
        nbe: network backwards of one run.
        peak_mb: peak memory above the level before the timed runs.
        failure: the first line of the error of a method that could not run (else ``None``).
    """

    method: str
    dtype: str
    mode: str
    batch: int
    seconds: list[float] = field(default_factory=list)
    nfe: int = 0
    nbe: int = 0
    peak_mb: float = float("nan")
    failure: str | None = None

    @property
    def min_seconds(self) -> float:
        """The fastest run."""
        return min(self.seconds)

    @property
    def median_seconds(self) -> float:
        """The median run."""
        return statistics.median(self.seconds)


def method_run(method: str, den: Denoiser, steps: int, batch: int, precision_aware: bool,
               inner_steps: int | None = None) -> Callable[[], SampleResult]:
    """A zero-argument callable that draws one batch of ``method`` on ``den`` (see the module docstring).

    ``inner_steps`` replaces the recipe's (5 for paper-inpainting) for every method but ``plain``
    (a smoke test's shortcut; ``None`` keeps the recipe's).

    Raises:
        ValueError: an unknown ``method``.
    """
    from constrained_diffusion import recipes

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    recipe = recipes.get("paper-sr8" if method == "paper-sr8" else "paper-inpainting")
    overrides: dict[str, Any] = {"steps": steps}
    if method == "plain":
        overrides["inner_steps"] = 0
    elif method in ("gradient-descent", "exact-jvp"):
        overrides["solver"] = {"name": method}
    elif precision_aware:
        overrides["solver"] = {"name": "inexact-newton", "h": None}
    if inner_steps is not None and method != "plain":
        overrides["inner_steps"] = inner_steps
    sampler = recipe.sampler(den, **overrides)
    g = torch.Generator().manual_seed(0)
    side = den.sample_shape[-1] * den.codec.factor  # type: ignore[union-attr]
    image = (torch.rand(batch, 3, side, side, generator=g) * 2 - 1).to(den.device)
    x_T = torch.randn(batch, *den.sample_shape, generator=g).to(den.device, den.dtype)
    if method == "paper-sr8":
        pixel = SuperResolution(torch.nn.functional.avg_pool2d(image, 8), 8)
    else:
        mask = torch.zeros(batch, 1, side, side, device=den.device)
        mask[..., : side // 2] = 1
        pixel = Inpainting(image, mask)

    def run() -> SampleResult:
        constraint = recipe.constraint(pixel, sampler.denoiser)
        return sampler.sample(constraint, x_T=x_T, generator=torch.Generator().manual_seed(1), progress=False)

    return run


def time_runs(run: Callable[[], SampleResult], device: str, runs: int,
              warmup: Callable[[], object] | None = None) -> tuple[list[float], SampleResult, float]:
    """Warm up once (``warmup``, default ``run`` itself), then time ``runs`` calls; returns ``(seconds, last result, peak MB)``.

    A cheaper ``warmup`` (the same method with fewer steps: the same shapes, so the same compiled
    graph and kernel choices) saves a whole untimed sample.
    """
    (warmup or run)()
    seconds, result = [], None
    with PeakMemory(device) as peak:
        for _ in range(runs):
            _synchronize(device)
            start = time.perf_counter()
            result = run()
            _synchronize(device)
            seconds.append(time.perf_counter() - start)
    assert result is not None
    return seconds, result, peak.megabytes


def _synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_end_to_end(methods: Sequence[str] = METHODS, dtypes: Sequence[str] = ("float16", "bfloat16"),
                       modes: Sequence[str] = MODES, batches: Sequence[int] = (1,), size: int = 64, steps: int = 20,
                       runs: int = 5, device: str = "cpu", tiny: bool = False, compile_mode: str | None = "reduce-overhead",
                       compile_backend: str = "inductor", log: Callable[[str], object] = print) -> list[EndToEndRow]:
    """Every method x dtype x mode x batch; one model per dtype and mode (in this process).

    Args:
        methods: a subset of `METHODS`.
        dtypes: the networks' dtypes.
        modes: ``"eager"`` and/or ``"compiled"`` (`constrained_diffusion.denoisers.compiled`).
        batches: batch sizes (seconds per image is a row's time over its batch).
        size: latent side (64: 512x512 images).
        steps: denoising steps (the recipes': 20).
        runs: timed runs per row (after one warm-up run).
        device: ``"cpu"`` or ``"cuda[:N]"``.
        tiny: tiny widths (a smoke test).
        compile_mode: ``torch.compile`` mode of the compiled rows.
        compile_backend: ``torch.compile`` backend of the compiled rows.
        log: called with one line per finished row.
    """
    rows: list[EndToEndRow] = []
    for dtype in dtypes:
        for mode in modes:
            options = {"compile": True, "compile_mode": compile_mode, "compile_backend": compile_backend} if mode == "compiled" else {}
            den = build_denoiser("sd15", size, device, dtype, tiny=tiny, **options)
            for batch in batches:
                for method in methods:
                    row = EndToEndRow(method, dtype, mode, batch)
                    try:
                        run = method_run(method, den, steps, batch, precision_aware=dtype != "float32")
                        row.seconds, result, row.peak_mb = time_runs(run, device, runs)
                        row.nfe, row.nbe = result.nfe, result.nbe
                    except Exception as exc:  # a method this model, dtype or mode cannot run is a row, not fatal
                        row.failure = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:100]
                    rows.append(row)
                    log(f"{method} {dtype} {mode} batch {batch}: " + (row.failure or f"median {row.median_seconds:.3f} s, "
                                                                     f"NFE {row.nfe}, peak {row.peak_mb:.0f} MB"))
            del den
            if torch.device(device).type == "cuda":
                torch.cuda.empty_cache()
    return rows
