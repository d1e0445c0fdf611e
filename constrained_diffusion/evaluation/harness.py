"""The evaluation harness: model x image set x task x methods -> one JSON record per (image, method).

`Evaluation` is what ``constrained-diffusion evaluate`` runs. Its options (`EvaluationConfig`)
are the command's flags and the fields of a ``--config`` YAML file. A run

1. checks everything that can be wrong before any sampling: the task, each method (a recipe or
   a solver name, with its ``set`` overrides), the metrics and their offline weights, the
   noise, the prompts file; loads the model; scans the image set (a corrupt file of a folder
   is reported and skipped; an image smaller than the model's resolution is an error);
2. deals the images to the processes (`Ranks.shard`) and, batch by batch, builds each image's
   observation and initial noise once (`make_problem`; both seeded by the image's id, see
   `image_seed`) and runs every method on them; each finished batch appends one record per
   (image, method) to the process's records file and writes
   ``images/<method>/<settings>/<id>.png`` (the record's ``file``);
3. on rank 0, after every rank is done, merges the rank files into ``records.jsonl`` and
   writes the report (`constrained_diffusion.evaluation.report`): ``summary.md``,
   ``summary.json``, ``grid.png``, ``pareto.svg``, with FID/KID over the whole set.

A rerun of the same command skips every (image, method) already recorded under the same
settings hash, whichever process wrote it and however many there were, once it has checked
that the image the record names exists and decodes (a record whose image is missing or
damaged is dropped and computed again). The settings hash covers every option that changes
the numbers, the batch size included, so a rerun with other settings writes new records and
new files beside the old ones and never overwrites them; each run's report is also kept under
``reports/<run hash>/``. Every path is built from `safe_name` parts and checked to stay under
``out`` (`constrained_diffusion.utils.paths.under`).

Seeding rule: image ``id`` under run seed ``s`` draws its initial noise ``x_T`` from
``image_seed(s, id, "noise")``, its masks from ``"mask"``, its measurement noise from
``"observation"`` and the sampler's per-step noise from ``"steps"``. Nothing depends on the
batch, the rank or the number of processes, so per-image results are those of a single
process (up to the floating-point effect of batching on the network's kernels).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from constrained_diffusion.configurable import Configurable
from constrained_diffusion.errors import UsageError, is_out_of_memory, out_of_memory
from constrained_diffusion.evaluation.distributed import Ranks
from constrained_diffusion.evaluation.image_tasks import check_task, generators, make_problem
from constrained_diffusion.evaluation.scores import PerImage, check_metrics
from constrained_diffusion.recipes import Recipe
from constrained_diffusion.recipes.overrides import resolve_recipe, split_set
from constrained_diffusion.utils.jsonl_store import JsonlStore, lock_path
from constrained_diffusion.utils.paths import safe_name, under
from constrained_diffusion.utils.safe_io import ensure_folder

KEY_FIELDS = ("image", "method", "settings")
"""What identifies a record: the image id, the method's label and the settings hash."""

RECORDS = "records.jsonl"
RANK_RECORDS = "records.rank{rank}.jsonl"


class MethodSpec(BaseModel):
    """One method of a run: a recipe or solver ``name``, a ``label`` and its own overrides."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="a recipe (cd.recipes.names()) or a solver (cd.solvers.names()) name")
    label: str | None = Field(None, description="how records, images and tables name it (default: the name)")
    set: dict[str, Any] = Field(default_factory=dict, description="SamplerConfig fields or recipe options; 'solver.h' nests")

    @property
    def key(self) -> str:
        """The label, or the name."""
        return self.label or self.name


class EvaluationConfig(BaseModel):
    """The options of an evaluation run (the command's flags; the fields of ``--config`` YAML)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a shipped model (mnist-ddpm, mnist-flow), a diffusers folder or a Hub id")
    data: str = Field(description="an image folder, an image file or a shipped set (mnist-held-out, mnist-validation, mnist-test)")
    task: str = Field(description="box, top-half, random-box, free-form, sr4, sr8, style, or a registered constraint")
    method: list[MethodSpec] = Field(min_length=1, description="the methods; they share observations and initial noise")
    out: Path = Field(description="the output folder (records.jsonl, images/, summary.md, grid.png, pareto.svg)")
    limit: int | None = Field(None, ge=1, description="evaluate the first N images (sorted by id)")
    batch_size: int = Field(4, ge=1, description="images per batch")
    steps: int | None = Field(None, ge=1, description="denoising steps of every method (default: each recipe's)")
    set: dict[str, Any] = Field(default_factory=dict, description="overrides of every method; 'task.KEY' sets a task option")
    metrics: list[str] = Field(default_factory=lambda: ["psnr", "ssim"], description="psnr ssim lpips fid kid")
    noise_std: float = Field(0.0, description="Gaussian measurement noise on the observation, [-1, 1] pixel scale")
    prompts: Path | None = Field(None, description="JSON or CSV: image id -> caption (text-conditioned models)")
    prompt: str | None = Field(None, description="one caption for every image of a text-conditioned model (default '')")
    style_image: Path | None = Field(None, description="the style task's reference image")
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    fid_features: str | None = Field(None, description="inception (default), mnist-classifier or module:Class")
    feature_weights: Path | None = Field(None, description="folder with feature-network weights (torch hub layout)")
    quiet: bool = False

    @field_validator("method", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        if isinstance(value, (str, Mapping)):
            value = [value]
        return [{"name": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value


def read_prompts(path: str | os.PathLike[str]) -> dict[str, str]:
    """Captions by image id from a JSON object ``{id: text}`` or a CSV with columns ``image,text`` (header optional).

    Raises:
        ValueError: a file that is neither, naming ``--prompts``.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"--prompts: {p} does not exist")
    text = p.read_text()
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--prompts: {p} is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"--prompts: {p} must hold a JSON object mapping image ids to captions")
        return {str(k): v for k, v in data.items()}
    import csv

    rows = list(csv.reader(text.splitlines()))
    if rows and [c.strip().lower() for c in rows[0][:2]] in (["image", "text"], ["id", "text"], ["image", "prompt"]):
        rows = rows[1:]
    if any(len(r) < 2 for r in rows if r):
        raise ValueError(f"--prompts: every CSV row of {p} needs two columns, image id and caption")
    return {r[0]: r[1] for r in rows if r}


def pixel_resolution(model: Any) -> tuple[int, int, int]:
    """``(C, H, W)`` of the model's images: its sample shape in pixel space, the decoded size otherwise."""
    if model.codec is None:
        if len(model.sample_shape) != 3:
            raise ValueError(f"--model: the harness needs image models (C, H, W), got sample shape {model.sample_shape}")
        return tuple(model.sample_shape)  # type: ignore[return-value]
    if getattr(model, "height", None) and getattr(model, "width", None):
        return (3, int(model.height), int(model.width))
    with torch.no_grad():
        z = torch.zeros(1, *model.sample_shape, device=model.device, dtype=model.dtype)
        return tuple(model.codec.decode(z).shape[1:])  # type: ignore[return-value]


def settings_hash(parts: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``parts`` as sorted JSON (non-JSON values as strings)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def image_file(out: Path, label: str, image_id: str, settings: str | None = None) -> Path:
    """``out/images/<label>/<settings>/<image id>.png``, every part a `safe_name` (``settings=None``: the layout before 0.x, without it).

    An id's ``/`` keeps its sub-folders (ids of image folders are relative paths).

    Raises:
        UsageError: the path would leave ``out`` (it cannot once the parts are safe names).
    """
    parts = [safe_name(p) for p in str(image_id).split("/")]
    parts[-1] += ".png"
    return under(out, "images", safe_name(label), *([safe_name(settings)] if settings is not None else []), *parts,
                 option="--method")


def record_file(out: Path, record: Mapping[str, Any]) -> Path:
    """The image file a record names: its ``file`` (relative to ``out``), or where records without one kept it."""
    if record.get("file"):
        return under(out, str(record["file"]), option="records.jsonl")
    return image_file(out, str(record["method"]), str(record["image"]))


def image_ok(path: Path) -> bool:
    """Whether ``path`` exists and is a whole image (PIL's ``verify``: the chunks and their checksums)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
    except Exception:  # missing, empty, cut short, not an image: all mean "compute it again"
        return False
    return True


@dataclass
class Method:
    """A resolved method: its label, recipe and settings hash."""

    label: str
    recipe: Recipe
    settings: str
    observation: str = ""
    """The hash of what makes the observation (task, its options, data, seed, noise, resolution): its images' folder."""


def records_files(out: Path) -> list[Path]:
    """``records.jsonl`` and any per-rank files of an earlier or running multi-process run."""
    return [out / RECORDS, *sorted(out.glob("records.rank*.jsonl"))]


def done_keys(out: Path) -> set[tuple]:
    """The keys recorded in any records file under ``out``."""
    keys: set[tuple] = set()
    for path in records_files(out):
        if path.exists():
            keys |= JsonlStore(path, KEY_FIELDS).done_keys()
    return keys


def check_outputs(out: Path, methods: list[Method], ids: list[str]) -> int:
    """Drop the records of ``methods`` on ``ids`` whose image is missing or does not decode (`image_ok`); returns how many.

    A kill from before the writes were atomic, a full disk or a hand-deleted file leaves such a
    record; dropping it makes the run compute the image (and its record) again.
    """
    wanted = {(i, m.label, m.settings) for m in methods for i in ids}
    dropped = 0
    for path in records_files(out):
        if not path.exists():
            continue
        store = JsonlStore(path, KEY_FIELDS)
        bad = [store.key(r) for r in store if store.key(r) in wanted and not image_ok(record_file(out, r))]
        dropped += store.discard(bad) if bad else 0
    return dropped


def merge_records(out: Path) -> int:
    """Append the per-rank records missing from ``records.jsonl``, then remove the rank files; returns how many."""
    store = JsonlStore(out / RECORDS, KEY_FIELDS)
    added = 0
    for path in sorted(out.glob("records.rank*.jsonl")):
        for record in JsonlStore(path, KEY_FIELDS):
            added += store.add(record)
        path.unlink()
        lock_path(path).unlink(missing_ok=True)  # every rank is done (merge runs after the barrier): nobody waits on it
    return added


class Evaluation(Configurable):
    """An evaluation run (see the module docstring); ``Evaluation(**options).run()``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as out:
        ...     summary = Evaluation(model="mnist-ddpm", data="mnist-test", task="box", method=["inexact-newton"],
        ...                          limit=2, batch_size=2, steps=2, out=out, quiet=True).run()
        >>> (row,) = summary["methods"]
        >>> row["method"], row["n"]
        ('inexact-newton', 2)
    """

    Config = EvaluationConfig

    def _methods(self, resolution: tuple[int, ...] | None, prompts_digest: str) -> tuple[list[Method], dict[str, Any]]:
        cfg: EvaluationConfig = self.config  # type: ignore[assignment]
        common, per, task_options = split_set(cfg.set)
        labels = [m.key for m in cfg.method]
        for label in labels:
            if labels.count(label) > 1:
                raise ValueError(f"--method: {label!r} is given twice; label one of them differently (method: [{{name: ..., label: ...}}])")
        for label in per:
            if label not in labels:
                raise ValueError(f"--set {label}:...: no method is labelled {label!r} (methods: {', '.join(labels)})")
        folders: dict[str, str] = {}
        for label in labels:
            other = folders.setdefault(safe_name(label), label)
            if other != label:
                raise UsageError(f"--method: labels {other!r} and {label!r} give the same folder name {safe_name(label)!r}; "
                                 "label one of them differently")
        observation = settings_hash({"model": cfg.model, "data": cfg.data, "task": cfg.task, "task_options": task_options,
                                     "style_image": cfg.style_image, "seed": cfg.seed, "noise_std": cfg.noise_std,
                                     "resolution": resolution})
        methods = []
        for spec in cfg.method:
            overrides = {**({"steps": cfg.steps} if cfg.steps is not None else {}), **common, **per.get(spec.key, {}), **spec.set}
            recipe = resolve_recipe(spec.name, overrides)
            parts = {"model": cfg.model, "data": cfg.data, "task": cfg.task, "task_options": task_options,
                     "style_image": cfg.style_image, "recipe": recipe.name, "config": recipe.config.model_dump(),
                     "options": dict(recipe.options), "latent": recipe.latent, "spacing": recipe.timestep_spacing,
                     "guidance": getattr(recipe, "guidance_scale", None),
                     "seed": cfg.seed, "noise_std": cfg.noise_std, "resolution": resolution, "dtype": cfg.dtype,
                     "prompts": prompts_digest, "batch_size": cfg.batch_size}
            methods.append(Method(spec.key, recipe, settings_hash(parts), observation))
        return methods, task_options

    def check(self) -> None:
        """Everything that needs neither the model nor the images (a one-line ``ValueError`` naming the flag)."""
        cfg: EvaluationConfig = self.config  # type: ignore[assignment]
        from constrained_diffusion.models.loading import parse_dtype

        parse_dtype(cfg.dtype)
        _, _, task_options = split_set(cfg.set)
        check_task(cfg.task, task_options, cfg.noise_std, cfg.style_image)
        check_metrics(cfg.metrics, cfg.fid_features, cfg.feature_weights)
        self._methods(None, "")
        if cfg.prompts is not None:
            read_prompts(cfg.prompts)
        if cfg.style_image is not None and not Path(cfg.style_image).is_file():
            raise ValueError(f"--style-image: {cfg.style_image} does not exist")

    def run(self, log: Callable[[str], object] | None = None) -> dict[str, Any]:
        """Fill the records, then (rank 0) merge and report; returns the summary (`report.summarise`; ``{}`` on other ranks).

        Raises:
            ValueError: a bad option, model, image set or prompts file, before any sampling.
        """
        cfg: EvaluationConfig = self.config  # type: ignore[assignment]
        say = log or (lambda line: print(line, file=sys.stderr))
        self.check()
        ranks = Ranks.from_env(cfg.device)
        try:
            return self._run(cfg, ranks, say)
        finally:
            ranks.close()

    def _run(self, cfg: EvaluationConfig, ranks: Ranks, say: Callable[[str], object]) -> dict[str, Any]:
        from constrained_diffusion.data.images import load_available, open_images
        from constrained_diffusion.denoisers import Denoiser
        from constrained_diffusion.evaluation import report
        from constrained_diffusion.models.loading import load

        device = ranks.device(cfg.device)
        model = load(cfg.model, device, cfg.dtype)
        if not isinstance(model, Denoiser):
            raise ValueError(f"--model: {cfg.model!r} is not a diffusion or flow model ({type(model).__name__})")
        resolution = pixel_resolution(model)
        prompts = read_prompts(cfg.prompts) if cfg.prompts is not None else None
        images = open_images(cfg.data, resolution, report=say if ranks.rank == 0 else (lambda _: None))
        ids = images.ids[: cfg.limit] if cfg.limit is not None else list(images.ids)
        if prompts is not None:
            missing = [i for i in ids if i not in prompts]
            if missing:
                raise ValueError(f"--prompts: {cfg.prompts} has no caption for {len(missing)} of the {len(ids)} images "
                                 f"(first: {missing[0]!r})")
        if prompts is not None and cfg.prompt is not None:
            raise ValueError("--prompt and --prompts: give one caption for all images or a file of them, not both")
        if cfg.prompt is not None and not hasattr(model, "condition"):
            raise ValueError(f"--prompt: the model {cfg.model!r} takes no text")
        if prompts is not None and not hasattr(model, "condition"):
            raise ValueError(f"--prompts: the model {cfg.model!r} takes no text")
        self._bound: dict[str, Any] = {}
        digest = settings_hash(prompts) if prompts is not None else (cfg.prompt or "")
        methods, task_options = self._methods(resolution, digest)
        scorer = PerImage(cfg.metrics, cfg.feature_weights)

        out = ensure_folder(cfg.out, "--out")
        mine = ranks.shard(ids)
        redo = check_outputs(out, methods, mine)
        if redo:
            say(f"{out}: {redo} record(s) name an image that is missing or damaged; computing them again")
        done = done_keys(out)
        store = JsonlStore(out / (RECORDS if ranks.world == 1 else RANK_RECORDS.format(rank=ranks.rank)), KEY_FIELDS)
        todo_sets = {m.label: {i for i in mine if (i, m.label, m.settings) not in done} for m in methods}
        pending = [i for i in mine if any(i in todo_sets[m.label] for m in methods)]
        first = cfg.metrics[0] if cfg.metrics and cfg.metrics[0] in scorer.metrics else None
        running: list[float] = []
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pending), desc=f"evaluate {cfg.task}", unit="image", disable=cfg.quiet or ranks.rank != 0,
                   leave=False)
        for start in range(0, len(pending), cfg.batch_size):
            listed = pending[start:start + cfg.batch_size]
            truth_cpu, batch = load_available(images, listed)  # decoded now; an unreadable file is reported and left out
            if truth_cpu is None:
                bar.update(len(listed))
                continue
            store.reload()  # another process on the same --out may have done some of them meanwhile
            for m in methods:
                rows = [k for k, i in enumerate(batch) if i in todo_sets[m.label] and (i, m.label, m.settings) not in store]
                if not rows:
                    continue
                sub = [batch[k] for k in rows]
                try:
                    records = self._sample(cfg, model, m, sub, truth_cpu[rows], prompts, task_options, scorer, device, out)
                except Exception as exc:
                    if is_out_of_memory(exc):
                        raise out_of_memory(exc, f"images {sub[0]}..{sub[-1]} ({len(sub)}) of method {m.label!r}",
                                            cfg.batch_size) from exc
                    raise
                for r in records:
                    r["rank"] = ranks.rank
                    store.add(r)  # a record another process wrote meanwhile is kept, not doubled
                if first is not None and m is methods[0]:
                    running += [r[first] for r in records]
            bar.update(len(listed))
            if running:
                bar.set_postfix({f"{methods[0].label} {first}": f"{sum(running) / len(running):.3f}"})
        bar.close()
        ranks.barrier()
        if ranks.rank != 0:
            return {}
        merge_records(out)
        unreadable = {s.id for s in images.skipped}
        return report.write_report(cfg, methods, [i for i in ids if i not in unreadable], images, resolution, say)

    def _conditioned(self, model: Any, m: Method, captions: list[str] | None, prompt: str | None) -> Any:
        """``model`` with the captions (or the one prompt, default ``""``) bound at the method's guidance scale.

        Models without text (``condition``) are returned as they are; one bound copy per method is
        kept when every image shares the prompt.
        """
        if not hasattr(model, "condition"):
            return model
        bind = lambda text: m.recipe.condition(model, text)  # noqa: E731
        if captions is not None:
            return bind(captions)
        if m.label not in self._bound:
            self._bound[m.label] = bind(prompt or "")
        return self._bound[m.label]

    def _sample(self, cfg: EvaluationConfig, model: Any, m: Method, ids: list[str], truth: torch.Tensor,
                prompts: dict[str, str] | None, task_options: dict[str, Any], scorer: PerImage, device: str,
                out: Path) -> list[dict[str, Any]]:
        """Run method ``m`` on one batch; write its images and the observation; return its records."""
        from constrained_diffusion.utils.images import save_png, to_uint8

        problem = make_problem(cfg.task, truth.to(device), ids, cfg.seed, cfg.noise_std, task_options, cfg.style_image)
        for k, i in enumerate(ids):
            path = image_file(out, "observation", i, m.observation)
            if not image_ok(path):
                save_png(path, to_uint8(problem.observation[k]))
        den = self._conditioned(model, m, [prompts[i] for i in ids] if prompts is not None else None, cfg.prompt)
        run = sample_batch(den, m.recipe, problem.constraint, ids, cfg.seed, device)
        scores = scorer(run.outputs, truth)
        records = []
        for k, i in enumerate(ids):
            path = save_png(image_file(out, m.label, i, m.settings), to_uint8(run.outputs[k]))
            rec: dict[str, Any] = {"image": i, "method": m.label, "settings": m.settings, "recipe": m.recipe.name,
                                   "file": path.relative_to(out).as_posix(),
                                   "observation": image_file(out, "observation", i, m.observation).relative_to(out).as_posix(),
                                   **{name: float(v[k]) for name, v in scores.items()},
                                   "residual": float(run.residual[k]) if run.residual is not None else None,
                                   "nfe": run.result.nfe, "nbe": run.result.nbe, "seconds": run.seconds / len(ids),
                                   "batch": len(ids), "batch_size": cfg.batch_size, "peak_mb": round(run.peak_mb, 1), "device": device,
                                   "dtype": str(model.dtype).removeprefix("torch."),
                                   "steps": m.recipe.config.steps, "resolution": list(truth.shape[1:]), "task": cfg.task,
                                   "noise_std": cfg.noise_std, "noise_scale": "[-1, 1] pixels", "seed": cfg.seed}
            records.append(rec)
        return records


@dataclass
class BatchRun:
    """What `sample_batch` returns for a batch of ``B`` images.

    Attributes:
        outputs: the samples ``(B, C, H, W)``, float32 on the CPU, clamped to ``[-1, 1]``.
        result: the sampler's `SampleResult` (NFE, NBE, residual history).
        residual: the final residual per image ``(B,)`` (float32, CPU), ``None`` if not tracked.
        seconds: wall-clock seconds of the whole batch.
        peak_mb: peak memory of the run (`PeakMemory`).
    """

    outputs: torch.Tensor
    result: Any
    residual: torch.Tensor | None
    seconds: float
    peak_mb: float


def sample_batch(denoiser: Any, recipe: Recipe, constraint: Any, ids: list[str], seed: int, device: str) -> BatchRun:
    """Run ``recipe`` on one batch under the harness's seeding rule (the module docstring).

    The initial noise of image ``id`` is drawn from ``image_seed(seed, id, "noise")`` and the
    sampler's per-step noise from ``"steps"``, so an image's sample does not depend on the
    batch it is in (up to the network's batched kernels). Used by `Evaluation` and by
    ``constrained-diffusion tune``.

    Args:
        denoiser: the model, already conditioned (a prompt bound) where it takes text.
        recipe: the method.
        constraint: the pixel-space constraint of the batch (`make_problem`); the recipe
            adapts it to latent models.
        ids: the images' ids, one per sample.
        seed: the run seed.
        device: where to sample.
    """
    from constrained_diffusion.metrics.memory import PeakMemory
    from constrained_diffusion.sampling import randn

    x_T = randn(len(ids), denoiser.sample_shape, generators(seed, ids, "noise"), torch.device(device), denoiser.dtype)
    sampler = recipe.sampler(denoiser)
    try:
        adapted = recipe.constraint(constraint, sampler.denoiser)
    except TypeError as exc:  # the method cannot take this task's constraint (a user's choice, not a bug)
        raise UsageError(f"--method {recipe.name} with this --task: {exc}") from None
    start = time.perf_counter()
    with PeakMemory(device) as peak:
        result = sampler.sample(adapted, x_T=x_T, generator=generators(seed, ids, "steps"), progress=False)
    seconds = time.perf_counter() - start
    residual = result.final_residual.float().cpu() if result.final_residual is not None else None
    return BatchRun(result.images.float().cpu().clamp(-1, 1), result, residual, seconds, peak.megabytes)
