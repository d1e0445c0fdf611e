"""The methods of an evaluation run resolved: each `MethodSpec` becomes a recipe with its label and settings hash.

A method's overrides are, in order of precedence (last wins): ``steps``, the run's common
``set``, the run's ``LABEL:KEY`` entries for that label, the method's own ``set``
(`constrained_diffusion.recipes.overrides`). The settings hash (`settings_hash`) covers every
option that changes a method's numbers, the batch size included, so records and images of other
settings never overwrite each other; the observation hash covers what makes the observation
(the folder of ``images/observation``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from constrained_diffusion.errors import UsageError
from constrained_diffusion.evaluation.config import EvaluationConfig
from constrained_diffusion.evaluation.records import settings_hash
from constrained_diffusion.recipes import Recipe
from constrained_diffusion.recipes.overrides import resolve_recipe, split_set
from constrained_diffusion.utils.paths import safe_name


@dataclass
class Method:
    """A resolved method: its label, recipe and settings hash."""

    label: str
    recipe: Recipe
    settings: str
    observation: str = ""
    """The hash of what makes the observation (task, its options, data, seed, noise, resolution): its images' folder."""


def shipped_weights(model: str) -> str:
    """A digest of a shipped model's weight file (`weights_digest`), ``""`` for any other model.

    Part of every settings hash, so records made with other weights (a retrained model in a
    new release) are computed afresh, never reused.

    Examples:
        >>> shipped_weights("mnist-ddpm").startswith("sha256:"), shipped_weights("some/hub-id")
        (True, '')
    """
    from constrained_diffusion.models.loading import ALIASES, SHIPPED, weights_path
    from constrained_diffusion.models.pretrained import weights_digest

    path = weights_path(model) if ALIASES.get(model, model) in SHIPPED else None
    return weights_digest(path) if path is not None else ""


def non_default(cfg: EvaluationConfig, fields: tuple[str, ...]) -> dict[str, Any]:
    """The ``fields`` of ``cfg`` whose value is not their default (so adding an option keeps the older hashes)."""
    return {f: getattr(cfg, f) for f in fields if getattr(cfg, f) != EvaluationConfig.model_fields[f].default}


def check_labels(cfg: EvaluationConfig, per: dict[str, Any]) -> list[str]:
    """The methods' labels, refusing one given twice, a ``LABEL:KEY`` for no method and two labels with one folder name.

    Raises:
        ValueError: naming ``--method`` or ``--set``.
        UsageError: two labels whose `safe_name` is the same.
    """
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
    return labels


def resolve_methods(cfg: EvaluationConfig, resolution: tuple[int, ...] | None,
                    prompts_digest: str) -> tuple[list[Method], dict[str, Any]]:
    """The run's methods and the task's options (``task.KEY`` of ``set``).

    Args:
        cfg: the run's options.
        resolution: the model's ``(C, H, W)`` (``None`` when checking before loading it).
        prompts_digest: the captions' hash (or the one prompt), part of every settings hash.

    Raises:
        ValueError: a bad label, override or method name (as `check_labels`, `resolve_recipe`).
    """
    common, per, task_options = split_set(cfg.set)
    check_labels(cfg, per)
    observation = settings_hash({"model": cfg.model, "data": cfg.data, "task": cfg.task, "task_options": task_options,
                                 "style_image": cfg.style_image, "seed": cfg.seed, "noise_std": cfg.noise_std,
                                 "resolution": resolution})
    kind = cfg.device.split(":")[0]  # cuda:0 and cuda:1 (ranks of one run) are one kind of device
    run_parts = {"weights": shipped_weights(cfg.model), **non_default(cfg, ("noise_seeding", "precision")),
                 **({"device": kind} if kind != "cpu" else {})}  # a GPU's seconds never join a CPU's records
    methods = []
    for spec in cfg.method:
        overrides = {**({"steps": cfg.steps} if cfg.steps is not None else {}), **common, **per.get(spec.key, {}), **spec.set}
        recipe = resolve_recipe(spec.name, overrides)
        parts = {"model": cfg.model, "data": cfg.data, "task": cfg.task, "task_options": task_options,
                 "style_image": cfg.style_image, "recipe": recipe.name, "config": recipe.config.model_dump(),
                 "options": dict(recipe.options), "latent": recipe.latent, "spacing": recipe.timestep_spacing,
                 "guidance": getattr(recipe, "guidance_scale", None),
                 "seed": cfg.seed, "noise_std": cfg.noise_std, "resolution": resolution, "dtype": cfg.dtype,
                 "prompts": prompts_digest, "batch_size": cfg.batch_size, **run_parts}
        methods.append(Method(spec.key, recipe, settings_hash(parts), observation))
    return methods, task_options
