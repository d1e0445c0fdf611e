"""Tuned settings: each method's best setting for one (model, task), as a tuning study found it.

A small YAML file per (model, task) ships in ``constrained_diffusion/recipes/tuned/``
(``mnist-ddpm-box.yaml``, ...). It names the study that produced it and holds, per method,
the overrides of its best trial (``inner_steps``, ``step_scale``, ``solver.h``, ...) and the
denoising steps it was tuned at. ``constrained-diffusion demo`` runs every method at these
settings. ``constrained-diffusion tune-study --write-tuned DIR`` (or `write_tuned` on a study's
``results.json``) regenerates the files from a study.

The file format:

    model: mnist-ddpm
    task: box
    study: {command: ..., data: mnist-validation, trials: 30, limit: 4, steps: 10, metric: psnr, ...}
    steps: 10
    methods:
      inexact-newton: {inner_steps: 3, step_scale: [1.38, 0.154], solver.h: 0.00226}
      ...

Examples:
    >>> tuned = load_tuned("mnist-ddpm", "box")
    >>> tuned.steps, list(tuned.methods)[:2]
    (10, ['inexact-newton', 'gradient-descent'])
    >>> tuned.methods["inexact-newton"]["inner_steps"]
    3

A file written before 0.2 names ``step_scale`` and ``step_rule`` ``lr`` and ``step_size``;
it still loads, with a `DeprecationWarning` (`constrained_diffusion.utils.renamed`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from constrained_diffusion.utils.paths import safe_name, under
from constrained_diffusion.utils.renamed import rename_keys
from constrained_diffusion.utils.safe_io import write_text

TUNED_DIR = Path(__file__).with_name("tuned")
"""Where the shipped files live (package data)."""


@dataclass(frozen=True)
class TunedSettings:
    """The best setting of each method for one (model, task).

    Attributes:
        model: a `cd.models.load` name (``"mnist-ddpm"``).
        task: a harness task (``"box"``).
        steps: the denoising steps the methods were tuned at.
        methods: method name (recipe or solver) -> its overrides (`resolve_recipe`'s keys).
        study: how the study was run (its command and options), as the file says.
        note: free text, e.g. where the numbers were read from.
    """

    model: str
    task: str
    steps: int
    methods: dict[str, dict[str, Any]]
    study: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def tuned_path(model: str, task: str) -> Path:
    """The shipped file of ``(model, task)``: ``recipes/tuned/<model>-<task>.yaml``."""
    return TUNED_DIR / f"{safe_name(f'{model}-{task}')}.yaml"  # a model path or Hub id stays one file name in the folder


def available() -> list[tuple[str, str]]:
    """The ``(model, task)`` pairs with a shipped file, sorted."""
    pairs = []
    for path in sorted(TUNED_DIR.glob("*.yaml")):
        data = _read(path)
        pairs.append((str(data["model"]), str(data["task"])))
    return pairs


def _read(path: Path) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not {"model", "task", "steps", "methods"} <= set(data):
        raise ValueError(f"{path}: a tuned-settings file needs the keys model, task, steps and methods")
    return data


def load_tuned(model: str = "mnist-ddpm", task: str = "box", path: str | os.PathLike[str] | None = None) -> TunedSettings:
    """The tuned settings of ``(model, task)`` from the shipped file, or from ``path``.

    Raises:
        ValueError: no shipped file for ``(model, task)`` (naming those there are), or a file
            without the keys ``model``, ``task``, ``steps``, ``methods``.
    """
    file = Path(path) if path is not None else tuned_path(model, task)
    if not file.is_file():
        have = ", ".join(f"{m}/{t}" for m, t in available()) or "none"
        raise ValueError(f"no tuned settings for model {model!r} and task {task!r} (shipped: {have}); "
                         "run `constrained-diffusion tune-study --write-tuned DIR` to make them")
    data = _read(file)
    methods = {str(name): _renamed(overrides or {}, f"{file.name}: {name}: ") for name, overrides in data["methods"].items()}
    return TunedSettings(str(data["model"]), str(data["task"]), int(data["steps"]), methods, dict(data.get("study") or {}),
                         str(data.get("note") or ""))


def tuned_from_results(results: Mapping[str, Any], command: str | None = None) -> list[dict[str, Any]]:
    """The files' contents (one dict per (model, task)) from a tuning study's ``results.json``.

    Args:
        results: what ``TuningStudy.run`` returns and writes as ``OUT/results.json``:
            ``{"config": {...}, "pairs": [{"model", "task", "methods": {name: {"overrides", ...}}}]}``.
        command: the study's command line, recorded as ``study.command``.

    Examples:
        >>> results = {"config": {"data": "mnist-validation", "trials": 30, "limit": 4, "steps": 10, "metric": "psnr"},
        ...            "pairs": [{"model": "mnist-ddpm", "task": "box",
        ...                       "methods": {"dps": {"overrides": {"step_scale": 2.84}, "validation": 14.27}}}]}
        >>> tuned_from_results(results)[0]["methods"]
        {'dps': {'step_scale': 2.84}}
    """
    cfg = dict(results.get("config") or {})
    study = {k: cfg[k] for k in ("data", "trials", "limit", "batch_size", "steps", "metric", "seed", "storage") if k in cfg}
    if command:
        study = {"command": command, **study}
    out = []
    for pair in results.get("pairs", []):
        methods = {m: {k: list(v) if isinstance(v, tuple) else v for k, v in _renamed(r["overrides"], f"{m}: ").items()}
                   for m, r in pair["methods"].items()}
        validation = {m: r["validation"] for m, r in pair["methods"].items() if "validation" in r}
        out.append({"model": pair["model"], "task": pair["task"], "study": study, "steps": int(cfg.get("steps", 10)),
                    "methods": methods, **({"validation_" + str(cfg.get("metric", "psnr")): validation} if validation else {})})
    return out


def write_tuned(results: Mapping[str, Any] | str | os.PathLike[str], folder: str | os.PathLike[str],
                command: str | None = None) -> list[Path]:
    """Write ``<folder>/<model>-<task>.yaml`` for every (model, task) of a study's results.

    Args:
        results: the study's results (a mapping) or the path of its ``results.json``.
        folder: where to write; created if missing. Each file is written atomically.
        command: the study's command line, recorded in each file.

    Returns:
        The paths written.
    """
    import yaml

    if not isinstance(results, Mapping):
        results = json.loads(Path(results).read_text())
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for data in tuned_from_results(results, command):
        name = safe_name(f"{data['model']}-{data['task']}")
        path = under(folder, f"{name}.yaml", option="--write-tuned")
        text = (f"# Best setting of each method for {data['model']} / {data['task']}, from a tuning study "
                "(regenerate: constrained-diffusion tune-study --write-tuned DIR).\n" + yaml.safe_dump(data, sort_keys=False))
        paths.append(write_text(path, text))  # atomically (temp file, fsync, rename)
    return paths


def _renamed(overrides: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``overrides`` with the option names renamed in 0.2 (``lr``, ``lr.0``, ``correction.lr``, ...) replaced, one warning each."""
    top = rename_keys({k: v for k, v in overrides.items() if not k.startswith("correction.")}, where=where)
    inner = rename_keys({k[11:]: v for k, v in overrides.items() if k.startswith("correction.")}, where=where, prefix="correction.")
    return {**top, **{f"correction.{k}": v for k, v in inner.items()}}
