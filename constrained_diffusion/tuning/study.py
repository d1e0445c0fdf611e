"""The fair comparison: every method tuned with the same budget on validation images, scored on test images.

``constrained-diffusion tune-study`` runs, for every (model, task, method):

1. **tune** — a `Tuner` study on ``mnist-validation`` with the same number of finished trials
   (``trials``; complete, pruned and failed all count, so a method whose settings often fail
   pays for it), the same images per trial and the same denoising steps. Studies share one
   storage; a rerun continues each study to ``trials``, and several processes started on the
   same storage share the work (Optuna's ``MaxTrialsCallback`` stops them together);
2. **equal steps** — each method with its best setting on the first ``test_limit`` images of
   ``mnist-test`` (never seen in tuning) at the tuning's step count, through the evaluation
   harness (records, resume);
3. **equal time** — each method again, with its denoising steps scaled so that its seconds
   per image match inexact Newton's at equal steps (``steps x t_IN / t_method``, from the
   equal-steps records, capped at ``max_steps``), its tuned setting otherwise unchanged;

then writes the table (mean and 95% interval per method, the paired difference to the
reference method with its interval) and two figures per (model, task): the optimisation
history of every method and the parameters' importances.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from constrained_diffusion.configurable import Configurable
from constrained_diffusion.tuning.tuner import Tuner, import_optuna
from constrained_diffusion.utils.paths import safe_name, under
from constrained_diffusion.utils.safe_io import write_json, write_text

T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 15: 2.131,
       20: 2.086, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}
"""Student's t quantile t_{0.975, df}; between the listed degrees of freedom the next smaller one is used (wider)."""


def t95(df: int) -> float:
    """The two-sided 95% Student-t quantile for ``df`` degrees of freedom (1.96 beyond 120).

    Example:
        >>> t95(9), t95(25), t95(1000)
        (2.262, 2.086, 1.96)
    """
    if df < 1:
        return float("nan")
    if df > 120:
        return 1.96
    return T95[max(k for k in T95 if k <= df)]


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval (``nan`` with one value).

    Example:
        >>> m, h = mean_ci([1.0, 2.0, 3.0])
        >>> m, round(h, 3)
        (2.0, 2.484)
    """
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t95(n - 1) * sd / math.sqrt(n)


class StudyConfig(BaseModel):
    """The options of ``constrained-diffusion tune-study``."""

    model_config = ConfigDict(extra="forbid")

    models: list[str] = Field(default_factory=lambda: ["mnist-ddpm", "mnist-flow"], min_length=1)
    tasks: list[str] = Field(default_factory=lambda: ["box", "free-form", "sr4"], min_length=1)
    methods: list[str] = Field(default_factory=lambda: ["inexact-newton", "gradient-descent", "exact-jvp", "identity", "mpgd",
                                                        "dps", "secant-newton"], min_length=1)
    reference: str = Field("inexact-newton", description="the method the paired differences are taken against")
    versus: str = Field("gradient-descent", description="the method the verdict compares the reference with")
    trials: int = Field(30, ge=1, description="finished trials per study (complete + pruned + failed)")
    limit: int = Field(8, ge=1, description="validation images per trial")
    batch_size: int = Field(4, ge=1, description="images per batch in tuning (the pruner looks after each)")
    steps: int = Field(10, ge=1, description="denoising steps of every method in tuning and at equal steps")
    data: str = "mnist-validation"
    test_data: str = "mnist-test"
    test_limit: int = Field(32, ge=2, description="test images scored per method (the first of the set by id)")
    test_batch_size: int = Field(16, ge=1, description="test images per batch (equal time uses the median seconds over batches)")
    max_steps: int = Field(200, ge=1, description="most denoising steps a method gets at equal time")
    metric: str = "psnr"
    storage: str = "sqlite:///runs/tuning/study.db"
    out: Path = Path("runs/tuning")
    phase: str = Field("all", pattern="^(all|tune|score)$", description="tune, score, or all (tune then score)")
    seed: int = 0
    device: str = "cpu"
    quiet: bool = False


class TuningStudy(Configurable):
    """The fair comparison (see the module docstring): ``TuningStudy(**options).run()``."""

    Config = StudyConfig

    def tuner(self, model: str, task: str, method: str, trials: int = 1) -> Tuner:
        """The `Tuner` of one (model, task, method) study."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        set_: dict[str, Any] = {"task.hole_ratio": 0.3} if task == "free-form" else {}
        return Tuner(model=model, data=cfg.data, task=task, method=method, trials=trials, limit=cfg.limit, steps=cfg.steps,
                     metric=cfg.metric, storage=cfg.storage, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                     set=set_, quiet=True)

    def check(self) -> None:
        """Every study's options (methods, tasks, metric, storage) before any work."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        for name in (cfg.reference, cfg.versus):
            if name not in cfg.methods:
                raise ValueError(f"--reference/--versus: {name!r} is not one of --methods ({', '.join(cfg.methods)})")
        for model in cfg.models:
            for task in cfg.tasks:
                for method in cfg.methods:
                    self.tuner(model, task, method).check()

    def run(self, log: Callable[[str], object] | None = None) -> dict[str, Any]:
        """Tune what is missing, score, write ``OUT/table.md``, ``OUT/results.json`` and the figures; returns the results."""
        say = log or (lambda line: print(line, file=sys.stderr))
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        self.check()
        if cfg.phase in ("all", "tune"):
            self.tune(say)
        if cfg.phase == "tune":
            return {}
        return self.score(say)

    # -- 1. tuning ----------------------------------------------------------------------------
    def tune(self, say: Callable[[str], object]) -> None:
        """Bring every study to ``trials`` finished trials (shared with any other process on the storage)."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        optuna = import_optuna()
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        for model in cfg.models:
            for task in cfg.tasks:
                for method in cfg.methods:
                    probe = self.tuner(model, task, method)
                    study = probe.open()
                    done = sum(t.state in finished for t in study.trials)
                    if done >= cfg.trials:
                        continue
                    say(f"tune {model} {task} {method}: {done} -> {cfg.trials} trials")
                    self.tuner(model, task, method).run(log=lambda line: None, total=cfg.trials)

    # -- 2, 3. scoring -----------------------------------------------------------------------
    def best(self, model: str, task: str, method: str) -> tuple[dict[str, Any], Any]:
        """The best overrides of a study and the study."""
        tuner = self.tuner(model, task, method)
        study = tuner.open()
        return tuner.best_overrides(study), study

    def _evaluate(self, model: str, task: str, methods: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
        from constrained_diffusion.data.images import open_images
        from constrained_diffusion.evaluation.harness import Evaluation
        from constrained_diffusion.utils.jsonl_store import JsonlStore

        cfg: StudyConfig = self.config  # type: ignore[assignment]
        set_ = {"task.hole_ratio": 0.3} if task == "free-form" else {}
        run = Evaluation(model=model, data=cfg.test_data, task=task, method=methods, out=out, limit=cfg.test_limit,
                         batch_size=cfg.test_batch_size, set=set_, metrics=["psnr", "ssim"], seed=cfg.seed, device=cfg.device,
                         quiet=True)
        run.run(log=lambda line: None)
        records = list(JsonlStore(out / "records.jsonl", ("image", "method", "settings")))
        # the folder may hold more: records of a run with a larger --test-limit, or of an earlier best setting
        resolution = tuple(records[0]["resolution"]) if records else None
        settings = {m.settings for m in run._methods(resolution, "")[0]}
        ids = set(open_images(cfg.test_data, resolution).ids[: cfg.test_limit]) if resolution is not None else set()
        return [r for r in records if r["settings"] in settings and r["image"] in ids]

    def score(self, say: Callable[[str], object]) -> dict[str, Any]:
        """Equal steps, then equal time, on the test images; the table and figures."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        results: dict[str, Any] = {"config": json.loads(cfg.model_dump_json()), "pairs": []}
        for model in cfg.models:
            for task in cfg.tasks:
                best = {m: self.best(model, task, m) for m in cfg.methods}
                specs = [{"name": m, "set": {k: list(v) if isinstance(v, tuple) else v for k, v in o.items()}, "label": m}
                         for m, (o, _) in best.items()]
                base = self.score_folder(model, task)
                say(f"score {model} {task}: equal steps ({cfg.steps})")
                eq_steps = self._evaluate(model, task, [{**s, "set": {**s["set"], "steps": cfg.steps}} for s in specs],
                                          base / "equal-steps")
                seconds = {m: _median([r["seconds"] for r in eq_steps if r["method"] == m]) for m in cfg.methods}  # per batch: robust to a slow one
                steps_at = {m: max(1, min(cfg.max_steps, round(cfg.steps * seconds[cfg.reference] / seconds[m])))
                            for m in cfg.methods}
                say(f"score {model} {task}: equal time (steps {steps_at})")
                eq_time = self._evaluate(model, task, [{**s, "set": {**s["set"], "steps": steps_at[s["name"]]}} for s in specs],
                                         base / "equal-time")
                pair = {"model": model, "task": task, "methods": {}}
                for m, (overrides, study) in best.items():
                    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
                    top = max(trials, key=lambda t: t.value) if study.direction.name == "MAXIMIZE" else min(trials, key=lambda t: t.value)
                    pair["methods"][m] = {
                        "overrides": overrides, "validation": top.value, "trials": len(study.trials),
                        "complete": len(trials),
                        "equal_steps": _stats(eq_steps, m, cfg.reference), "equal_time": _stats(eq_time, m, cfg.reference),
                        "steps_at_equal_time": steps_at[m]}
                results["pairs"].append(pair)
                self.figures(model, task, {m: s for m, (_, s) in best.items()})
        write_json(cfg.out / "results.json", results, default=str)
        write_text(cfg.out / "table.md", table(results))
        return results

    def score_folder(self, model: str, task: str) -> Path:
        """``OUT/score/<model>-<task>``, the model (a path or a Hub id) and task as `safe_name` s: always under ``OUT``."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        return under(cfg.out, "score", safe_name(f"{model}-{task}"), option="--models")

    def figure_files(self, model: str, task: str) -> tuple[Path, Path]:
        """``OUT/figures/<model>-<task>-history.png`` and ``-importance.png`` (safe names, under ``OUT``)."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        name = safe_name(f"{model}-{task}")
        return (under(cfg.out, "figures", f"{name}-history.png", option="--models"),
                under(cfg.out, "figures", f"{name}-importance.png", option="--models"))

    def figures(self, model: str, task: str, studies: dict[str, Any]) -> list[Path]:
        """``OUT/figures/<model>-<task>-history.png`` and ``-importance.png``."""
        from constrained_diffusion.tuning.figures import history_panel, importance_panel

        cfg: StudyConfig = self.config  # type: ignore[assignment]
        title = f"{model}, {task}: {cfg.metric} on {cfg.limit} validation images, {cfg.steps} steps"
        history, importance = self.figure_files(model, task)
        return [history_panel(studies, history, title), importance_panel(studies, importance, title)]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _stats(records: list[dict[str, Any]], method: str, reference: str) -> dict[str, Any]:
    mine = {r["image"]: r for r in records if r["method"] == method}
    ref = {r["image"]: r for r in records if r["method"] == reference}
    psnr = [r["psnr"] for r in mine.values()]
    diffs = [mine[i]["psnr"] - ref[i]["psnr"] for i in mine if i in ref]
    mean, half = mean_ci(psnr)
    smean, shalf = mean_ci([r["ssim"] for r in mine.values()])
    dmean, dhalf = mean_ci(diffs) if len(diffs) > 1 and method != reference else (0.0, 0.0)
    any_ = next(iter(mine.values()))
    return {"n": len(psnr), "psnr": mean, "psnr_ci": half, "ssim": smean, "ssim_ci": shalf, "diff": dmean, "diff_ci": dhalf,
            "nfe": any_["nfe"], "nbe": any_["nbe"], "steps": any_["steps"],
            "seconds": _median([r["seconds"] for r in mine.values()]), "peak_mb": _median([r["peak_mb"] for r in mine.values()])}


def _fmt_overrides(overrides: dict[str, Any]) -> str:
    parts = []
    for k, v in overrides.items():
        if isinstance(v, (list, tuple)):
            parts.append(f"{k}=({', '.join(f'{x:.3g}' for x in v)})")
        elif isinstance(v, float):
            parts.append(f"{k}={v:.3g}")
        else:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def table(results: dict[str, Any]) -> str:
    """The study's markdown: one table per (model, task), then the best settings."""
    from constrained_diffusion.utils.tables import format_table

    cfg = results["config"]
    ref = cfg["reference"]
    out = []
    for pair in results["pairs"]:
        rows = []
        for m, r in pair["methods"].items():
            es, et = r["equal_steps"], r["equal_time"]
            rows.append([m, f"{r['validation']:.2f}", f"{es['psnr']:.2f} ± {es['psnr_ci']:.2f}", f"{es['ssim']:.3f}",
                         "—" if m == ref else f"{es['diff']:+.2f} ± {es['diff_ci']:.2f}", f"{es['nfe']}", f"{es['nbe']}",
                         f"{es['seconds']:.3f}", f"{es.get('peak_mb', float('nan')):.0f}", f"{et['steps']}", f"{et['psnr']:.2f} ± {et['psnr_ci']:.2f}",
                         "—" if m == ref else f"{et['diff']:+.2f} ± {et['diff_ci']:.2f}"])
        out.append(f"**{pair['model']}, {pair['task']}**\n\n" + format_table(
            ["method", "val. PSNR", "PSNR (equal steps)", "SSIM", f"− {ref}", "NFE", "NBE", "s / image", "peak MB",
             "steps (equal time)", "PSNR (equal time)", f"− {ref}"], rows))
    settings = []
    for pair in results["pairs"]:
        for m, r in pair["methods"].items():
            settings.append([pair["model"], pair["task"], m, _fmt_overrides(r["overrides"]), f"{r['complete']}/{r['trials']}"])
    out.append("**Best settings** (complete / finished trials)\n\n" + format_table(["model", "task", "method", "setting", "trials"],
                                                                                   settings))
    return "\n\n".join(out) + "\n"
