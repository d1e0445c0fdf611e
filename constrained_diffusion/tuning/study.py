"""The fair comparison: every method tuned with the same budget on validation images, scored on test images.

``constrained-diffusion tune-study`` runs, for every (model, task, method):

0. **does it apply** — each method runs two steps on one digit of the task; a method that
   refuses the task's constraint or the model (RePaint on super-resolution, say) is left out
   of that (model, task) and listed with its reason;
1. **tune** — a `Tuner` study on a **class-stratified** subset of ``mnist-validation``
   (``mnist-validation:stratified-L``: ``L // 10`` digits of every class,
   `constrained_diffusion.data.images.stratified_set`) brought to the same number of
   **complete** trials (``trials``; pruned and failed trials do not count, so every method
   gets as many fully scored settings; a study stops anyway after ``max_finished_factor x
   trials`` finished trials and the table says so), the same images per trial and the same
   denoising steps. Studies share one storage; a rerun continues each study, and several
   processes started on the same storage share the work;
2. **equal steps** — each method with its best setting on a class-stratified subset of
   ``mnist-test`` (``test_limit`` digits, never seen in tuning) at the tuning's step count,
   through the evaluation harness (records, resume);
3. **equal network evaluations** — each method again, its steps scaled so that its forward
   plus backward network evaluations per image (NFE + NBE) match the reference method's at
   equal steps (``steps x E_ref / E_method``, capped at ``max_steps``); the table shows the
   evaluations each method then used;
4. **equal time** — likewise with the seconds per image (``steps x t_ref / t_method``, median
   over the test batches);

then writes ``OUT/results.json`` (with every digit's PSNR, so any comparison can be redone),
``OUT/table.md`` (`constrained_diffusion.tuning.report.table`: mean and 95% interval per
method and budget, the paired difference to the reference method with its interval), the
verdict generated from those numbers (`constrained_diffusion.tuning.report.verdict`), the
history and importance figures per (model, task) and the Pareto figure (PSNR against seconds
and against peak memory per image, `constrained_diffusion.tuning.figures.pareto_figure`).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from constrained_diffusion.configurable import Configurable
from constrained_diffusion.tuning.study_config import (  # noqa: F401  (their home before the split; still importable from here)
    BASE_METHODS,
    BUDGETS,
    T95,
    StudyConfig,
    default_methods,
    mean_ci,
    t95,
)
from constrained_diffusion.tuning.tuner import Tuner, count_trials, import_optuna
from constrained_diffusion.utils.paths import safe_name, under
from constrained_diffusion.utils.safe_io import write_json, write_text


def _shipped(data: str) -> bool:
    from constrained_diffusion.data.images import SHIPPED_SETS

    return data in SHIPPED_SETS and data.startswith("mnist-")


class TuningStudy(Configurable):
    """The fair comparison (see the module docstring): ``TuningStudy(**options).run()``."""

    Config = StudyConfig

    # -- the image sets ------------------------------------------------------------------------
    @property
    def tuning_data(self) -> str:
        """The tuning images: ``DATA:stratified-LIMIT`` for a shipped MNIST set (with ``stratify``), else ``DATA``."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        return f"{cfg.data}:stratified-{cfg.limit}" if cfg.stratify and _shipped(cfg.data) else cfg.data

    @property
    def scoring_data(self) -> str:
        """The test images: ``TEST_DATA:stratified-TEST_LIMIT`` for a shipped MNIST set (with ``stratify``), else ``TEST_DATA``."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        return f"{cfg.test_data}:stratified-{cfg.test_limit}" if cfg.stratify and _shipped(cfg.test_data) else cfg.test_data

    def tuner(self, model: str, task: str, method: str, trials: int = 1) -> Tuner:
        """The `Tuner` of one (model, task, method) study."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        set_: dict[str, Any] = {"task.hole_ratio": 0.3} if task == "free-form" else {}
        return Tuner(model=model, data=self.tuning_data, task=task, method=method, trials=trials, limit=cfg.limit, steps=cfg.steps,
                     metric=cfg.metric, storage=cfg.storage, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
                     set=set_, quiet=True)

    def check(self) -> None:
        """Every study's options (methods, tasks, metric, storage) before any work."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        if len(set(cfg.methods)) != len(cfg.methods):
            raise ValueError(f"--methods: {' '.join(cfg.methods)} names a method twice")
        for name in (cfg.reference,):
            if name not in cfg.methods:
                raise ValueError(f"--reference: {name!r} is not one of --methods ({', '.join(cfg.methods)})")
        for model in cfg.models:
            for task in cfg.tasks:
                for method in cfg.methods:
                    self.tuner(model, task, method).check()

    def applies(self, model: str, task: str, method: str) -> str | None:
        """``None`` when ``method`` runs on ``model`` and ``task``, else why not (it refused two steps on one digit)."""
        import torch

        from constrained_diffusion.data.images import open_images
        from constrained_diffusion.evaluation.harness import make_problem, pixel_resolution, sample_batch
        from constrained_diffusion.recipes.overrides import resolve_recipe

        cfg: StudyConfig = self.config  # type: ignore[assignment]
        cache = self.__dict__.setdefault("_probe", {})
        if model not in cache:
            from constrained_diffusion.models.loading import load

            den = load(model, cfg.device, "float32")
            images = open_images(self.tuning_data, pixel_resolution(den), report=lambda line: None)
            cache[model] = (den, images.load(0)[None], images.ids[:1])
        den, truth, ids = cache[model]
        options = {"hole_ratio": 0.3} if task == "free-form" else {}
        problem = make_problem(task, truth.to(cfg.device), ids, cfg.seed, 0.0, options, None)
        try:
            sample_batch(den, resolve_recipe(method, {"steps": 2}), problem.constraint, list(ids), cfg.seed, cfg.device)
        except (TypeError, ValueError, NotImplementedError) as exc:
            return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        except torch.OutOfMemoryError:  # pragma: no cover - a GPU's
            return None
        return None

    def applicable(self, model: str, task: str) -> tuple[list[str], dict[str, str]]:
        """The methods that run on ``(model, task)``, and the others with their reason."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        ok, skipped = [], {}
        for method in cfg.methods:
            why = self.applies(model, task, method)
            if why is None:
                ok.append(method)
            else:
                skipped[method] = why
        if cfg.reference not in ok:
            raise ValueError(f"--reference {cfg.reference} does not run on {model} / {task}: {skipped[cfg.reference]}")
        return ok, skipped

    def run(self, log: Callable[[str], object] | None = None) -> dict[str, Any]:
        """Tune what is missing, score, write ``OUT/table.md``, ``OUT/results.json`` and the figures; returns the results."""
        say = log or (lambda line: print(line, file=sys.stderr))
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        if cfg.phase == "report":
            return self.report()
        self.check()
        if cfg.phase in ("all", "tune"):
            self.tune(say)
        if cfg.phase == "tune":
            return {}
        return self.score(say)

    # -- 1. tuning ----------------------------------------------------------------------------
    def tune(self, say: Callable[[str], object]) -> None:
        """Bring every study to ``trials`` complete trials (shared with any other process on the storage)."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        import_optuna()
        started = time.time()
        cap = cfg.max_finished_factor * cfg.trials
        for model in cfg.models:
            for task in cfg.tasks:
                methods, skipped = self.applicable(model, task)
                for method, why in skipped.items():
                    say(f"skip {model} {task} {method}: {why}")
                for method in methods:
                    done = count_trials(self.tuner(model, task, method).open())
                    if done["complete"] >= cfg.trials or done["finished"] >= cap:
                        continue
                    say(f"tune {model} {task} {method}: {done['complete']} -> {cfg.trials} complete trials "
                        f"({done['finished']} finished so far, at most {cap})")
                    self.tuner(model, task, method).run(log=lambda line: None, complete=cfg.trials, max_finished=cap)
        self._tune_seconds = round(time.time() - started, 1)

    # -- 2, 3, 4. scoring ----------------------------------------------------------------------
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
        run = Evaluation(model=model, data=self.scoring_data, task=task, method=methods, out=out, limit=cfg.test_limit,
                         batch_size=cfg.test_batch_size, set=set_, metrics=["psnr", "ssim"], seed=cfg.seed, device=cfg.device,
                         quiet=True)
        run.run(log=lambda line: None)
        records = list(JsonlStore(out / "records.jsonl", ("image", "method", "settings")))
        # the folder may hold more: records of a run with a larger --test-limit, or of an earlier best setting
        resolution = tuple(records[0]["resolution"]) if records else None
        settings = {m.settings for m in run._methods(resolution, "")[0]}
        ids = set(open_images(self.scoring_data, resolution).ids[: cfg.test_limit]) if resolution is not None else set()
        return [r for r in records if r["settings"] in settings and r["image"] in ids]

    def score(self, say: Callable[[str], object]) -> dict[str, Any]:
        """Equal steps, equal network evaluations and equal time on the test images; the table, verdict and figures."""
        cfg: StudyConfig = self.config  # type: ignore[assignment]
        started = time.time()
        results: dict[str, Any] = {"config": json.loads(cfg.model_dump_json()), "tuning_data": self.tuning_data,
                                   "scoring_data": self.scoring_data, "pairs": []}
        for model in cfg.models:
            for task in cfg.tasks:
                methods, skipped = self.applicable(model, task)
                best = {m: self.best(model, task, m) for m in methods}
                specs = [{"name": m, "set": {k: list(v) if isinstance(v, tuple) else v for k, v in o.items()}, "label": m}
                         for m, (o, _) in best.items()]
                base = self.score_folder(model, task)
                say(f"score {model} {task}: equal steps ({cfg.steps})")
                runs = {"equal_steps": self._evaluate(model, task, [{**s, "set": {**s["set"], "steps": cfg.steps}} for s in specs],
                                                      base / "equal-steps")}
                eq = runs["equal_steps"]
                seconds = {m: _median([r["seconds"] for r in eq if r["method"] == m]) for m in methods}  # per batch: robust to a slow one
                evals = {m: _median([r["nfe"] + r["nbe"] for r in eq if r["method"] == m]) for m in methods}
                steps_at = {
                    "equal_steps": {m: cfg.steps for m in methods},
                    "equal_evals": {m: _scaled(cfg.steps, evals[cfg.reference], evals[m], cfg.max_steps) for m in methods},
                    "equal_time": {m: _scaled(cfg.steps, seconds[cfg.reference], seconds[m], cfg.max_steps) for m in methods}}
                for budget, folder in (("equal_evals", "equal-evals"), ("equal_time", "equal-time")):
                    say(f"score {model} {task}: {budget.replace('_', ' ')} (steps {steps_at[budget]})")
                    runs[budget] = self._evaluate(model, task, [{**s, "set": {**s["set"], "steps": steps_at[budget][s["name"]]}}
                                                                for s in specs], base / folder)
                    if budget == "equal_evals":  # a method's evaluations need not be proportional to its steps: one affine correction
                        got = {m: _median([r["nfe"] + r["nbe"] for r in runs[budget] if r["method"] == m]) for m in methods}
                        again = {m: _affine_steps((cfg.steps, evals[m]), (steps_at[budget][m], got[m]), evals[cfg.reference], cfg.max_steps)
                                 for m in methods}
                        if any(again[m] != steps_at[budget][m] for m in methods):
                            steps_at[budget] = again
                            say(f"score {model} {task}: equal evals, corrected (steps {again})")
                            runs[budget] = self._evaluate(model, task, [{**s, "set": {**s["set"], "steps": again[s["name"]]}}
                                                                        for s in specs], base / folder)
                pair: dict[str, Any] = {"model": model, "task": task, "methods": {}, "skipped": skipped}
                for m, (overrides, study) in best.items():
                    top = _top(study)
                    counts = count_trials(study)
                    pair["methods"][m] = {
                        "overrides": overrides, "validation": top.value, "trials": counts["finished"],
                        "complete": counts["complete"], "pruned": counts["pruned"], "failed": counts["fail"],
                        **{b: _stats(runs[b], m, cfg.reference) for b in BUDGETS},
                        "steps_at_equal_time": steps_at["equal_time"][m], "steps_at_equal_evals": steps_at["equal_evals"][m]}
                results["pairs"].append(pair)
                self.figures(model, task, {m: s for m, (_, s) in best.items()})
        results["machine"] = _machine(cfg.device)
        results["score_seconds"] = round(time.time() - started, 1)
        results["tune_seconds"] = getattr(self, "_tune_seconds", None)  # this process's tuning (None: --phase score)
        write_json(cfg.out / "results.json", results, default=str)
        return self.report(results)

    def report(self, results: dict[str, Any] | None = None) -> dict[str, Any]:
        """``OUT/table.md``, ``OUT/verdict.md`` and ``OUT/figures/pareto.png`` from ``results`` (default: ``OUT/results.json``).

        With ``phase="report"`` this is all the study does: the files (and the pages of
        ``--write-docs`` / ``--write-choosing``) are rewritten from the recorded results, with no
        study opened and nothing sampled.

        Raises:
            ValueError: naming ``--out``, when there is no ``OUT/results.json`` to report.
        """
        from constrained_diffusion.tuning.figures import pareto_figure
        from constrained_diffusion.tuning.report import table, verdict

        cfg: StudyConfig = self.config  # type: ignore[assignment]
        if results is None:
            path = cfg.out / "results.json"
            if not path.is_file():
                raise ValueError(f"--out: {path} does not exist; run --phase score (or all) first")
            results = json.loads(path.read_text())
        write_text(cfg.out / "table.md", table(results))
        write_text(cfg.out / "verdict.md", verdict(results))
        pareto_figure(results, cfg.out / "figures" / "pareto.png")
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


def _scaled(steps: int, reference: float, mine: float, most: int) -> int:
    """``steps x reference / mine``, rounded, in ``[1, most]`` (``steps`` when either cost is not a positive number).

    Examples:
        >>> _scaled(10, 90.0, 30.0, 200), _scaled(10, 90.0, 110.0, 200), _scaled(10, 1.0, 0.001, 200)
        (30, 8, 200)
    """
    if not (mine > 0 and reference > 0 and math.isfinite(mine) and math.isfinite(reference)):
        return steps
    return max(1, min(most, round(steps * reference / mine)))


def _affine_steps(first: tuple[int, float], second: tuple[int, float], target: float, most: int, tolerance: float = 0.1) -> int:
    """The steps at which a method's cost reaches ``target``, from two runs ``(steps, cost)`` and a line through them.

    Keeps ``second``'s steps when its cost is within ``tolerance`` of the target or the two runs cannot define a line.

    Examples:
        >>> _affine_steps((2, 6.0), (6, 26.0), 18.0, 200)  # RePaint: 5 evaluations a step, 4 fewer in all
        4
        >>> _affine_steps((2, 2.0), (18, 18.0), 18.0, 200)
        18
    """
    (s0, e0), (s1, e1) = first, second
    if abs(e1 - target) <= tolerance * target or s1 == s0 or e1 == e0 or not all(map(math.isfinite, (e0, e1, target))):
        return s1
    slope = (e1 - e0) / (s1 - s0)
    if slope <= 0:
        return s1
    return max(1, min(most, round(s0 + (target - e0) / slope)))


def _top(study: Any) -> Any:
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    sign = 1 if study.direction.name == "MAXIMIZE" else -1
    return max(trials, key=lambda t: (sign * t.value, -t.number))


def _machine(device: str) -> str:
    import platform

    import torch

    threads = os.environ.get("OMP_NUM_THREADS", str(torch.get_num_threads()))
    return (f"torch {torch.__version__}, {device}, {os.cpu_count()} CPU cores ({platform.machine()}), "
            f"{threads} thread(s) per process")


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _stats(records: list[dict[str, Any]], method: str, reference: str) -> dict[str, Any]:
    """One method's scores at one budget: mean and 95% interval of PSNR and SSIM, the paired difference to ``reference``,
    its cost (NFE, NBE, seconds and peak memory per image, medians over the images) and every digit's PSNR."""
    mine = {r["image"]: r for r in records if r["method"] == method}
    ref = {r["image"]: r for r in records if r["method"] == reference}
    psnr = [r["psnr"] for r in mine.values()]
    diffs = [mine[i]["psnr"] - ref[i]["psnr"] for i in mine if i in ref]
    mean, half = mean_ci(psnr)
    smean, shalf = mean_ci([r["ssim"] for r in mine.values()])
    dmean, dhalf = mean_ci(diffs) if len(diffs) > 1 and method != reference else (0.0, 0.0)
    any_ = next(iter(mine.values()))
    nfe = _median([r["nfe"] for r in mine.values()])
    nbe = _median([r["nbe"] for r in mine.values()])
    return {"n": len(psnr), "psnr": mean, "psnr_ci": half, "ssim": smean, "ssim_ci": shalf, "diff": dmean, "diff_ci": dhalf,
            "nfe": nfe, "nbe": nbe, "evals": nfe + nbe, "steps": any_["steps"],
            "seconds": _median([r["seconds"] for r in mine.values()]), "peak_mb": _median([r["peak_mb"] for r in mine.values()]),
            "peak_mb_per_image": _median([r["peak_mb"] / max(1, int(r.get("batch") or 1)) for r in mine.values()]),
            "per_image": {i: r["psnr"] for i, r in sorted(mine.items())}}
