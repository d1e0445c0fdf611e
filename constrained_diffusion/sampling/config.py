"""Sampler configuration: a pydantic model that loads from JSON or YAML.

Example (YAML):

    steps: 20
    inner_steps: 5
    lr: [0.5, 0.1]
    eta: 0.0
    solver: {name: inexact-newton, h: 0.005}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator

from constrained_diffusion.solvers import registry
from constrained_diffusion.solvers.inexact_newton import InexactNewtonConfig


class SamplerConfig(BaseModel):
    """Everything `ConstrainedSampler` needs besides the model.

    Attributes:
        steps: number of denoising steps (``>= 1``).
        inner_steps: constraint iterations per step (``>= 0``; 0 is plain DDIM sampling).
        lr: step size ``lambda``: a pair ``(start, end)`` interpolated linearly over the inner
            steps, or one constant; each value ``>= 0``.
        eta: DDIM stochasticity in ``[0, 1]`` (0: deterministic).
        solver: the solver's configuration; ``{"name": ..., **options}``.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(20, ge=1)
    inner_steps: int = Field(5, ge=0)
    lr: float | tuple[float, float] = (0.5, 0.1)
    eta: float = Field(0.0, ge=0.0, le=1.0)
    solver: SerializeAsAny[BaseModel] = Field(default_factory=InexactNewtonConfig)

    @field_validator("lr")
    @classmethod
    def _lr_non_negative(cls, value: float | tuple[float, float]) -> float | tuple[float, float]:
        values = value if isinstance(value, tuple) else (value,)
        if any(not v >= 0 or v == float("inf") for v in values):
            raise ValueError(f"every step size must be finite and >= 0, got {value!r}")
        return value

    @field_validator("solver", mode="before")
    @classmethod
    def _parse_solver(cls, value: Any) -> BaseModel:
        return registry.parse_config(value)

    def step_sizes(self) -> list[float]:
        """``lambda_k`` for ``k = 0 .. inner_steps - 1`` (``linspace(start, end, inner_steps)``)."""
        n = self.inner_steps
        if isinstance(self.lr, tuple):
            start, end = self.lr
            return [start + (end - start) * k / (n - 1) if n > 1 else start for k in range(n)]
        return [float(self.lr)] * n

    @classmethod
    def from_file(cls, path: str | Path) -> "SamplerConfig":
        """Load from a ``.json``, ``.yaml`` or ``.yml`` file."""
        path = Path(path)
        text = path.read_text()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"config file must end in .json, .yaml or .yml, got {path.name!r}")
        return cls.model_validate(data)
