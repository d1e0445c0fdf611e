"""Deprecated since 0.2 (goes in 0.3): the loop ``compare`` ran before it became a configuration of the harness.

Use `constrained_diffusion.evaluation.comparison.Comparison`, which reproduces these records
digit for digit (same noise, masks and batches) as harness records, and
`constrained_diffusion.utils.precision.precision_context`.

Run the MNIST solver comparison and keep every finished batch on disk.

Each record is one batch of test digits for one (settings, model, task, solver, budget); it is appended
to a JSON-lines file as soon as it is done, and a rerun skips the records already there — an
interrupted evaluation resumes with nothing lost or computed twice. `summarise` averages
the records per row, weighting by batch size.

Budgets: ``"equal-steps"`` runs every solver with the same steps and inner steps;
``"equal-time"`` gives each solver the number of denoising steps that makes its seconds per
sample match InexactNewton's equal-steps figure (estimated from its own equal-steps run).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from constrained_diffusion.denoisers import Denoiser
from constrained_diffusion.evaluation.digits import read_digits
from constrained_diffusion.evaluation.tasks import Task, make_constraint
from constrained_diffusion.metrics.images import psnr, ssim
from constrained_diffusion.metrics.memory import PeakMemory
from constrained_diffusion.sampling import ConstrainedSampler, randn
from constrained_diffusion.utils.jsonl_store import JsonlStore
from constrained_diffusion.utils.precision import PRECISIONS as PRECISIONS  # re-exported for the old callers
from constrained_diffusion.utils.precision import precision_context as _precision_context

warnings.warn("constrained_diffusion.evaluation.runner is deprecated since 0.2 and goes in 0.3: compare runs on the harness "
              "(constrained_diffusion.evaluation.comparison.Comparison)", DeprecationWarning, stacklevel=2)

KEY_FIELDS = ("setting", "model", "weights", "task", "solver", "budget", "start")
"""What identifies a record; ``weights`` is a digest of the model's weight file (empty if unknown)."""


@dataclass
class Settings:
    """What every row shares. Records carry `tag()`, so a file can hold several settings."""

    steps: int = 20
    inner_steps: int = 5
    batch_size: int = 100
    limit: int = 500
    seed: int = 0
    device: str = "cpu"
    precision: str = "float32"
    """``"float32"`` (the device's default float32 arithmetic: TF32 convolutions on recent
    NVIDIA GPUs), ``"tf32-emulated"`` (the caller runs the models under
    `constrained_diffusion.utils.precision.emulate_tf32`) or ``"no-tf32"`` (under
    `constrained_diffusion.utils.precision.tf32_disabled`). Recorded here, not applied: see
    `precision_context`."""

    def tag(self) -> str:
        """Identifies the settings that change a record (``limit`` only selects batches).

        A device other than the CPU and a precision other than float32 are part of the tag,
        so the timings of two machines never mix in one row (CPU float32 records keep the tag
        they had before devices were recorded).
        """
        tag = f"steps={self.steps},inner={self.inner_steps},batch={self.batch_size},seed={self.seed}"
        if self.device != "cpu":
            tag += f",device={self.device}"
        if self.precision != "float32":
            tag += f",precision={self.precision}"
        return tag


def results_store(path: str | Path) -> JsonlStore:
    """The resumable JSON-lines file of evaluation records, keyed by `KEY_FIELDS`."""
    return JsonlStore(path, KEY_FIELDS, defaults={k: "" for k in KEY_FIELDS})


def precision_context(models: Iterable[Denoiser], precision: str) -> contextlib.AbstractContextManager[None]:
    """Run the block in ``precision`` (`constrained_diffusion.utils.precision.precision_context` on each model's ``network``)."""
    return _precision_context([model.network for model in models], precision)  # type: ignore[attr-defined]


def run_batch(model: Denoiser, classifier: nn.Module, task: Task, solver: str, images: torch.Tensor,
              labels: torch.Tensor, start: int, steps: int, inner_steps: int, seed: int) -> dict:
    """Sample one batch on ``model.device`` and measure it (means over the batch; ``n`` = batch size).

    ``images`` and ``labels`` may live anywhere; the metrics are computed on the CPU.
    """
    images, labels = images.cpu(), labels.cpu()
    constraint = make_constraint(task, images.to(model.device, model.dtype), first_index=start, seed=seed)
    gens = [torch.Generator().manual_seed(seed * 1_000_003 + start + i) for i in range(images.shape[0])]
    x_T = randn(images.shape[0], model.sample_shape, gens, model.device, model.dtype)
    sampler = ConstrainedSampler(model, solver, steps=steps, inner_steps=inner_steps)
    with PeakMemory(model.device) as peak:
        result = sampler.sample(constraint, x_T=x_T, progress=False)
    out = result.images.float().cpu().clamp(-1, 1)
    pred = read_digits(out, classifier)
    n = images.shape[0]
    return {"n": n, "steps": steps, "inner_steps": inner_steps,
            "psnr": float(psnr(out, images).mean()), "ssim": float(ssim(out, images).mean()),
            "label_accuracy": float((pred == labels).float().mean()),
            "residual": float(result.final_residual.mean()) if result.final_residual is not None else float("nan"),
            "nfe": result.nfe, "nbe": result.nbe, "seconds_per_sample": result.seconds / n,
            "peak_mb": peak.megabytes}


def evaluate(models: dict[str, Denoiser], classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             tasks: Iterable[Task], solvers: Iterable[str], out: str | Path, settings: Settings,
             equal_time: bool = True, log: Callable[[str], object] = print,
             weights: dict[str, str] | None = None) -> list[dict]:
    """Fill ``out`` (JSON lines) with every missing record; returns the records of these settings and models.

    Args:
        models: the denoisers by name (all on ``settings.device``).
        classifier: reads the digit in each result (label accuracy).
        images: clean test digits ``(N, 1, H, W)``; the first ``settings.limit`` are used.
        labels: their labels ``(N,)``.
        tasks: the tasks (see `make_constraint`).
        solvers: registered solver names.
        out: the JSON-lines file; a record is appended as soon as its batch is done, and the
            batches already there are not recomputed.
        settings: what every row shares.
        equal_time: add the ``"equal-time"`` rows (needs ``"inexact-newton"`` among the solvers).
        log: called with one line per computed batch.
        weights: maps a model name to a digest of its weights (see
            `constrained_diffusion.models.pretrained.weights_digest`); part of each record's key,
            so records of retrained weights are computed afresh rather than reused.

    Raises:
        ValueError: a model is not on ``settings.device``.
    """
    for name, model in models.items():
        if model.device.type != torch.device(settings.device).type:
            raise ValueError(f"models[{name!r}] is on {model.device}, but settings.device is {settings.device!r}")
    weights = {name: (weights or {}).get(name, "") for name in models}
    store = results_store(out)
    s = settings
    images, labels = images[: s.limit], labels[: s.limit]

    def ensure(model_name: str, task: Task, solver: str, budget: str, steps: int) -> list[dict]:
        rows = []
        for start in range(0, images.shape[0], s.batch_size):
            key = (s.tag(), model_name, weights[model_name], task, solver, budget, start)
            if key not in store:
                rec = run_batch(models[model_name], classifier, task, solver, images[start:start + s.batch_size],
                                labels[start:start + s.batch_size], start, steps, s.inner_steps, s.seed)
                store.append({**rec, **dict(zip(KEY_FIELDS, key))})
                log(f"{model_name} {task} {solver} {budget} digits {start}..{start + rec['n'] - 1}: "
                    f"psnr {rec['psnr']:.2f} residual {rec['residual']:.4f} {rec['seconds_per_sample']:.3f} s/sample")
            rows.append(store.get(key))
        return rows

    solvers = list(solvers)
    for model_name in models:
        for task in tasks:
            per_step: dict[str, float] = {}
            for solver in solvers:
                rows = ensure(model_name, task, solver, "equal-steps", s.steps)
                per_step[solver] = sum(r["seconds_per_sample"] * r["n"] for r in rows) / sum(r["n"] for r in rows) / s.steps
            if equal_time and "inexact-newton" in per_step:
                target = per_step["inexact-newton"] * s.steps
                for solver in solvers:
                    if solver != "inexact-newton":
                        ensure(model_name, task, solver, "equal-time", max(1, round(target / per_step[solver])))
    return [r for r in store.records(setting=s.tag()) if r["model"] in models and r.get("weights", "") == weights[r["model"]]]


def summarise(records: list[dict]) -> list[dict]:
    """One row per (setting, model, task, solver, budget): batch-size-weighted means of the metrics."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(tuple(r.get(k, "") for k in KEY_FIELDS[:-1]), []).append(r)
    rows = []
    for key, recs in groups.items():
        n = sum(r["n"] for r in recs)
        means = {f: sum(r[f] * r["n"] for r in recs) / n for f in ("psnr", "ssim", "label_accuracy", "residual", "seconds_per_sample")}
        rows.append({**dict(zip(KEY_FIELDS[:-1], key)), "n": n, "steps": recs[0]["steps"], "inner_steps": recs[0]["inner_steps"],
                     "psnr": means["psnr"], "ssim": means["ssim"], "label_accuracy": means["label_accuracy"],
                     "residual": means["residual"], "nfe": recs[0]["nfe"], "nbe": recs[0]["nbe"],
                     "seconds_per_sample": means["seconds_per_sample"], "peak_mb": max(r["peak_mb"] for r in recs)})
    return rows


def ordered(rows: list[dict], models: Sequence[str], tasks: Sequence[str], solvers: Sequence[str]) -> list[dict]:
    """``rows`` of `summarise` sorted by model, task, budget (equal steps first) and solver, each in the given order."""
    order = lambda seq, v: list(seq).index(v) if v in seq else len(seq)  # noqa: E731
    return sorted(rows, key=lambda r: (order(models, r["model"]), order(tasks, r["task"]),
                                       order(["equal-steps", "equal-time"], r["budget"]), order(solvers, r["solver"])))
