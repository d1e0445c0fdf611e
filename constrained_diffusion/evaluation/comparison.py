"""The solver comparison (``constrained-diffusion compare``) as runs of the evaluation harness.

For each model and task, `Comparison` runs one `Evaluation` with every solver at the same
steps and inner steps (the ``equal-steps`` budget), then, when inexact Newton is among the
solvers, a second one in which each other solver gets the number of denoising steps that
makes its seconds per image match inexact Newton's (the ``equal-time`` budget):

.. math::

    T_s = \\max\\bigl(1, \\operatorname{round}(T \\, t_{\\text{IN}} / t_s)\\bigr),

where ``T`` is the common number of steps and ``t`` a solver's mean seconds per image per
step in its equal-steps run. Every record, image and report is the harness's
(`constrained_diffusion.evaluation.harness`): ``OUT/<model>/<task>/`` is one harness output
folder, so a rerun resumes, another process on the same folder adds nothing twice, and other
settings write beside the old ones. The equal-time step counts are kept in
``OUT/<model>/<task>/equal-time.jsonl``, keyed by the settings hash of inexact Newton's
equal-steps run, so a rerun reuses the first run's counts (and its records) instead of
timing afresh.

The comparison seeds each digit's initial noise by its held-out position
(``noise_seeding="position"``, `constrained_diffusion.evaluation.image_tasks.noise_generators`),
as ``compare`` always has, so its tables of 0.1 are reproduced digit for digit; its metrics
are PSNR, SSIM and the shipped classifier's label accuracy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constrained_diffusion.evaluation.config import EvaluationConfig, MethodSpec
from constrained_diffusion.evaluation.harness import Evaluation
from constrained_diffusion.evaluation.methods import resolve_methods
from constrained_diffusion.utils.jsonl_store import JsonlStore
from constrained_diffusion.utils.paths import safe_name, under

BUDGETS = ("equal-steps", "equal-time")
REFERENCE = "inexact-newton"
"""The solver whose seconds per image set the equal-time budget."""
METRICS = ("psnr", "ssim", "label_accuracy")
EQUAL_TIME_SUFFIX = ".equal-time"
"""What a solver's label ends with in its equal-time run (`equal_time_label`)."""
EQUAL_TIME = "equal-time.jsonl"
"""The file of equal-time step counts under each model and task's folder."""


def equal_time_label(solver: str) -> str:
    """The harness label of ``solver``'s equal-time run.

    Examples:
        >>> equal_time_label("gradient-descent")
        'gradient-descent.equal-time'
    """
    return f"{solver}{EQUAL_TIME_SUFFIX}"


def equal_time_steps(seconds_per_step: dict[str, float], steps: int, reference: str = REFERENCE) -> dict[str, int]:
    """Each solver's steps at ``reference``'s wall-clock time: ``max(1, round(steps * t_ref / t_s))``.

    Args:
        seconds_per_step: each solver's mean seconds per image per denoising step (equal steps).
        steps: the common number of denoising steps.
        reference: the solver whose time is matched (it gets no equal-time row).

    Examples:
        >>> equal_time_steps({"inexact-newton": 0.6, "gradient-descent": 0.2, "exact-jvp": 3.0}, 20)
        {'gradient-descent': 60, 'exact-jvp': 4}
    """
    target = seconds_per_step[reference] * steps
    return {s: max(1, round(target / t)) for s, t in seconds_per_step.items() if s != reference}


@dataclass
class Comparison:
    """The solvers compared on each model and task at equal steps and at equal time (the module docstring).

    Attributes:
        models: shipped model names (``mnist-ddpm``, ``mnist-flow``).
        tasks: `constrained_diffusion.evaluation.image_tasks` task names.
        solvers: registered solver names.
        out: the folder; ``out/<model>/<task>/`` is a harness output folder.
        steps: denoising steps of the equal-steps budget.
        inner_steps: constraint iterations per step.
        limit: the first N digits of ``data``.
        batch_size: digits per batch.
        seed: the run seed.
        device: where to sample.
        precision: ``float32``, ``tf32-emulated`` or ``no-tf32`` (`constrained_diffusion.utils.precision`).
        equal_time: add the equal-time rows (needs inexact Newton among the solvers).
        data: the image set (default the 500 held-out digits).
        quiet: no progress bars.
    """

    models: Sequence[str]
    tasks: Sequence[str]
    solvers: Sequence[str]
    out: Path
    steps: int = 20
    inner_steps: int = 5
    limit: int | None = 500
    batch_size: int = 100
    seed: int = 0
    device: str = "cpu"
    precision: str = "float32"
    equal_time: bool = True
    data: str = "mnist-held-out"
    quiet: bool = False

    def folder(self, model: str, task: str) -> Path:
        """The harness output folder of ``model`` on ``task``: ``out/<model>/<task>``."""
        return under(self.out, safe_name(model), safe_name(task))

    def config(self, model: str, task: str, methods: list[MethodSpec]) -> EvaluationConfig:
        """The harness options of one run of ``methods`` on ``model`` and ``task``."""
        return EvaluationConfig(model=model, data=self.data, task=task, method=methods, out=self.folder(model, task),
                                limit=self.limit, batch_size=self.batch_size, steps=self.steps,
                                set={"inner_steps": self.inner_steps}, metrics=list(METRICS), seed=self.seed,
                                noise_seeding="position", device=self.device, precision=self.precision,  # type: ignore[arg-type]
                                quiet=self.quiet)

    def check(self) -> None:
        """Every option checked before any sampling (as the harness checks its own; a one-line ``ValueError``).

        Raises:
            ValueError: a bad option (naming it), or a launch with several processes (the equal-time
                budget needs every process's timings in one place: run ``compare`` as one process).
        """
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("compare runs as one process (WORLD_SIZE > 1 here); for several GPUs run evaluate, "
                             "which shards the images, with --noise-seeding position and --metrics label_accuracy")
        for model in self.models:
            for task in self.tasks:
                Evaluation(**dict(self.config(model, task, [MethodSpec(name=s) for s in self.solvers]))).check()

    def run(self, log: Callable[[str], object] | None = None) -> list[dict[str, Any]]:
        """Fill every missing record and return one row per (model, task, budget, solver), in that order.

        Each row has ``model``, ``task``, ``solver``, ``budget``, ``steps``, ``inner_steps``,
        ``n``, the means of ``psnr``, ``ssim``, ``label_accuracy``, ``residual`` and
        ``seconds`` (per image), ``nfe``, ``nbe`` and ``peak_mb``.
        """
        say = log or (lambda line: print(line, file=sys.stderr))
        self.check()
        rows = []
        for model in self.models:
            for task in self.tasks:
                rows += self._model_task(model, task, say)
        return rows

    def _model_task(self, model: str, task: str, say: Callable[[str], object]) -> list[dict[str, Any]]:
        same = self.config(model, task, [MethodSpec(name=s) for s in self.solvers])
        rows = [self._row(model, task, r, "equal-steps", self.steps) for r in Evaluation(**dict(same)).run(say)["methods"]]
        if not self.equal_time or REFERENCE not in self.solvers or len(set(self.solvers)) == 1:
            return rows
        per_step = {r["solver"]: r["seconds"] / self.steps for r in rows}
        counts = self._equal_time_counts(model, task, same, per_step)
        methods = [MethodSpec(name=s, label=equal_time_label(s), set={"steps": n}) for s, n in counts.items()]
        timed = Evaluation(**dict(self.config(model, task, methods))).run(say)["methods"]
        return rows + [self._row(model, task, r, "equal-time", counts[r["method"].removesuffix(EQUAL_TIME_SUFFIX)]) for r in timed]

    def _equal_time_counts(self, model: str, task: str, same: EvaluationConfig, per_step: dict[str, float]) -> dict[str, int]:
        """The equal-time steps kept for this reference run, else those measured now (kept; the first writer wins).

        The key is the settings hash of inexact Newton's equal-steps method (`resolve_methods`, as
        checked before the model is loaded; it covers the device) and the number of digits, so
        other settings, another kind of device or a smoke run of a few digits get counts of their own.
        """
        key = next(m.settings for m in resolve_methods(same, None, "")[0] if m.label == REFERENCE)
        store = JsonlStore(self.folder(model, task) / EQUAL_TIME, ("reference", "limit", "solver"))
        for solver, count in equal_time_steps(per_step, self.steps).items():
            store.add({"reference": key, "limit": self.limit, "solver": solver, "steps": count,
                       "seconds_per_step": per_step[solver], "reference_seconds_per_step": per_step[REFERENCE]})
        return {s: int(store.get((key, self.limit, s))["steps"]) for s in self.solvers if s != REFERENCE}  # type: ignore[index]

    def _row(self, model: str, task: str, summary: dict[str, Any], budget: str, steps: int) -> dict[str, Any]:
        return {"model": model.removeprefix("mnist-"), "task": task, "solver": summary["method"].removesuffix(EQUAL_TIME_SUFFIX),
                "budget": budget, "steps": steps, "inner_steps": self.inner_steps, "n": summary["n"],
                **{m: summary[m] for m in (*METRICS, "residual", "seconds", "nfe", "nbe", "peak_mb")}}
