"""``constrained-diffusion tune``: a resumable Optuna search over one method's declared search space.

A study is (model, image set, task, method, metric, steps, images): `Tuner` opens it in an
Optuna storage (SQLite by default, any RDB URL otherwise) and adds ``trials`` trials. Each
trial

1. samples the method's overrides from its `SearchSpace` (`method_space`, minus what
   ``set`` fixes) with a TPE sampler whose randomness is seeded by the run seed and the trial's
   number (`TrialSeededTPE`): one process gives the same trials every time, and two processes
   sharing a study never draw the same random start;
2. runs the method on the same first ``limit`` images, with the same observations and initial
   noise in every trial (the evaluation harness's seeding rule, `sample_batch`), batch by
   batch, and reports the running mean of the metric after each batch, so the median pruner
   stops a trial that is behind the median of earlier trials over the same images;
3. records the metric's mean and standard error, NFE, NBE and seconds per image as the trial's
   user attributes. A setting the method rejects, or a non-finite score, fails the trial
   (its ``error`` attribute says why); the run goes on.

Rerunning the command continues the study; two processes started on the same storage and
study share it (Optuna's distributed mode). A trial whose process died (``kill -9``) is
failed once its heartbeat is older than `GRACE_SECONDS`, and its parameters are queued again,
so a crash loses at most the trial that was running and duplicates nothing.

`Tuner.best_config` writes the best trial as a YAML file that ``evaluate --config`` runs.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from constrained_diffusion.configurable import Configurable
from constrained_diffusion.errors import OutOfMemoryError, is_out_of_memory, out_of_memory
from constrained_diffusion.evaluation.batch import sample_batch
from constrained_diffusion.evaluation.image_tasks import check_task, image_seed
from constrained_diffusion.evaluation.problems import TaskSpec, load_denoiser, open_set, pixel_resolution, problem_batches
from constrained_diffusion.evaluation.prompts import check_prompts
from constrained_diffusion.evaluation.scores import DATASET, HIGHER_IS_BETTER, PER_IMAGE, PerImage, check_metrics
from constrained_diffusion.recipes.overrides import join_pairs, resolve_recipe, split_set
from constrained_diffusion.space import Choice, Float, Int, SearchSpace
from constrained_diffusion.tuning.space import method_space
from constrained_diffusion.utils.paths import safe_name
from constrained_diffusion.utils.safe_io import write_text

DEFAULT_STORAGE = "sqlite:///tune.db"
"""Where a study lives unless ``--storage`` says otherwise (a file in the working directory)."""
HEARTBEAT_SECONDS = 30
"""How often a running trial tells the storage it is alive."""
GRACE_SECONDS = 120
"""A running trial silent for this long is failed (its process died) and its parameters queued again."""
VALIDATION_TO_TEST = {"mnist-validation": "mnist-test"}
"""The set a tuned config is scored on when the study tuned on a validation set."""


class TuneConfig(BaseModel):
    """The options of ``constrained-diffusion tune`` (its flags)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a shipped model (mnist-ddpm, mnist-flow), a diffusers folder or a Hub id")
    data: str = Field(description="the tuning images: mnist-validation, an image folder or file")
    task: str = Field(description="box, top-half, random-box, free-form, sr4, sr8, style, or a registered constraint")
    method: str = Field(description="a recipe or solver name (its search space is declared with it)")
    trials: int = Field(ge=1, description="trials this run adds to the study")
    limit: int = Field(16, ge=1, description="images per trial (the first N of the set, sorted by id)")
    steps: int | None = Field(None, ge=1, description="denoising steps (default: the recipe's)")
    metric: str = Field("psnr", description="the per-image metric to optimise: psnr, ssim or lpips")
    storage: str = Field(DEFAULT_STORAGE, description="an Optuna storage URL (sqlite:///FILE.db, postgresql://...)")
    study: str | None = Field(None, description="the study's name (default: from model, data, task, method, metric, steps, limit)")
    timeout: float | None = Field(None, gt=0, description="stop adding trials after this many seconds")
    out_config: Path | None = Field(None, description="write the best trial as an evaluate --config YAML file")
    eval_data: str | None = Field(None, description="the image set the written config scores (default: mnist-validation -> mnist-test)")
    batch_size: int = Field(8, ge=1, description="images per batch (the pruner looks after each batch)")
    set: dict[str, Any] = Field(default_factory=dict, description="fixed overrides (taken out of the search space); task.KEY a task option")
    noise_std: float = Field(0.0, ge=0, description="measurement noise on the [-1, 1] scale")
    prompt: str | None = None
    style_image: Path | None = None
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    prune: bool = Field(True, description="median pruning over the images of a trial")
    quiet: bool = False


def import_optuna() -> Any:
    """``optuna``, or a one-line error saying how to install it."""
    try:
        import optuna
    except ImportError:  # pragma: no cover - depends on the environment
        raise ValueError("tune needs Optuna: pip install 'constrained_diffusion[tune]'") from None
    return optuna


def open_storage(url: str, heartbeat: int = HEARTBEAT_SECONDS, grace: int = GRACE_SECONDS) -> Any:
    """An Optuna RDB storage for ``url``, with heartbeats and retry of trials whose process died.

    SQLite files get their parent folder created and a 60 s lock timeout, so several processes
    can share one file. A running trial whose last heartbeat (every ``heartbeat`` seconds) is
    older than ``grace`` seconds is failed the next time any process asks for a trial, and its
    parameters are queued once more.

    Raises:
        ValueError: a URL that cannot be opened, naming ``--storage``.
    """
    optuna = import_optuna()
    from optuna import storages
    from optuna.storages import RDBStorage

    engine: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"--storage: cannot create the folder of {url} ({exc.strerror or exc})") from None
        if path.is_dir():
            raise ValueError(f"--storage: {path} is a folder, not a database file")
        engine = {"connect_args": {"timeout": 60}}
    import inspect
    import warnings

    if "heartbeat_stale_trial_callback" in inspect.signature(RDBStorage).parameters:  # Optuna >= 4.9
        retry, callback = "heartbeat_stale_trial_callback", storages.RetryHeartbeatStaleTrialCallback
    else:
        retry, callback = "failed_trial_callback", storages.RetryFailedTrialCallback
    import time

    for attempt in range(5):  # two processes creating one new database race on its schema: the loser retries
        try:
            with _quiet_optuna(optuna), warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=grace,
                                  **{retry: callback(max_retry=1)})
        except Exception as exc:  # SQLAlchemy raises many kinds: an unknown dialect, a driver, a locked or corrupt file
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            racing = type(exc).__name__ in ("OperationalError", "IntegrityError") and url.startswith("sqlite:///")
            if racing and attempt < 4:  # "table ... already exists", "UNIQUE constraint failed: alembic_version", locked
                time.sleep(0.5 * (attempt + 1))
                continue
            raise ValueError(f"--storage: cannot open {url} ({detail})") from None
    raise AssertionError("unreachable")  # pragma: no cover


class _quiet_optuna:
    """Optuna's INFO lines (one per trial) off while inside."""

    def __init__(self, optuna: Any) -> None:
        self.optuna, self.level = optuna, None

    def __enter__(self) -> None:
        self.level = self.optuna.logging.get_verbosity()
        self.optuna.logging.set_verbosity(self.optuna.logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self.optuna.logging.set_verbosity(self.level)


def _seeded_tpe(optuna: Any, seed: int, **options: Any) -> Any:
    """A TPE sampler whose random draws for trial ``n`` are seeded by ``(seed, n)`` (`TrialSeededTPE`)."""

    class TrialSeededTPE(optuna.samplers.TPESampler):
        """TPE, reseeded before each trial with ``(seed, trial number)``.

        Trial numbers are handed out by the storage, so two processes on one study get different
        random starting points, and one process gives the same trials run after run.
        """

        def before_trial(self, study: Any, trial: Any) -> None:
            s = image_seed(seed, str(trial.number), "tpe") % (2**32)
            for holder in (getattr(self, "_rng", None), getattr(getattr(self, "_random_sampler", None), "_rng", None)):
                if holder is not None and hasattr(holder, "rng"):
                    holder.rng.seed(s)
            super().before_trial(study, trial)

    return TrialSeededTPE(seed=seed, **options)


def default_study_name(cfg: TuneConfig) -> str:
    """``model/data/task/method/metric/steps/limit`` (folders of a model path reduced to its name)."""
    steps = cfg.steps if cfg.steps is not None else "default"
    return "/".join([Path(cfg.model).name or cfg.model, Path(cfg.data).name or cfg.data, cfg.task, cfg.method, cfg.metric,
                     f"steps={steps}", f"images={cfg.limit}"])


class Tuner(Configurable):
    """One ``tune`` run (see the module docstring): ``Tuner(**options).run()`` returns the study's summary.

    Examples:
        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     db = f"sqlite:///{pathlib.Path(tmp) / 'tune.db'}"
        ...     summary = Tuner(model="mnist-ddpm", data="mnist-validation", task="box", method="inexact-newton",
        ...                     trials=2, limit=2, steps=2, batch_size=2, storage=db, quiet=True).run()
        >>> best = summary["best"]
        >>> summary["complete"], sorted(best["params"])
        (2, ['inner_steps', 'solver.h', 'step_scale.0', 'step_scale.1'])
    """

    Config = TuneConfig

    # -- checks (no model, no images) ---------------------------------------------------------
    def space(self) -> SearchSpace:
        """The method's search space without the keys ``set`` fixes."""
        cfg: TuneConfig = self.config  # type: ignore[assignment]
        common, per, _ = split_set(cfg.set)
        if per:
            raise ValueError(f"--set: tune has one method; write KEY=VALUE, not {next(iter(per))}:KEY=VALUE")
        return method_space(cfg.method).without(common)

    def check(self) -> None:
        """Every bad option as a one-line ``ValueError`` naming the flag, before any model is loaded."""
        from constrained_diffusion.models.loading import parse_dtype

        cfg: TuneConfig = self.config  # type: ignore[assignment]
        if cfg.metric in DATASET:
            raise ValueError(f"--metric: {cfg.metric} is a set-level metric; tune optimises a per-image metric ({', '.join(PER_IMAGE)})")
        if cfg.metric not in PER_IMAGE:
            raise ValueError(f"--metric: unknown metric {cfg.metric!r}; expected one of {', '.join(PER_IMAGE)}")
        check_metrics([cfg.metric])
        parse_dtype(cfg.dtype)
        common, _, task_options = split_set(cfg.set)
        check_task(cfg.task, task_options, cfg.noise_std, cfg.style_image)
        space = self.space()
        if not space:
            declared = method_space(cfg.method)
            why = "it declares none" if not declared else f"--set fixes all of {', '.join(declared.keys())}"
            raise ValueError(f"--method {cfg.method}: empty search space ({why}); nothing to tune")
        resolve_recipe(cfg.method, {**self._fixed(), **join_pairs(_midpoints(space))})

    def _fixed(self) -> dict[str, Any]:
        cfg: TuneConfig = self.config  # type: ignore[assignment]
        common, _, _ = split_set(cfg.set)
        return {**({"steps": cfg.steps} if cfg.steps is not None else {}), **common}

    def context(self) -> dict[str, Any]:
        """What a study is about; a rerun with other values under the same study name is refused."""
        cfg: TuneConfig = self.config  # type: ignore[assignment]
        return {"model": cfg.model, "data": cfg.data, "task": cfg.task, "method": cfg.method, "metric": cfg.metric,
                "steps": cfg.steps, "limit": cfg.limit, "set": dict(sorted(cfg.set.items())), "noise_std": cfg.noise_std,
                "seed": cfg.seed, "dtype": cfg.dtype, "prompt": cfg.prompt, "style_image": str(cfg.style_image or ""),
                "space": self.space().describe()}

    # -- the study ----------------------------------------------------------------------------
    def open(self) -> Any:
        """The study (created, or loaded to continue it); refuses one made for other settings."""
        cfg: TuneConfig = self.config  # type: ignore[assignment]
        optuna = import_optuna()
        storage = open_storage(cfg.storage)
        name = cfg.study or default_study_name(cfg)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0) if cfg.prune else optuna.pruners.NopPruner()
        with _quiet_optuna(optuna):
            study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True, pruner=pruner,
                                        direction="maximize" if HIGHER_IS_BETTER[cfg.metric] else "minimize",
                                        sampler=_seeded_tpe(optuna, cfg.seed, n_startup_trials=10, multivariate=True))
        context = json.loads(json.dumps(self.context(), default=str))
        old = study.user_attrs.get("context")
        if old is None:
            study.set_user_attr("context", context)
        elif old != context:
            diff = sorted(k for k in set(old) | set(context) if old.get(k) != context.get(k))
            raise ValueError(f"--study {name!r} in {cfg.storage} was made with other settings (differs in: {', '.join(diff)}); "
                             "give another --study or the same settings")
        return study

    def run(self, log: Callable[[str], object] | None = None, total: int | None = None, complete: int | None = None,
            max_finished: int | None = None) -> dict[str, Any]:
        """Check, load the model and images, add ``trials`` trials, write ``out_config``; returns `summary`.

        Args:
            log: receives the summary lines (default: stderr).
            total: instead of adding ``trials``, stop once the study has this many finished
                (complete, pruned or failed) trials, counting those of every process sharing it.
            complete: instead of adding ``trials``, stop once the study has this many
                **complete** trials (pruned and failed ones do not count), counting those of
                every process sharing it; the fair budget of ``tune-study``.
            max_finished: with ``complete``, also stop once the study has this many finished
                trials (a method whose settings mostly fail cannot run forever).

        Raises:
            ValueError: a bad option, storage, model or image set, before any sampling.
        """
        say = log or (lambda line: print(line, file=sys.stderr))
        cfg: TuneConfig = self.config  # type: ignore[assignment]
        self.check()
        study = self.open()
        problems = self._problems()
        before = len(study.trials)
        n_trials, stops, bar_total = self._budget(study, total, complete, max_finished)
        self._optimize(study, problems, n_trials, stops, bar_total)
        summary = self.summary(study)
        summary["added"] = len(study.trials) - before
        if cfg.out_config is not None and summary["best"] is not None:
            self.write_config(study, cfg.out_config)
        if not cfg.quiet:
            say(format_summary(summary))
        return summary

    def _budget(self, study: Any, total: int | None, complete: int | None,
                max_finished: int | None) -> tuple[int | None, list[Any], int | None]:
        """Trials to ask Optuna for (``None``: until a stop callback), the stop callbacks, the progress bar's total (``None``: ``trials``)."""
        cfg: TuneConfig = self.config  # type: ignore[assignment]
        optuna = import_optuna()
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        if total is not None:
            n_trials = max(0, total - sum(t.state in finished for t in study.trials))
            return n_trials, [optuna.study.MaxTrialsCallback(total, states=finished)], n_trials
        if complete is not None:
            done = count_trials(study)
            n_trials = 0 if done["complete"] >= complete or (max_finished is not None and done["finished"] >= max_finished) else None
            return n_trials, [_stop_at(complete, max_finished)], max(0, complete - done["complete"])
        return cfg.trials, [], None

    def _optimize(self, study: Any, problems: list[tuple[list[str], torch.Tensor, Any]], n_trials: int | None, stops: list[Any],
                  bar_total: int | None) -> None:
        """Run ``n_trials`` trials under a progress bar and Optuna's logging quieted; a diverged setting fails only its trial."""
        from tqdm.auto import tqdm

        cfg: TuneConfig = self.config  # type: ignore[assignment]
        optuna = import_optuna()
        bar = tqdm(total=cfg.trials, desc=f"tune {cfg.method}", unit="trial", disable=cfg.quiet, leave=False)

        def tick(study: Any, trial: Any) -> None:
            bar.update(1)
            best = _best(study)
            if best is not None:
                bar.set_postfix({f"best {cfg.metric}": f"{best.value:.3f}"})

        if bar_total is not None:
            bar.total = bar_total
        try:
            with _quiet_optuna(optuna):
                if n_trials is None or n_trials:
                    study.optimize(lambda trial: self._objective(trial, problems), n_trials=n_trials, timeout=cfg.timeout,
                                   catch=(ValueError, FloatingPointError, torch.OutOfMemoryError, OutOfMemoryError), callbacks=[tick, *stops])
        finally:
            bar.close()

    def _problems(self) -> list[tuple[list[str], torch.Tensor, Any]]:
        """``(ids, truth, constraint)`` per batch of the first ``limit`` images: the same in every trial."""
        cfg: TuneConfig = self.config  # type: ignore[assignment]
        model = load_denoiser(cfg.model, cfg.device, cfg.dtype)
        check_prompts(model, cfg.model, [], prompt=cfg.prompt)
        self._model = model
        images, ids = open_set(cfg.data, pixel_resolution(model), cfg.limit)
        _, _, task_options = split_set(cfg.set)
        spec = TaskSpec(cfg.task, cfg.seed, cfg.noise_std, task_options, cfg.style_image)
        return [(chunk, truth, problem.constraint) for chunk, truth, problem in problem_batches(images, ids, cfg.batch_size, spec, cfg.device)]

    def _objective(self, trial: Any, problems: list[tuple[list[str], torch.Tensor, Any]]) -> float:
        cfg: TuneConfig = self.config  # type: ignore[assignment]
        optuna = import_optuna()
        values = self.space().suggest(trial)
        try:
            recipe = resolve_recipe(cfg.method, {**self._fixed(), **join_pairs(values)})
        except ValueError as exc:
            trial.set_user_attr("error", str(exc))
            raise
        model = self._model
        if hasattr(model, "condition"):
            model = recipe.condition(model, cfg.prompt or "")
        scorer = PerImage([cfg.metric])
        scores: list[float] = []
        nfe = nbe = 0
        seconds = 0.0
        for ids, truth, constraint in problems:
            try:
                run = sample_batch(model, recipe, constraint, ids, cfg.seed, cfg.device)
            except Exception as exc:  # the setting diverged or does not fit (CUDA's OutOfMemoryError or the CPU allocator's)
                if not isinstance(exc, (ValueError, FloatingPointError)) and not is_out_of_memory(exc):
                    raise
                trial.set_user_attr("error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                if is_out_of_memory(exc) and not isinstance(exc, torch.OutOfMemoryError):
                    raise out_of_memory(exc, f"images {ids[0]}..{ids[-1]} of trial {trial.number}", cfg.batch_size) from exc
                raise
            batch = scorer(run.outputs, truth)[cfg.metric].tolist()
            if not all(math.isfinite(v) for v in batch):
                trial.set_user_attr("error", f"non-finite {cfg.metric} on images {ids}")
                raise FloatingPointError(f"trial {trial.number}: non-finite {cfg.metric}")
            scores += batch
            nfe, nbe, seconds = nfe + run.result.nfe * len(ids), nbe + run.result.nbe * len(ids), seconds + run.seconds
            mean = sum(scores) / len(scores)
            trial.report(mean, step=len(scores))
            if trial.should_prune():
                trial.set_user_attr("images", len(scores))
                raise optuna.TrialPruned(f"{cfg.metric} {mean:.3f} after {len(scores)} images")
        n = len(scores)
        mean = sum(scores) / n
        sem = math.sqrt(sum((v - mean) ** 2 for v in scores) / (n - 1) / n) if n > 1 else float("nan")
        trial.set_user_attr("metric", cfg.metric)
        trial.set_user_attr("sem", sem)
        trial.set_user_attr("images", n)
        trial.set_user_attr("nfe", nfe / n)
        trial.set_user_attr("nbe", nbe / n)
        trial.set_user_attr("seconds_per_image", seconds / n)
        trial.set_user_attr("overrides", json.loads(json.dumps(join_pairs(values))))
        return mean

    # -- results ------------------------------------------------------------------------------
    def summary(self, study: Any) -> dict[str, Any]:
        """Counts by state, and the best trial's number, value, parameters and cost (``None`` before any completes)."""
        cfg: TuneConfig = self.config  # type: ignore[assignment]
        states: dict[str, int] = {}
        for t in study.trials:
            states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        best = _best(study)
        return {"study": study.study_name, "storage": cfg.storage, "metric": cfg.metric, "trials": len(study.trials),
                **{k: states.get(k, 0) for k in ("complete", "pruned", "fail", "running")},
                "best": None if best is None else {"number": best.number, "value": best.value, "params": dict(best.params),
                                                   "overrides": best.user_attrs.get("overrides"), "sem": best.user_attrs.get("sem"),
                                                   "nfe": best.user_attrs.get("nfe"), "nbe": best.user_attrs.get("nbe"),
                                                   "seconds_per_image": best.user_attrs.get("seconds_per_image")}}

    def best_overrides(self, study: Any) -> dict[str, Any]:
        """The best trial's method overrides (the fixed ``set`` values included)."""
        cfg: TuneConfig = self.config  # type: ignore[assignment]
        best = _best(study)
        if best is None:
            raise ValueError(f"study {study.study_name!r} has no complete trial yet")
        common, _, _ = split_set(cfg.set)
        return {**common, **join_pairs(best.params)}

    def write_config(self, study: Any, path: Path) -> Path:
        """The best trial as an ``evaluate --config`` YAML file at ``path``; returns it."""
        import yaml

        cfg: TuneConfig = self.config  # type: ignore[assignment]
        best = _best(study)
        overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in self.best_overrides(study).items()}
        _, _, task_options = split_set(cfg.set)
        data = cfg.eval_data or VALIDATION_TO_TEST.get(cfg.data.split(":stratified-")[0], cfg.data)  # a stratified subset too
        doc: dict[str, Any] = {
            "description": (f"best of study {study.study_name!r} ({cfg.storage}): trial {best.number}, {cfg.metric} "
                            f"{best.value:.4f} on {cfg.limit} images of {cfg.data}; written by constrained-diffusion tune"),
            "model": cfg.model, "data": data, "task": cfg.task,
            "method": [{"name": cfg.method, "label": f"{cfg.method} (tuned)", "set": overrides}],
            **({"steps": cfg.steps} if cfg.steps is not None else {}),
            **({"set": {f"task.{k}": v for k, v in task_options.items()}} if task_options else {}),
            "metrics": sorted({cfg.metric, "psnr", "ssim"}), "noise_std": cfg.noise_std, "seed": cfg.seed,
            "dtype": cfg.dtype, "out": f"runs/tuned/{safe_name(study.study_name)}",
        }
        if cfg.prompt is not None:
            doc["prompt"] = cfg.prompt
        if cfg.style_image is not None:
            doc["style_image"] = str(cfg.style_image)
        path = Path(path)
        header = "# constrained-diffusion evaluate --config " + str(path) + "\n"
        if data == cfg.data:
            header += "# NOTE: this scores the images the study was tuned on; give --eval-data for a held-out set\n"
        return write_text(path, header + yaml.safe_dump(doc, sort_keys=False))


def count_trials(study: Any) -> dict[str, int]:
    """The study's trials by state: ``complete``, ``pruned``, ``fail``, ``running`` and ``finished`` (the first three)."""
    states = {"complete": 0, "pruned": 0, "fail": 0, "running": 0, "waiting": 0}
    for t in study.get_trials(deepcopy=False):
        key = t.state.name.lower()
        states[key] = states.get(key, 0) + 1
    return {**states, "finished": states["complete"] + states["pruned"] + states["fail"]}


def _stop_at(complete: int, max_finished: int | None) -> Callable[[Any, Any], None]:
    """An Optuna callback that stops the study (in every process sharing it) at ``complete`` complete trials, or ``max_finished`` finished ones."""

    def callback(study: Any, trial: Any) -> None:
        done = count_trials(study)
        if done["complete"] >= complete or (max_finished is not None and done["finished"] >= max_finished):
            study.stop()

    return callback


def _best(study: Any) -> Any:
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and t.value is not None]
    if not complete:
        return None
    sign = 1 if study.direction.name == "MAXIMIZE" else -1
    return max(complete, key=lambda t: (sign * t.value, -t.number))


def _midpoints(space: SearchSpace) -> dict[str, Any]:
    """A value inside every range (to check that the method accepts the space's settings)."""
    out: dict[str, Any] = {}
    for key, p in space.items():
        if isinstance(p, Float):
            out[key] = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
        elif isinstance(p, Int):
            out[key] = (p.low + p.high) // 2
        elif isinstance(p, Choice):
            out[key] = p.choices[0]
    return out


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines: the study, its counts and the best trial."""
    lines = [f"study {summary['study']} ({summary['storage']}): {summary['trials']} trials, {summary['complete']} complete, "
             f"{summary['pruned']} pruned, {summary['fail']} failed"]
    best = summary.get("best")
    if best:
        lines.append(f"best: trial {best['number']}, {summary['metric']} {best['value']:.4f}"
                     + (f" ± {best['sem']:.4f}" if best.get("sem") is not None else "")
                     + (f", NFE {best['nfe']:.0f}" if best.get("nfe") is not None else "")
                     + f": {json.dumps(best['overrides'] or best['params'])}")
    return "\n".join(lines)
