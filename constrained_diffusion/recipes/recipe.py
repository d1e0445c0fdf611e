"""A recipe: a named, published sampler configuration and how it treats latent models.

`cd.recipes.get("dps")` returns a `Recipe`: its ``config`` is a complete `SamplerConfig`
(solver, steps, inner steps, step-size rule, schedule window, ...), `sampler` builds the
`ConstrainedSampler`, and `constraint` adapts a pixel-space constraint to the denoiser the
way the method does for latent models (through the decoder for DPS, with PSLD's gluing term,
or by the paper's forward-only "VAE Newton").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

from constrained_diffusion.constraints.base import Constraint, LinearConstraint
from constrained_diffusion.constraints.latent import DecodedConstraint, EncodedConstraint
from constrained_diffusion.constraints.psld import PSLDConstraint
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.sampling.config import SamplerConfig
from constrained_diffusion.sampling.engine import ConstrainedSampler

LatentRule = Literal["decoded", "encoded", "psld"]


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
            only) or ``"psld"`` (`PSLDConstraint`).
        options: parameters of the method's constraint (PSLD's ``omega``, ``gamma``), read-only;
            `with_config` overrides them by name like the config fields.
    """

    name: str
    config: SamplerConfig
    reference: str
    summary: str
    latent: LatentRule = "decoded"
    options: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    def with_config(self, **overrides: Any) -> Recipe:
        """A copy with `SamplerConfig` fields or `options` replaced (validated; errors name the field)."""
        options = {k: overrides.pop(k) for k in list(overrides) if k in self.options}
        for k, v in options.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError(f"{k} must be a number >= 0, got {v!r}")
        data = self.config.model_dump()
        data.update(overrides)
        return replace(self, config=SamplerConfig.model_validate(data), options={**self.options, **options})

    def sampler(self, denoiser: Denoiser, **overrides: Any) -> ConstrainedSampler:
        """The `ConstrainedSampler` for ``denoiser``; ``overrides`` replace config fields."""
        recipe = self.with_config(**overrides) if overrides else self
        return ConstrainedSampler.from_config(denoiser, recipe.config)

    def constraint(self, pixel: Constraint, denoiser: Denoiser) -> Constraint:
        """Adapt a pixel-space constraint to ``denoiser``.

        Pixel-space denoisers get ``pixel`` back, except for PSLD, whose gluing term is kept
        with the identity as encoder and decoder (it reduces to ``||A^T (y - A x)||``).
        """
        codec = denoiser.codec
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
        cfg = self.config.model_dump(exclude_defaults=True)
        solver = self.config.solver
        if solver is not None:  # its name is a default of its own config: keep it, or the solver is lost
            cfg["solver"] = {"name": solver.name, **solver.model_dump(exclude_defaults=True)}  # type: ignore[attr-defined]
        return f"{self.name}: {self.summary} ({self.reference}). Config: {cfg}"
