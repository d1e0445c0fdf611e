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

This module is the run loop. Its rooms: the options (`constrained_diffusion.evaluation.config`),
the methods resolved from them (`.methods`), the captions (`.prompts`), the model, images and
problems (`.problems`, shared with ``tune``), one method on one batch (`.batch`), the records
and their files (`.records`, shared with the report) and the report (`.report`). Their public
names are importable from here as well.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from constrained_diffusion.configurable import Configurable
from constrained_diffusion.data.images import labelled, shipped_labels
from constrained_diffusion.errors import UsageError, is_out_of_memory, out_of_memory
from constrained_diffusion.evaluation import report
from constrained_diffusion.evaluation.batch import BatchRun, sample_batch
from constrained_diffusion.evaluation.config import EvaluationConfig, MethodSpec
from constrained_diffusion.evaluation.distributed import Ranks
from constrained_diffusion.evaluation.image_tasks import check_task, generators, make_problem, noise_generators
from constrained_diffusion.evaluation.methods import Method, resolve_methods
from constrained_diffusion.evaluation.problems import TaskSpec, load_denoiser, open_set, pixel_resolution
from constrained_diffusion.evaluation.prompts import check_prompts, read_prompts
from constrained_diffusion.evaluation.records import (
    KEY_FIELDS,
    RANK_RECORDS,
    RECORDS,
    check_outputs,
    done_keys,
    image_file,
    image_ok,
    merge_records,
    record_file,
    records_files,
    records_store,
    settings_hash,
)
from constrained_diffusion.evaluation.scores import PerImage, check_metrics
from constrained_diffusion.recipes import Recipe
from constrained_diffusion.recipes.overrides import resolve_recipe, split_set
from constrained_diffusion.utils.jsonl_store import JsonlStore, lock_path
from constrained_diffusion.utils.paths import safe_name, under
from constrained_diffusion.utils.precision import precision_context
from constrained_diffusion.utils.safe_io import ensure_folder

__all__ = [  # the run loop, and the names defined here before the harness was split into rooms (still importable from here)
    "KEY_FIELDS", "RANK_RECORDS", "RECORDS", "BatchRun", "Evaluation", "EvaluationConfig", "JsonlStore", "Method", "MethodSpec",
    "Recipe", "UsageError", "check_outputs", "check_task", "done_keys", "generators", "image_file", "image_ok", "lock_path",
    "make_problem", "merge_records", "pixel_resolution", "read_prompts", "record_file", "records_files", "resolve_recipe",
    "safe_name", "sample_batch", "settings_hash", "split_set", "under",
]


def torch_modules(model: Any) -> torch.nn.ModuleList:
    """Every ``nn.Module`` the model holds (its network, UNet or transformer, and its codec's VAE), as one list.

    One `ModuleList`, so that a module held twice (a compiled wrapper and the module it wraps)
    is visited once by `precision_context`.
    """
    holders = [model, getattr(model, "codec", None)]
    found = [v for h in holders if h is not None for v in vars(h).values() if isinstance(v, torch.nn.Module)]
    return torch.nn.ModuleList([model] if isinstance(model, torch.nn.Module) else found)


@dataclass
class _Plan:
    """What the batches of one process's run share (`Evaluation._plan`)."""

    cfg: EvaluationConfig
    model: Any
    device: str
    ranks: Ranks
    resolution: tuple[int, int, int]
    prompts: dict[str, str] | None
    images: Any
    ids: list[str]
    methods: list[Method]
    spec: TaskSpec
    scorer: PerImage
    out: Path
    store: JsonlStore
    todo: dict[str, set[str]]
    """Each method's label -> the ids of this process it has no record of."""
    pending: list[str]
    """The ids of this process some method still lacks, in order."""


class Evaluation(Configurable):
    """An evaluation run (see the module docstring); ``Evaluation(**options).run()``.

    Examples:
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
        return resolve_methods(self.config, resolution, prompts_digest)  # type: ignore[arg-type]

    def check(self) -> None:
        """Everything that needs neither the model nor the images (a one-line ``ValueError`` naming the flag)."""
        cfg: EvaluationConfig = self.config  # type: ignore[assignment]
        from constrained_diffusion.models.loading import parse_dtype

        parse_dtype(cfg.dtype)
        _, _, task_options = split_set(cfg.set)
        check_task(cfg.task, task_options, cfg.noise_std, cfg.style_image)
        check_metrics(cfg.metrics, cfg.fid_features, cfg.feature_weights)
        if cfg.precision != "float32" and cfg.dtype != "float32":
            raise ValueError(f"--precision {cfg.precision}: rounds float32 arithmetic; it takes --dtype float32, got {cfg.dtype}")
        if "label_accuracy" in cfg.metrics and not labelled(cfg.data):
            raise ValueError(f"--metrics label_accuracy: needs labelled images, a shipped MNIST --data set, got {cfg.data!r}")
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
        device = ranks.device(cfg.device)
        model = load_denoiser(cfg.model, device, cfg.dtype)
        modules = torch_modules(model)
        if cfg.precision != "float32" and not len(modules):
            raise ValueError(f"--precision {cfg.precision}: model {cfg.model!r} has no torch modules to run in it")
        with precision_context([modules], cfg.precision):
            return self._run_model(cfg, ranks, say, model, device)

    def _run_model(self, cfg: EvaluationConfig, ranks: Ranks, say: Callable[[str], object], model: Any,
                   device: str) -> dict[str, Any]:
        """Plan the run, fill the records batch by batch, then (rank 0) merge and report."""
        plan = self._plan(cfg, ranks, say, model, device)
        self._fill(plan)
        ranks.barrier()
        if ranks.rank != 0:
            return {}
        merge_records(plan.out)
        unreadable = {s.id for s in plan.images.skipped}
        return report.write_report(cfg, plan.methods, [i for i in plan.ids if i not in unreadable], plan.images,
                                   plan.resolution, say)

    def _plan(self, cfg: EvaluationConfig, ranks: Ranks, say: Callable[[str], object], model: Any, device: str) -> _Plan:
        """Everything the batches share: the images, methods, problems and scores, and what this process still has to do."""
        resolution = pixel_resolution(model)
        if "label_accuracy" in cfg.metrics and resolution != (1, 32, 32):
            raise ValueError(f"--metrics label_accuracy: the shipped classifier reads 1x32x32 digits; model {cfg.model!r} "
                             f"makes {'x'.join(map(str, resolution))} images")
        prompts = read_prompts(cfg.prompts) if cfg.prompts is not None else None
        images, ids = open_set(cfg.data, resolution, cfg.limit, report=say if ranks.rank == 0 else None)
        if cfg.noise_seeding == "position":
            noise_generators(cfg.seed, ids, "position")  # every id a held-out position, or a one-line error now
        check_prompts(model, cfg.model, ids, prompts, cfg.prompts, cfg.prompt)
        self._bound: dict[str, Any] = {}
        digest = settings_hash(prompts) if prompts is not None else (cfg.prompt or "")
        methods, task_options = self._methods(resolution, digest)
        out = ensure_folder(cfg.out, "--out")
        mine = ranks.shard(ids)
        redo = check_outputs(out, methods, mine)
        if redo:
            say(f"{out}: {redo} record(s) name an image that is missing or damaged; computing them again")
        done = done_keys(out)
        todo = {m.label: {i for i in mine if (i, m.label, m.settings) not in done} for m in methods}
        return _Plan(cfg, model, device, ranks, resolution, prompts, images, ids, methods,
                     TaskSpec(cfg.task, cfg.seed, cfg.noise_std, task_options, cfg.style_image),
                     PerImage(cfg.metrics, cfg.feature_weights), out, records_store(out, ranks.rank, ranks.world), todo,
                     [i for i in mine if any(i in todo[m.label] for m in methods)])

    def _fill(self, plan: _Plan) -> None:
        """Run every method on the pending images, batch by batch, with a progress bar that moves per denoising step."""
        from tqdm.auto import tqdm

        from constrained_diffusion.data.images import load_available

        cfg = plan.cfg
        first = cfg.metrics[0] if cfg.metrics and cfg.metrics[0] in plan.scorer.metrics else None
        running: list[float] = []
        bar = tqdm(total=len(plan.pending), desc=f"evaluate {cfg.task}", unit="image", disable=cfg.quiet or plan.ranks.rank != 0,
                   leave=False)
        for start in range(0, len(plan.pending), cfg.batch_size):
            listed = plan.pending[start:start + cfg.batch_size]
            truth_cpu, batch = load_available(plan.images, listed)  # decoded now; an unreadable file is reported and left out
            if truth_cpu is None:
                bar.update(len(listed))
                continue
            plan.store.reload()  # another process on the same --out may have done some of them meanwhile
            moved = 0.0  # the bar moves per denoising step: each method's share of this batch, spread over its steps
            for m in plan.methods:
                share = len(listed) / len(plan.methods) / max(1, m.recipe.config.steps)

                def tick(_: Any, share: float = share) -> None:
                    nonlocal moved
                    moved += share
                    bar.update(share)

                records = self._method_batch(plan, m, batch, truth_cpu, tick)
                if first is not None and m is plan.methods[0]:
                    running += [r[first] for r in records]
            bar.update(len(listed) - moved)  # the rest of the batch: methods done before, rounding
            if running:
                bar.set_postfix({f"{plan.methods[0].label} {first}": f"{sum(running) / len(running):.3f}"})
        bar.close()

    def _method_batch(self, plan: _Plan, m: Method, batch: list[str], truth_cpu: torch.Tensor,
                      tick: Callable[[Any], None]) -> list[dict[str, Any]]:
        """Method ``m`` on the images of ``batch`` it still lacks; their records are added to the store and returned.

        Raises:
            OutOfMemoryError: naming the images, the method and the batch size.
        """
        rows = [k for k, i in enumerate(batch) if i in plan.todo[m.label] and (i, m.label, m.settings) not in plan.store]
        if not rows:
            return []
        sub = [batch[k] for k in rows]
        try:
            records = self._sample(plan.cfg, plan.model, m, sub, truth_cpu[rows], plan.prompts, plan.spec, plan.scorer,
                                   plan.device, plan.out, tick)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise out_of_memory(exc, f"images {sub[0]}..{sub[-1]} ({len(sub)}) of method {m.label!r}",
                                    plan.cfg.batch_size) from exc
            raise
        for r in records:
            r["rank"] = plan.ranks.rank
            plan.store.add(r)  # a record another process wrote meanwhile is kept, not doubled
        return records

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
                prompts: dict[str, str] | None, spec: TaskSpec, scorer: PerImage, device: str,
                out: Path, tick: Callable[[Any], None] | None = None) -> list[dict[str, Any]]:
        """Run method ``m`` on one batch; write its images and the observation; return its records (``tick``: after each step)."""
        from constrained_diffusion.utils.images import save_png, to_uint8

        problem = spec.problem(truth, ids, device)
        labels = shipped_labels(cfg.data, ids) if "label_accuracy" in scorer.metrics else None
        for k, i in enumerate(ids):
            path = image_file(out, "observation", i, m.observation)
            if not image_ok(path):
                save_png(path, to_uint8(problem.observation[k]))
        den = self._conditioned(model, m, [prompts[i] for i in ids] if prompts is not None else None, cfg.prompt)
        run = sample_batch(den, m.recipe, problem.constraint, ids, cfg.seed, device, callback=tick, noise_seeding=cfg.noise_seeding)
        scores = scorer(run.outputs, truth, labels)
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
