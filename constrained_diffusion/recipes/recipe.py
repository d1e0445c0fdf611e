"""A recipe: a named, published sampler configuration and how it treats latent models.

`cd.recipes.get("dps")` returns a `Recipe`: its ``config`` is a complete `SamplerConfig`
(solver, steps, inner steps, step-size rule, schedule window, ...), `sampler` builds the
`ConstrainedSampler`, and `constraint` adapts a pixel-space constraint to the denoiser the
way the method does for latent models (through the decoder for DPS, with PSLD's gluing term,
or by the paper's forward-only "VAE Newton").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

from constrained_diffusion.constraints.base import Constraint, LinearConstraint
from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.constraints.latent import DecodedConstraint, EncodedConstraint, latent_inpainting
from constrained_diffusion.constraints.psld import PSLDConstraint
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.denoisers.schedules import Spacing, VPSchedule
from constrained_diffusion.sampling.config import CORRECTION_FIELDS, SamplerConfig
from constrained_diffusion.sampling.corrections import correction_class, correction_names
from constrained_diffusion.sampling.engine import ConstrainedSampler
from constrained_diffusion.space import SearchSpace
from constrained_diffusion.utils.renamed import rename_keys

LatentRule = Literal["decoded", "encoded", "psld", "latent-mask", "linear"]


@dataclass(frozen=True)
class Recipe:
    """A named sampler preset.

    Attributes:
        name: registry name.
        config: the sampler configuration.
        reference: the paper the preset follows.
        summary: the update rule in one line.
        latent: how a pixel constraint is applied to a latent denoiser: ``"decoded"``
            (backward through the decoder), ``"encoded"`` (the paper's VAE Newton, forward
            only), ``"psld"`` (`PSLDConstraint`) or ``"latent-mask"`` (inpainting only:
            `latent_inpainting`, the masked image encoded and the mask pooled to the latent
            grid, a cell known iff all its pixels are) or ``"linear"`` (methods that need the
            operator itself, DDRM, DDNM, ...: the pixel constraint for pixel models; for latent
            models inpainting as ``"latent-mask"``, anything else is refused).
        options: parameters of the method's constraint (PSLD's ``omega``, ``gamma``), read-only;
            `with_config` overrides them by name like the config fields.
        timestep_spacing: the grid spacing the method samples on (``"trailing"``: ``T - 1``
            first); `sampler` runs on a copy of the denoiser with it (`with_timestep_spacing`).
            ``None``: the denoiser's own grid.
        guidance_scale: the classifier-free guidance scale ``s`` the method samples with,
            ``out = out_u + s (out_c - out_u)`` (the paper's style notebook writes
            ``(1 + w) eps_c - w eps_u`` with ``w = 2``, i.e. ``s = 3``); bind it with `condition`.
            ``None``: whatever the denoiser has bound. Ignored for denoisers without text
            conditioning (no ``guidance_scale`` attribute).
        search_space: what ``constrained-diffusion tune`` may change, override key -> range
            (`constrained_diffusion.space`); the solver's own options are declared on the
            solver (`Solver.search_space`) and joined by `method_space`.
    """

    name: str
    config: SamplerConfig
    reference: str
    summary: str
    latent: LatentRule = "decoded"
    options: Mapping[str, float] = field(default_factory=dict)
    timestep_spacing: Spacing | None = None
    guidance_scale: float | None = None
    search_space: SearchSpace = field(default_factory=SearchSpace)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "search_space", SearchSpace(self.search_space))
        _check_guidance_scale(self.guidance_scale)

    def with_config(self, **overrides: Any) -> Recipe:
        """A copy with `SamplerConfig` fields, `options` or ``guidance_scale`` replaced (validated; errors name the field).

        The correction's options: ``correction={"name": ..., ...}`` replaces the correction (the
        flat correction fields return to their defaults); ``**{"correction.step_scale": 0.3}`` changes
        one option of a nested correction; and a plain key that is an option of the recipe's nested
        correction (``step_scale=0.3`` on a recipe with ``correction={name: pigdm, ...}``) goes there.
        The names renamed in 0.2 (``lr``, ``step_size``, ``lr.0``, ``correction.lr``, ...) are
        accepted with a `DeprecationWarning` (`constrained_diffusion.utils.renamed`).
        """
        overrides = renamed_overrides(self.config, overrides)
        options = {k: overrides.pop(k) for k in list(overrides) if k in self.options}
        for k, v in options.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{k} must be a number >= 0, got {v!r}")
        guidance = overrides.pop("guidance_scale", self.guidance_scale)
        data = self.config.model_dump()
        data.update(_correction_overrides(self.config, data, overrides))
        return replace(self, config=SamplerConfig.model_validate(data), options={**self.options, **options},
                       guidance_scale=guidance)

    def condition(self, denoiser: Denoiser, prompt: str | list[str] = "", negative_prompt: str | list[str] = "") -> Denoiser:
        """``denoiser`` with ``prompt`` bound at the recipe's `guidance_scale` (``denoiser.condition``).

        Raises:
            TypeError: the denoiser takes no prompt (it has no ``condition`` method).
        """
        condition = getattr(denoiser, "condition", None)
        if not callable(condition):
            raise TypeError(f"{type(denoiser).__name__} takes no prompt (it has no condition method)")
        scale = 1.0 if self.guidance_scale is None else self.guidance_scale
        return condition(prompt=prompt, negative_prompt=negative_prompt, guidance_scale=scale)

    def sampler(self, denoiser: Denoiser, **overrides: Any) -> ConstrainedSampler:
        """The `ConstrainedSampler` for ``denoiser``; ``overrides`` replace config fields.

        With `timestep_spacing` set, the sampler runs on ``with_timestep_spacing(denoiser,
        spacing)``, a copy: ``denoiser`` and its scheduler are not changed, and the network
        calls are counted on the copy (``sampler.denoiser``; `SampleResult.nfe` as usual).
        """
        recipe = self.with_config(**overrides) if overrides else self
        bound = getattr(denoiser, "guidance_scale", None)
        if recipe.guidance_scale is not None and bound is not None and float(bound) != recipe.guidance_scale:
            raise ValueError(
                f"the {self.name} recipe samples with guidance_scale={recipe.guidance_scale:g} but the denoiser has "
                f"guidance_scale={float(bound):g}: bind the prompt with recipe.condition(denoiser, prompt), or override "
                "guidance_scale=None to keep the denoiser's")
        if self.timestep_spacing is not None:
            denoiser = with_timestep_spacing(denoiser, self.timestep_spacing)
        return ConstrainedSampler.from_config(denoiser, recipe.config)

    def constraint(self, pixel: Constraint, denoiser: Denoiser) -> Constraint:
        """Adapt a pixel-space constraint to ``denoiser``.

        Pixel-space denoisers get ``pixel`` back, except for PSLD, whose gluing term is kept
        with the identity as encoder and decoder (it reduces to ``||A^T (y - A x)||``).
        """
        codec = denoiser.codec
        if self.latent == "latent-mask":
            if not isinstance(pixel, Inpainting):
                raise TypeError(f"the {self.name} recipe needs an Inpainting constraint, got {type(pixel).__name__}")
            return pixel if codec is None else latent_inpainting(denoiser, pixel.image, pixel.mask)
        if self.latent == "linear":
            if codec is None:
                return pixel
            if not isinstance(pixel, Inpainting):
                raise TypeError(f"the {self.name} recipe needs the linear operator in the latent space: on a latent model only "
                                f"inpainting (latent-mask) applies, got {type(pixel).__name__}")
            return latent_inpainting(denoiser, pixel.image, pixel.mask)
        if self.latent == "psld":
            if not isinstance(pixel, LinearConstraint):
                raise TypeError(f"the psld recipe needs a LinearConstraint, got {type(pixel).__name__}")
            return PSLDConstraint(pixel, codec, **dict(self.options))
        if codec is None:
            return pixel
        if self.latent == "encoded":
            return EncodedConstraint(pixel, codec)
        return DecodedConstraint(pixel, codec)

    def describe(self) -> str:
        """One paragraph: name, summary, reference and the configuration."""
        cfg: dict[str, Any] = self.config.model_dump(exclude_defaults=True)
        solver = self.config.solver
        if solver is not None:  # its name is a default of its own config: keep it, or the solver is lost
            cfg["solver"] = {"name": solver.name, **solver.model_dump(exclude_defaults=True)}  # type: ignore[attr-defined]
        return f"{self.name}: {self.summary} ({self.reference}). Config: {cfg}"


def renamed_overrides(config: SamplerConfig, overrides: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """``overrides`` of ``config`` with the option names renamed in 0.2 replaced (`constrained_diffusion.utils.renamed`).

    ``lr``, ``lr.0``/``lr.1`` and ``step_size`` become ``step_scale``, ``step_scale.0``/``.1`` and
    ``step_rule``, and so do ``correction.lr``, ... where the correction has the new option (a
    user's correction with an ``lr`` of its own keeps it). One `DeprecationWarning` per old name.

    Raises:
        ValueError: the old and the new name of one option both given, naming both.
    """
    name = overrides.get("correction.name", config.correction.name if config.correction is not None else None)
    nested = set(correction_class(name).Config.model_fields) if name in correction_names() else set()
    inner = rename_keys({k[11:]: v for k, v in overrides.items() if k.startswith("correction.")}, nested, where, "correction.")
    top = rename_keys({k: v for k, v in overrides.items() if not k.startswith("correction.")},
                      set(SamplerConfig.model_fields) | nested, where)
    return {**top, **{f"correction.{k}": v for k, v in inner.items()}}


def _correction_overrides(config: SamplerConfig, data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with the correction's options gathered into one nested ``correction`` value (see `Recipe.with_config`)."""
    nested = dict(data["correction"]) if data.get("correction") is not None else None
    if "correction" in overrides:
        if nested is None:  # switching from the flat form: its correction fields go back to their defaults
            for key in CORRECTION_FIELDS:
                data.pop(key, None)
        value = overrides.pop("correction")
        nested = None if value is None else (dict(value) if isinstance(value, Mapping) else {"name": value})
        data["correction"] = nested
    fields = set() if config.correction is None else set(config.correction.cls.Config.model_fields)
    out: dict[str, Any] = {}
    for key, value in sorted(overrides.items(), key=lambda kv: kv[0] != "correction.name"):  # the name first
        head, dot, tail = key.partition(".")
        if key == "correction.name":
            if nested is None or nested.get("name") != value:  # another correction: its own options only
                nested = {"name": value}
                for k in CORRECTION_FIELDS:
                    data.pop(k, None)
        elif head == "correction" and dot:
            if nested is None:
                raise ValueError(f"{key}: the recipe's correction is given by the flat fields; set correction.name first")
            nested[tail] = value
        elif nested is not None and key in fields and not (key == "name"):
            nested[key] = value
        else:
            out[key] = value
    if nested is not None:
        out["correction"] = nested
        known = nested.get("name") in correction_names()
        if "solver" not in out and known and not correction_class(nested["name"]).uses_solver:
            data["solver"] = None  # a correction that calls no solver drops the recipe's
    return out


def _check_guidance_scale(scale: float | None) -> None:
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale >= 0):
        raise ValueError(f"guidance_scale must be a number >= 0 or None, got {scale!r}")


def with_timestep_spacing(denoiser: Denoiser, spacing: Spacing) -> Denoiser:
    """``denoiser`` on a grid with ``spacing``; a copy, the original is unchanged.

    Uses the denoiser's own ``with_timestep_spacing`` (`StableDiffusionDenoiser`: rebuilt
    from the pipeline scheduler's configuration) when it has one; otherwise a shallow copy
    whose `VPSchedule` has the same ``alphas_cumprod``, offset and final point and the new
    spacing.

    Raises:
        ValueError: the denoiser's schedule is not a `VPSchedule` (a flow's grid has no
            spacing to set).
    """
    own = getattr(denoiser, "with_timestep_spacing", None)
    if callable(own):
        return own(spacing)
    schedule = denoiser.schedule
    if not isinstance(schedule, VPSchedule):
        raise ValueError(f"timestep_spacing={spacing!r} applies to variance-preserving schedules; "
                         f"{type(denoiser).__name__} has a {type(schedule).__name__}")
    other = copy.copy(denoiser)
    other.schedule = VPSchedule.from_alphas_cumprod(schedule.alphas_cumprod, spacing=spacing, offset=schedule.offset,
                                                    final_alpha_one=schedule.final_alpha_one)
    return other
