r"""The secant solver against inexact Newton, exact Newton and the identity on the MNIST models.

For each shipped model (``"ddpm"``: `mnist-ddpm`, ``"flow"``: `mnist-flow`) and each MNIST task
(`constrained_diffusion.evaluation.image_tasks`; by default ``top-half``, ``mnist-free-form``, ``sr4``), ``digits`` test digits
spread over the classes are restored by the paper's inner loop (dynamic step, ``step_scale = (0.5, 0.1)``)
with each direction:

* ``"secant-newton"`` — `SecantNewton()` (defaults: ``J e`` from the pairs, ``tol = 0.5``);
* ``"inexact-newton"`` — `InexactNewton()` (one finite difference per inner step);
* ``"exact-newton"`` — `ExactNewton(iterations=3)`: GMRES on finite-difference JVPs, at most three
  JVPs per inner step (the default ten would cost ``1 + 11 K`` forwards a step);
* ``"identity"`` — `IdentityDirection()` (no Jacobian at all);

and ``"unconstrained"`` (``K = 0``) as the reference of the residual. Two regimes:

* ``"equal steps"`` — every method ``steps`` x ``inner_steps``;
* ``"equal NFE"`` — each method gets the number of steps (``K`` kept) whose worst-case cost
  ``steps (1 + K + j K)`` (``j`` JVPs per inner step: 1, 3, 0) does not exceed the NFE that
  secant Newton actually spent at equal steps on the same model and task; the NFE spent is
  reported.

Per digit: PSNR and SSIM against the clean digit (`constrained_diffusion.metrics.images`),
whether the shipped classifier reads the right label, and the final constraint residual; per
run: NFE (a batched forward counts once; all digits are one batch) and seconds. Digit ``i``'s
initial noise comes from seed ``seed * 1_000_003 + index``, the same for every method. Records
(one per model, task, method and regime) are appended to a JSONL file as they are made and a
rerun resumes from it (records written before 0.2, whose ``box`` was ``top-half``, are reused
under the new name: `constrained_diffusion.evaluation.task_names.find_record`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.utils.jsonl_store import JsonlStore

MODELS = {"ddpm": "mnist-ddpm", "flow": "mnist-flow"}
"""Short name -> shipped model."""
METHODS = ("secant-newton", "inexact-newton", "exact-newton", "identity")
"""The directions compared (the unconstrained run is the residual's reference)."""
JVPS_PER_INNER = {"secant-newton": 1, "inexact-newton": 1, "exact-newton": 3, "identity": 0}
"""Worst-case Jacobian-vector products per inner step (sets the equal-NFE steps)."""
REGIMES = ("equal steps", "equal NFE")
KEY_FIELDS = ("model", "task", "method", "regime", "digits", "steps", "inner_steps", "seed", "task_names")
"""What identifies a record (``task_names``: ``image_tasks`` since 0.2, absent on older records; `task_names.NAMES_FIELD`)."""
TASKS = ("top-half", "mnist-free-form", "sr4")
"""The default tasks (`image_tasks` names; before 0.2 ``box``, ``free-form``, ``sr4``)."""


def spread_indices(n: int, total: int = 500) -> list[int]:
    """``n`` test-set indices spread evenly over ``total`` digits (the test set is sorted by label).

    Raises:
        ValueError: ``n`` outside ``[1, total]``.

    Examples:
        >>> spread_indices(3)
        [0, 250, 499]
    """
    if not 1 <= n <= total:
        raise ValueError(f"digits must lie in [1, {total}], got {n}")
    return [round(i * (total - 1) / max(n - 1, 1)) for i in range(n)]


def make_solver(method: str) -> Any:
    """The solver instance of ``method`` (one of `METHODS`).

    Raises:
        ValueError: an unknown method.
    """
    from constrained_diffusion.solvers import ExactNewton, IdentityDirection, InexactNewton, SecantNewton

    makers: dict[str, Callable[[], Any]] = {"secant-newton": SecantNewton, "inexact-newton": InexactNewton,
                                            "exact-newton": lambda: ExactNewton(iterations=3), "identity": IdentityDirection}
    if method not in makers:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return makers[method]()


def equal_nfe_steps(method: str, budget: int, inner_steps: int) -> int:
    """Most steps whose worst-case NFE ``steps (1 + K + j K)`` fits in ``budget`` (at least 1).

    Examples:
        >>> equal_nfe_steps("inexact-newton", 150, 5), equal_nfe_steps("identity", 150, 5)
        (13, 25)
    """
    per_step = 1 + inner_steps + JVPS_PER_INNER[method] * inner_steps
    return max(1, budget // per_step)


def run_method(model: Denoiser, task: str, method: str, images: Tensor, labels: Tensor, indices: Sequence[int], steps: int,
               inner_steps: int, seed: int = 0, classifier: Any = None) -> dict[str, Any]:
    """One run of ``method`` (or ``"unconstrained"``) on a batch of digits; the record's measured fields.

    Args:
        model: the denoiser.
        task: an `image_tasks` task of `task_names.MNIST_TASKS` (digit ``i``'s id is its test-set index).
        method: one of `METHODS` or ``"unconstrained"``.
        images: clean digits ``(B, 1, 32, 32)`` in ``[-1, 1]``.
        labels: their labels ``(B,)``.
        indices: their positions in the test set (seeds and free-form masks).
        steps: denoising steps.
        inner_steps: ``K`` (ignored for ``"unconstrained"``).
        seed: the run's seed.
        classifier: the label reader (default: the shipped classifier).

    Returns:
        ``psnr``, ``ssim``, ``correct``, ``residual`` (lists, per digit), ``nfe``, ``seconds`` and,
        for secant Newton, ``fd_fraction`` (the share of its calls that paid a finite difference).
    """
    from constrained_diffusion.evaluation.digits import read_digits
    from constrained_diffusion.evaluation.image_tasks import make_problem
    from constrained_diffusion.metrics.images import psnr, ssim
    from constrained_diffusion.sampling.engine import ConstrainedSampler
    from constrained_diffusion.sampling.noise import randn

    images = images.float().cpu()
    clean = images.to(model.device, model.dtype)
    constraint = make_problem(task, clean, [str(i) for i in indices], seed).constraint
    gens = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in indices]
    x_T = randn(len(indices), model.sample_shape, gens, model.device, model.dtype)
    solver = make_solver("identity" if method == "unconstrained" else method)
    K = 0 if method == "unconstrained" else inner_steps
    sampler = ConstrainedSampler(model, solver, steps=steps, inner_steps=K)
    result = sampler.sample(constraint, x_T=x_T, progress=False)
    out = result.images.float().cpu().clamp(-1, 1)
    record: dict[str, Any] = {
        "psnr": [float(v) for v in psnr(out, images)], "ssim": [float(v) for v in ssim(out, images)],
        "correct": [bool(v) for v in (read_digits(out, classifier) == labels.cpu())],
        "residual": [float(v) for v in result.final_residual.float().cpu()],  # type: ignore[union-attr]
        "nfe": int(result.nfe), "seconds": float(result.seconds),
    }
    if method == "secant-newton":
        record["fd_fraction"] = solver.finite_differences / max(solver.calls, 1)
    return record


@dataclass(frozen=True)
class SecantRow:
    """One (model, task, regime, method) cell of the table.

    Attributes:
        model, task, regime, method: what was run.
        steps: denoising steps it ran.
        nfe: forwards it spent (the batch).
        psnr, ssim: ``(mean, standard error)`` over the digits.
        accuracy: share of digits the classifier reads correctly.
        residual: median final residual over the digits.
        residual_cut: median over the digits of (unconstrained residual / this residual).
        psnr_vs_secant: paired PSNR difference ``this - secant`` at the same regime, ``(mean, se)``.
        seconds: wall-clock seconds of the run.
        fd_fraction: share of secant calls that paid a finite difference (``None`` otherwise).
        digits: how many digits.
    """

    model: str
    task: str
    regime: str
    method: str
    steps: int
    nfe: int
    psnr: tuple[float, float]
    ssim: tuple[float, float]
    accuracy: float
    residual: float
    residual_cut: float
    psnr_vs_secant: tuple[float, float]
    seconds: float
    fd_fraction: float | None
    digits: int


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, standard error of the mean)``; the error is 0 for fewer than two values.

    Examples:
        >>> mean_se([1.0, 2.0, 3.0])
        (2.0, 0.5773502691896258)
    """
    m = statistics.fmean(values)
    return m, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)


def secant_rows(models: Sequence[str] = ("ddpm", "flow"), tasks: Sequence[str] = TASKS,
                digits: int = 16, steps: int = 20, inner_steps: int = 5, seed: int = 0,
                methods: Sequence[str] = METHODS, results: str | Path | None = None, model_names: dict[str, str] | None = None,
                log: Callable[[str], None] | None = None,
                loaded: dict[str, Denoiser] | None = None) -> list[SecantRow]:
    """Run (or resume) the comparison and summarise it, model by model, task by task.

    Args:
        models: keys of `MODELS`.
        tasks: `image_tasks` tasks of `task_names.MNIST_TASKS` (``box`` is the centred box, warned once).
        digits: test digits spread over the classes (``1..500``).
        steps: denoising steps at equal steps.
        inner_steps: ``K`` for every method.
        seed: the run's seed.
        methods: subset of `METHODS`; ``"secant-newton"`` is always run (it sets the NFE budget).
        results: JSONL file of records (resumed), or ``None`` to keep nothing.
        model_names: a label per model stored in the records (e.g. with the weights' digest).
        log: called with one line per finished run.
        loaded: already loaded models by short name (default: `constrained_diffusion.models.load`).

    Returns:
        One `SecantRow` per model, task, regime and method (secant first; its equal-NFE row is
        its equal-steps run).

    Raises:
        ValueError: an unknown model, task or method, or ``digits`` outside ``[1, 500]``.
    """
    from constrained_diffusion.data.mnist import mnist

    _check_names(models, tasks, methods)
    order = ["secant-newton", *[m for m in METHODS if m in methods and m != "secant-newton"]]
    indices = spread_indices(digits)
    all_images, all_labels = mnist("held-out")
    store = JsonlStore(results, KEY_FIELDS) if results is not None else None
    runs = _Runs(all_images[indices], all_labels[indices], indices, digits, steps, inner_steps, seed, store, dict(loaded or {}),
                 model_names, log)
    return [row for model_key in models for task in tasks for row in _task_rows(runs, model_key, task, order)]


@dataclass
class _Runs:
    """What every run of one `secant_rows` call shares: the digits, the settings, the store and the loaded models."""

    images: Tensor
    labels: Tensor
    indices: list[int]
    digits: int
    steps: int
    inner_steps: int
    seed: int
    store: JsonlStore | None
    loaded: dict[str, Denoiser]
    model_names: dict[str, str] | None
    log: Callable[[str], None] | None


def _check_names(models: Sequence[str], tasks: Sequence[str], methods: Sequence[str]) -> None:
    """Raise `ValueError` naming every unknown model, task or method."""
    from constrained_diffusion.evaluation.task_names import MNIST_TASKS, renamed_task

    bad = [m for m in models if m not in MODELS] + [t for t in tasks if renamed_task(t, "tasks=") not in MNIST_TASKS]
    bad += [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown model, task or method {bad}; models {sorted(MODELS)}, tasks {list(MNIST_TASKS)}, methods {list(METHODS)}")


def _model(runs: _Runs, model_key: str) -> Denoiser:
    """The model of ``model_key``, loaded on first use and kept in ``runs.loaded``."""
    if model_key not in runs.loaded:
        from constrained_diffusion.models import load

        runs.loaded[model_key] = load(MODELS[model_key])
    return runs.loaded[model_key]


def _record(runs: _Runs, model_key: str, task: str, method: str, regime: str, run_steps: int) -> dict[str, Any]:
    """One run's record: found in the store, or run now, appended to the store and logged."""
    from constrained_diffusion.evaluation.task_names import find_record, stored_key

    key = stored_key({"model": model_key, "task": task, "method": method, "regime": regime, "digits": runs.digits, "steps": runs.steps,
                      "inner_steps": runs.inner_steps, "seed": runs.seed})
    found = find_record(runs.store, key) if runs.store is not None else None
    if found is not None:
        return found
    model = _model(runs, model_key)
    rec = {**key, "model_name": (runs.model_names or {}).get(model_key, MODELS[model_key]), "run_steps": run_steps,
           **run_method(model, task, method, runs.images, runs.labels, runs.indices, run_steps, runs.inner_steps, runs.seed)}
    if runs.store is not None:
        runs.store.append(rec)
    if runs.log is not None:
        runs.log(f"{model_key} {task} {regime} {method}: {run_steps} steps, NFE {rec['nfe']}, "
                 f"PSNR {statistics.fmean(rec['psnr']):.2f}, {rec['seconds']:.0f} s")
    return rec


def _task_rows(runs: _Runs, model_key: str, task: str, order: Sequence[str]) -> list[SecantRow]:
    """One (model, task)'s rows: the unconstrained and secant runs first, then each regime's methods in ``order``."""
    free = _record(runs, model_key, task, "unconstrained", "equal steps", runs.steps)
    secant = _record(runs, model_key, task, "secant-newton", "equal steps", runs.steps)
    rows: list[SecantRow] = []
    for regime in REGIMES:
        for method in order:
            if method == "secant-newton":
                rec = secant
            else:
                run_steps = runs.steps if regime == "equal steps" else equal_nfe_steps(method, secant["nfe"], runs.inner_steps)
                rec = _record(runs, model_key, task, method, regime, run_steps)
            rows.append(_row(model_key, task, regime, method, rec, secant, free))
    return rows


def _row(model: str, task: str, regime: str, method: str, rec: dict[str, Any], secant: dict[str, Any],
         free: dict[str, Any]) -> SecantRow:
    cut = [f / r if r > 0 else math.inf for f, r in zip(free["residual"], rec["residual"])]
    return SecantRow(model=model, task=task, regime=regime, method=method, steps=int(rec["run_steps"]), nfe=int(rec["nfe"]),
                     psnr=mean_se(rec["psnr"]), ssim=mean_se(rec["ssim"]), accuracy=statistics.fmean(map(float, rec["correct"])),
                     residual=statistics.median(rec["residual"]), residual_cut=statistics.median(cut),
                     psnr_vs_secant=mean_se([a - b for a, b in zip(rec["psnr"], secant["psnr"])]),
                     seconds=float(rec["seconds"]), fd_fraction=rec.get("fd_fraction"), digits=len(rec["psnr"]))


def secant_table(rows: Sequence[SecantRow]) -> str:
    """The markdown table of `secant_rows` (PSNR/SSIM: mean ± standard error; residual: median)."""
    from constrained_diffusion.utils.tables import format_table

    base = {(r.model, r.task): r.nfe for r in rows if r.method == "inexact-newton" and r.regime == "equal steps"}
    out = []
    for r in rows:
        ratio = f"{r.nfe / base[(r.model, r.task)]:.2f}" if (r.model, r.task) in base else "-"
        diff = "—" if r.method == "secant-newton" else f"{r.psnr_vs_secant[0]:+.2f} ± {r.psnr_vs_secant[1]:.2f}"
        fd = f" (FD {r.fd_fraction:.0%})" if r.fd_fraction is not None else ""
        out.append([r.model, r.task, r.regime, r.method + fd, str(r.steps), str(r.nfe), ratio,
                    f"{r.psnr[0]:.2f} ± {r.psnr[1]:.2f}", diff, f"{r.ssim[0]:.3f} ± {r.ssim[1]:.3f}", f"{r.accuracy:.0%}",
                    f"{r.residual:.3g}", f"{r.residual_cut:.1f}x", f"{r.seconds:.0f}"])
    return format_table(["model", "task", "regime", "method", "steps", "NFE", "NFE / inexact", "PSNR (dB)", "PSNR − secant",
                         "SSIM", "label acc.", "residual (median)", "residual cut (median)", "seconds"], out)


def secant_summary(rows: Sequence[SecantRow]) -> str:
    """One paragraph: secant's NFE ratio and paired PSNR difference against inexact Newton, per regime."""
    lines = []
    for regime in REGIMES:
        pairs = [r for r in rows if r.regime == regime and r.method == "inexact-newton"]
        if not pairs:
            continue
        diffs = [-r.psnr_vs_secant[0] for r in pairs]
        lines.append(f"{regime}: secant − inexact PSNR per (model, task) "
                     + ", ".join(f"{r.model}/{r.task} {d:+.2f}" for r, d in zip(pairs, diffs)))
    sec = [r for r in rows if r.method == "secant-newton" and r.regime == "equal steps"]
    base = {(r.model, r.task): r.nfe for r in rows if r.method == "inexact-newton" and r.regime == "equal steps"}
    ratios = [r.nfe / base[(r.model, r.task)] for r in sec if (r.model, r.task) in base]
    if ratios:
        lines.append(f"secant NFE / inexact NFE at equal steps: {min(ratios):.2f}–{max(ratios):.2f}; "
                     f"median residual cut against unconstrained: {min(r.residual_cut for r in sec):.1f}x–"
                     f"{max(r.residual_cut for r in sec):.1f}x")
    return "\n".join(f"- {line}" for line in lines)
