r"""How much a sample depends on the batch it was drawn in, per solver, on the shipped MNIST DDPM.

Every sample's noise comes from its own seed, so the same digit drawn alone (batch 1) or with
others (batch ``B``) starts from the same ``x_T`` and meets the same constraint. The arithmetic
is still not the same: a convolution over a batch of 8 may take another algorithm (another
order of summation) than over a batch of 1, so each network output differs in its last bits.
Inexact Newton's finite difference divides such rounding by ``h' = h / max|e|`` and the inner
loop feeds it back, so its float32 result moves further than a solver's without a difference.

`batch_dependence` draws ``digits`` test digits (spread over the classes) with each method at
batch 1 and at batch ``batch`` and reports, per method, over the digits:

* ``max |Δpixel|``: the largest change of a pixel (images in ``[-1, 1]``) between the two runs;
* ``max |ΔPSNR|``: the largest change of a digit's PSNR against the clean digit, in dB.

It also reports inexact Newton's own sensitivity: the largest pixel change when the starting
noise of each digit (batch 1) is moved by ``1e-6`` times a standard normal draw — how far the
method carries a change of the size of rounding, whatever the batch.

One cheap way to shrink the finite-difference solver's batch dependence is measured beside it:
`PairedInexactNewton` evaluates both points of the difference, ``x_t`` and ``x_t + h' e``, in one
batched call (the network's ``x0`` at ``x_t`` is not reused), so the two outputs share their
summation order. A batched call counts once in the NFE, so its NFE is inexact Newton's, but each
such call carries twice the batch: it is kept here, as a measurement, not in the library.

Examples:
    >>> import constrained_diffusion as cd
    >>> rows, sensitivity = batch_dependence(cd.MNISTDenoiser.pretrained("ddpm"), digits=2, steps=2, inner_steps=1, batch=2,
    ...                                      methods=("identity",))
    >>> [r.method for r in rows], rows[0].max_pixel >= 0.0, sensitivity >= 0.0
    (['identity'], True, True)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.linalg.finite_difference import fd_jvp
from constrained_diffusion.solvers.inexact_newton import InexactNewton

METHODS = ("inexact-newton", "gradient-descent", "exact-jvp", "identity", "secant-newton", "dps")
"""The solvers with the paper's loop, and the ``dps`` recipe."""
PAIRED = "inexact-newton (paired forwards)"
"""The row of `PairedInexactNewton`."""
NOISE_SEED, STEP_SEED, PERTURBATION_SEED = 1_000_003, 500_009, 700_001
"""Digit ``i``'s streams: ``seed * NOISE_SEED + i`` for ``x_T``, ``+ STEP_SEED`` for the steps' noise, ``+ PERTURBATION_SEED`` for the 1e-6 perturbation."""


class PairedInexactNewton(InexactNewton):
    """Inexact Newton with both points of the difference in one batched call ``D(cat([x_t, x_t + h' e]))``.

    ``d = (D(x_t + h' e) - D(x_t)) / h'`` from a single call of batch ``2B`` instead of reusing
    the sampler's ``x0``: both outputs share the network's summation order. One call, one NFE, twice the work.
    Not registered: the sampler uses the instance as given.
    """

    name = "inexact-newton"  # its options are inexact Newton's (InexactNewtonConfig)

    @torch.no_grad()
    def direction(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor, x0: Tensor) -> Tensor:
        return fd_jvp(lambda x: denoiser(x, t), x_t, e, self.h, fx=None, dtype=denoiser.dtype)


@dataclass
class BatchRow:
    """One method's batch dependence (images in ``[-1, 1]``, PSNR in dB, seconds of all the digits)."""

    method: str
    batch: int
    max_pixel: float
    max_psnr: float
    mean_psnr: float
    nfe: int
    seconds_1: float
    seconds_batch: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _recipe(method: str, steps: int, inner_steps: int) -> Any:
    from constrained_diffusion.recipes import get
    from constrained_diffusion.recipes.overrides import paper_loop

    if method == "dps":
        return get("dps").with_config(steps=steps)
    return paper_loop("inexact-newton" if method == PAIRED else method).with_config(steps=steps, inner_steps=inner_steps)


def _draw(model: Denoiser, method: str, truth: Tensor, positions: Sequence[int], batch: int, steps: int, inner_steps: int,
          task: str, seed: int, perturb: float = 0.0) -> tuple[Tensor, int, float]:
    """The digits ``truth`` restored ``batch`` at a time: images ``(N, C, H, W)``, NFE of the first batch, seconds."""
    from constrained_diffusion.evaluation.image_tasks import make_problem

    recipe = _recipe(method, steps, inner_steps)
    out, nfe, seconds = [], 0, 0.0
    for start in range(0, truth.shape[0], batch):
        idx = list(range(start, min(truth.shape[0], start + batch)))
        pos = [positions[i] for i in idx]
        x_T = torch.cat([torch.randn(1, *model.sample_shape, generator=torch.Generator().manual_seed(seed * NOISE_SEED + p)) for p in pos])
        if perturb:
            x_T = x_T + perturb * torch.cat([torch.randn(1, *model.sample_shape,
                                                         generator=torch.Generator().manual_seed(seed * NOISE_SEED + PERTURBATION_SEED + p))
                                             for p in pos])
        sampler = recipe.sampler(model)
        if method == PAIRED:
            sampler.solver = PairedInexactNewton(h=sampler.solver.h)  # type: ignore[union-attr]
        problem = make_problem(task, truth[idx], [str(p) for p in pos], seed)
        constraint = recipe.constraint(problem.constraint, sampler.denoiser)  # type: ignore[arg-type]
        gens = [torch.Generator().manual_seed(seed * NOISE_SEED + STEP_SEED + p) for p in pos]
        begin = time.perf_counter()
        result = sampler.sample(constraint, x_T=x_T.to(model.device, model.dtype), generator=gens, progress=False)
        seconds += time.perf_counter() - begin
        nfe = nfe or result.nfe
        out.append(result.images.detach().float().cpu().clamp(-1, 1))
    return torch.cat(out), nfe, seconds


def batch_dependence(model: Denoiser, digits: int = 8, steps: int = 10, inner_steps: int = 3, batch: int = 8, task: str = "sr4",
                     seed: int = 0, methods: Sequence[str] = (*METHODS, PAIRED), perturbation: float = 1e-6,
                     log: Any = None) -> tuple[list[BatchRow], float]:
    """Per method, the largest change of a pixel and of a PSNR between batch 1 and batch ``batch`` on the same digits and seeds.

    Args:
        model: the denoiser (the shipped MNIST DDPM in the docs).
        digits: test digits, spread over the classes (``mnist("test")``, class-interleaved: the first ``digits``).
        steps: denoising steps.
        inner_steps: inner steps of the paper's loop (``dps`` takes its own single step).
        batch: the batch size compared with 1.
        task: an MNIST task of `constrained_diffusion.evaluation.image_tasks` (`task_names.MNIST_TASKS`);
            digit ``i``'s id is its test-set position.
        seed: the seed of every digit's streams.
        methods: names from `METHODS`, and `PAIRED`.
        perturbation: the size of the starting-noise change of the sensitivity figure (0: skip it).
        log: called with a line per finished method.

    Returns:
        ``(rows, sensitivity)``: a `BatchRow` per method, and inexact Newton's largest pixel change
        at batch 1 when every ``x_T`` moves by ``perturbation`` times a standard normal draw.

    Raises:
        ValueError: an unknown method or task, ``digits`` or ``batch`` below 1, ``digits`` above the test set.

    Warns:
        FutureWarning: ``task`` is ``box`` or ``free-form``, whose meaning changed in 0.2 (`task_names.renamed_task`).
    """
    _check_names(task, methods)
    truth = _test_digits(digits, batch).to(model.device)
    draw = _Draws(model, truth, list(range(digits)), steps, inner_steps, task, seed)
    rows = []
    alone: dict[str, Tensor] = {}
    for method in methods:
        row, alone[method] = _method_row(draw, method, batch)
        rows.append(row)
        if log is not None:
            log(f"{method}: max |Δpixel| {row.max_pixel:.3g}, max |ΔPSNR| {row.max_psnr:.3g} dB ({row.seconds_1 + row.seconds_batch:.1f} s)")
    return rows, _sensitivity(draw, alone.get("inexact-newton"), perturbation)


@dataclass(frozen=True)
class _Draws:
    """What every draw of one `batch_dependence` call shares: the model, the digits and the settings."""

    model: Denoiser
    truth: Tensor
    positions: list[int]
    steps: int
    inner_steps: int
    task: str
    seed: int

    def __call__(self, method: str, batch: int, perturb: float = 0.0) -> tuple[Tensor, int, float]:
        """`_draw` of ``method`` at ``batch`` on these digits and settings."""
        return _draw(self.model, method, self.truth, self.positions, batch, self.steps, self.inner_steps, self.task, self.seed,
                     perturb=perturb)


def _check_names(task: str, methods: Sequence[str]) -> None:
    """Raise `ValueError` on an unknown task (warning on a renamed one) or unknown methods."""
    from constrained_diffusion.evaluation.task_names import MNIST_TASKS, renamed_task

    if renamed_task(task, "task=") not in MNIST_TASKS:
        raise ValueError(f"task: unknown {task!r}; expected one of {list(MNIST_TASKS)}")

    unknown = [m for m in methods if m not in (*METHODS, PAIRED)]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; expected some of {[*METHODS, PAIRED]}")


def _test_digits(digits: int, batch: int) -> Tensor:
    """The first ``digits`` test digits, after checking ``digits`` against the test set and ``batch >= 1``."""
    from constrained_diffusion.data.mnist import mnist

    images, _ = mnist("test")
    if not 1 <= digits <= images.shape[0]:
        raise ValueError(f"digits must lie in [1, {images.shape[0]}], got {digits}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return images[:digits]


def _method_row(draw: _Draws, method: str, batch: int) -> tuple[BatchRow, Tensor]:
    """``method``'s draws at batch 1 and at ``batch`` compared, and its batch-1 images ``(N, C, H, W)``."""
    from constrained_diffusion.metrics.images import psnr

    one, nfe, s1 = draw(method, 1)
    many, _, sb = draw(method, batch)
    clean = draw.truth.float().cpu()
    p1, pb = psnr(one, clean), psnr(many, clean)
    return BatchRow(method, batch, float((one - many).abs().max()), float((p1 - pb).abs().max()), float(p1.mean()), nfe, s1, sb), one


def _sensitivity(draw: _Draws, base: Tensor | None, perturbation: float) -> float:
    """Inexact Newton's largest pixel change at batch 1 when ``x_T`` moves by ``perturbation`` (0.0 when it is 0)."""
    if not perturbation:
        return 0.0
    if base is None:
        base, _, _ = draw("inexact-newton", 1)
    moved, _, _ = draw("inexact-newton", 1, perturb=perturbation)
    return float((moved - base).abs().max())


def batch_table(rows: Sequence[BatchRow]) -> str:
    """A markdown table of `batch_dependence`'s rows."""
    from constrained_diffusion.utils.tables import format_table

    return format_table(["method", "batch", "max abs Δpixel", "max abs ΔPSNR dB", "mean PSNR dB", "NFE per batch", "s (batch 1)", "s (batch B)"],
                        [[r.method, f"1 vs {r.batch}", f"{r.max_pixel:.3g}", f"{r.max_psnr:.3g}", f"{r.mean_psnr:.2f}", str(r.nfe),
                          f"{r.seconds_1:.1f}", f"{r.seconds_batch:.1f}"] for r in rows])
