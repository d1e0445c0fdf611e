"""The adaptive inner loop against fixed inner steps: PSNR versus network forwards on MNIST.

Each setting samples the same test digits (one at a time, so NFE is per sample) from the same
noise, with the same 20 steps; a setting is a fixed number of inner steps ``K`` or ``K = 5``
with an early stop (`SamplerConfig.residual_tol`, `SamplerConfig.min_decrease`). The
reference is the paper's fixed ``K = 5``. Records are appended to a JSONL file as they are
made, keyed by setting and digit, so a rerun resumes where an interrupted one stopped. The task
is an `image_tasks` task (default ``top-half``); records written before 0.2, whose ``box`` was
``top-half``, are reused under the new name (`constrained_diffusion.evaluation.task_names`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from constrained_diffusion.denoisers import Denoiser
from constrained_diffusion.evaluation.image_tasks import make_problem
from constrained_diffusion.evaluation.task_names import MNIST_TASKS, NAMES_FIELD, find_record, renamed_task, stored_key
from constrained_diffusion.metrics.images import psnr, ssim
from constrained_diffusion.sampling import ConstrainedSampler
from constrained_diffusion.utils.jsonl_store import JsonlStore


@dataclass(frozen=True)
class Setting:
    """One row of the study: a label and the sampler options it changes."""

    label: str
    inner_steps: int = 5
    options: dict[str, Any] = field(default_factory=dict)


DEFAULT_SETTINGS: tuple[Setting, ...] = (
    Setting("fixed K=5 (paper)", 5),
    Setting("fixed K=3", 3),
    Setting("fixed K=2", 2),
    Setting("fixed K=1", 1),
    Setting("adaptive: min_decrease=0.1", 5, {"min_decrease": 0.1}),
    Setting("adaptive: min_decrease=0.3", 5, {"min_decrease": 0.3}),
    Setting("adaptive: residual_tol=1", 5, {"residual_tol": 1.0}),
    Setting("adaptive: min_decrease=0.1, residual_tol=1", 5, {"min_decrease": 0.1, "residual_tol": 1.0}),
)


KEY_FIELDS = ("model", "task", "steps", "solver", "seed", "device", "setting", "options", "digit", NAMES_FIELD)
"""What identifies a record (a record without ``device`` was written before devices were recorded: a CPU one; one
without ``task_names`` before 0.2, its ``task`` named the old way: `task_names.find_record`)."""


def study_store(path: str | Path) -> JsonlStore:
    """The resumable JSON-lines file of the study's records, keyed by `KEY_FIELDS`."""
    return JsonlStore(path, KEY_FIELDS, defaults={"device": "cpu"})


def _setting_key(s: Setting) -> str:
    return json.dumps({"inner_steps": s.inner_steps, **s.options}, sort_keys=True)


def run_study(model: Denoiser, images: torch.Tensor, results: str | Path, settings: tuple[Setting, ...] = DEFAULT_SETTINGS,
              task: str = "top-half", steps: int = 20, solver: str = "inexact-newton", seed: int = 0,
              model_name: str = "model", progress: bool = True) -> list[dict]:
    """Sample every digit under every setting, appending one JSON record per (setting, digit).

    Args:
        model: the denoiser.
        images: clean test digits ``(N, 1, H, W)`` in ``[-1, 1]``.
        results: JSONL file; records already there (same setting, digit, task, steps, solver,
            seed) are kept and not recomputed.
        settings: the rows.
        task: an `image_tasks` task of `task_names.MNIST_TASKS` (digit ``i``'s id is ``str(i)``;
            ``box`` is the centred box, warned once: `task_names.renamed_task`).
        steps: denoising steps for every setting.
        solver: the solver for every setting.
        seed: noise seed (digit ``i`` uses ``seed * 1_000_003 + i``).
        model_name: names the model in the records (part of the resume key, with the task,
            steps, solver, seed, the device type and each setting's label and options; the
            finite difference of inexact Newton depends on a GPU's TF32 convolutions, so the
            records of two devices are kept apart).

    Returns:
        All records of this configuration, each with ``setting``, ``digit``, ``psnr``, ``ssim``,
        ``residual`` and ``nfe``, in settings order.

    Raises:
        ValueError: ``task`` is not one of `task_names.MNIST_TASKS`.
    """
    if renamed_task(task, "task=") not in MNIST_TASKS:
        raise ValueError(f"task: unknown {task!r}; expected one of {list(MNIST_TASKS)}")
    store = study_store(results)
    key = stored_key({"model": model_name, "task": task, "steps": steps, "solver": solver, "seed": seed,
                      "device": model.device.type})
    cells = [(s, i, {**key, "setting": s.label, "options": _setting_key(s), "digit": i}) for s in settings for i in range(images.shape[0])]
    todo = [(s, i, cell) for s, i, cell in cells if find_record(store, cell) is None]
    from tqdm.auto import tqdm

    for s, i, cell in tqdm(todo, disable=not progress, desc="adaptive study", leave=False):
        store.append({**cell, **_sample_digit(model, images[i:i + 1], i, s, task, steps, solver, seed)})
    found = [find_record(store, cell) for _, _, cell in cells]
    return [r for r in found if r is not None]


def _sample_digit(model: Denoiser, truth: torch.Tensor, i: int, s: Setting, task: str, steps: int, solver: str,
                  seed: int) -> dict[str, float]:
    """Sample test digit ``i`` (``truth``, ``(1, 1, H, W)``) under setting ``s``: PSNR, SSIM, residual, NFE."""
    sampler = ConstrainedSampler(model, solver, steps=steps, inner_steps=s.inner_steps, **s.options)
    result = sampler.sample(make_problem(task, truth, [str(i)], seed).constraint,
                            generator=torch.Generator().manual_seed(seed * 1_000_003 + i), progress=False)
    out = result.images.float().clamp(-1, 1)
    return {"psnr": float(psnr(out, truth)[0]), "ssim": float(ssim(out, truth)[0]),
            "residual": float(result.final_residual[0]) if result.final_residual is not None else float("nan"),
            "nfe": result.nfe}


def summarise_study(records: list[dict], settings: tuple[Setting, ...] = DEFAULT_SETTINGS) -> list[dict]:
    """Per setting (in ``settings`` order): mean PSNR, SSIM, residual and NFE over its digits."""
    rows = []
    for s in settings:
        mine = [r for r in records if r["setting"] == s.label]
        if not mine:
            continue
        rows.append({"setting": s.label, "n": len(mine),
                     **{k: sum(r[k] for r in mine) / len(mine) for k in ("psnr", "ssim", "residual", "nfe")}})
    return rows


def study_figure(rows: list[dict], title: str) -> str:
    """The PSNR-versus-NFE figure (SVG) of `summarise_study` rows: the fixed-K line, one point per adaptive setting."""
    from constrained_diffusion.utils.svg_plot import Series, scatter_svg

    fixed = [r for r in rows if r["setting"].startswith("fixed")]
    series = [Series("fixed K (1, 2, 3, 5)", [r["nfe"] for r in fixed], [r["psnr"] for r in fixed], "#1f77b4", line=True)]
    colors = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    for r, c in zip([r for r in rows if r["setting"].startswith("adaptive")], colors):
        series.append(Series(r["setting"].removeprefix("adaptive: "), [r["nfe"]], [r["psnr"]], c))
    return scatter_svg(series, "network forwards per sample (NFE)", "PSNR (dB)", title)
