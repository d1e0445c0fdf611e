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
