"""Noise schedules in ``(alpha, sigma)`` form and the time grids a sampler walks.

* `VPSchedule` — variance-preserving DDPM/DDIM: ``alpha_t = sqrt(abar_t)``,
  ``sigma_t = sqrt(1 - abar_t)`` with ``abar_t = prod_{s<=t} (1 - beta_s)`` on integer
  ``t in {0, ..., T-1}`` (Ho et al., 2020; Song et al., 2021).
* `FlowSchedule` — rectified flow: ``x_t = (1 - s) x0 + s eps``, ``alpha = 1 - s``,
  ``sigma = s`` with ``s in (0, 1]`` (Liu et al., 2023; Esser et al., 2024), optionally with
  the resolution shift ``s' = shift s / (1 + (shift - 1) s)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import torch
from torch import Tensor

Spacing = Literal["trailing", "leading", "linspace"]


class NoiseSchedule(ABC):
    """A family ``x_t = alpha_t x0 + sigma_t eps`` with a grid of sampling times."""

    @abstractmethod
    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha_t, sigma_t)`` as float64 scalar tensors."""

    @abstractmethod
    def timesteps(self, steps: int) -> Tensor:
        """Descending 1-D tensor of ``steps`` sampling times."""

    @abstractmethod
    def final_alpha_sigma(self) -> tuple[Tensor, Tensor]:
        """``(alpha, sigma)`` that the last sampler update moves to."""

    @abstractmethod
    def model_time(self, t: Tensor) -> Tensor:
        """The time value the network was trained to receive for sampling time ``t``."""


def _check_steps(steps: int, limit: int | None = None) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if limit is not None and steps > limit:
        raise ValueError(f"steps must be <= {limit} (the number of training timesteps), got {steps}")


class VPSchedule(NoiseSchedule):
    """Variance-preserving schedule defined by its betas.

    Args:
        betas: 1-D tensor of ``T`` noise variances in ``(0, 1)``.
        spacing: how `timesteps` picks ``steps`` of the ``T`` training times:
            ``"trailing"`` (``round(T - k T/steps) - 1``, starts at ``T-1``; the default, see
            Lin et al., 2024), ``"leading"`` (``k * (T // steps)`` plus ``offset``, as Stable
            Diffusion's DDIM) or ``"linspace"`` (``round(linspace(T-1, 0, steps))``).
        offset: added to ``"leading"`` timesteps (``steps_offset`` in diffusers).
        final_alpha_one: if true the last update moves to ``abar = 1`` (a clean sample);
            otherwise to ``abar_0``.
    """

    def __init__(self, betas: Tensor, spacing: Spacing = "trailing", offset: int = 0,
                 final_alpha_one: bool = True) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be a 1-D tensor of at least 2 values, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie in the open interval (0, 1)")
        if spacing not in ("trailing", "leading", "linspace"):
            raise ValueError(f"spacing must be 'trailing', 'leading' or 'linspace', got {spacing!r}")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.spacing = spacing
        self.offset = int(offset)
        self.final_alpha_one = final_alpha_one

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 2e-2,
               num_train_timesteps: int = 1000, **kwargs: object) -> "VPSchedule":
        """DDPM's linear betas (``1e-4 ... 2e-2`` over ``T = 1000`` by default)."""
        return cls(torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def scaled_linear(cls, beta_start: float = 0.00085, beta_end: float = 0.012,
                      num_train_timesteps: int = 1000, **kwargs: object) -> "VPSchedule":
        """Stable Diffusion's betas: linear in ``sqrt(beta)``."""
        b = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        return cls(b, **kwargs)  # type: ignore[arg-type]

    @property
    def num_train_timesteps(self) -> int:
        return int(self.betas.numel())

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        abar = self.alphas_cumprod[int(t)]
        return abar.sqrt(), (1.0 - abar).sqrt()

    def timesteps(self, steps: int) -> Tensor:
        T = self.num_train_timesteps
        _check_steps(steps, T)
        if self.spacing == "trailing":
            ts = torch.round(torch.arange(T, 0, -T / steps, dtype=torch.float64)) - 1
        elif self.spacing == "leading":
            ts = torch.arange(steps, dtype=torch.float64).flip(0) * (T // steps) + self.offset
        else:
            ts = torch.round(torch.linspace(T - 1, 0, steps, dtype=torch.float64))
        return ts.clamp(0, T - 1).long()

    def final_alpha_sigma(self) -> tuple[Tensor, Tensor]:
        abar = torch.tensor(1.0, dtype=torch.float64) if self.final_alpha_one else self.alphas_cumprod[0]
        return abar.sqrt(), (1.0 - abar).sqrt()

    def model_time(self, t: Tensor) -> Tensor:
        return t


class FlowSchedule(NoiseSchedule):
    """Rectified-flow schedule ``x_s = (1 - s) x0 + s eps`` on ``s`` in ``(0, 1]``.

    Args:
        shift: resolution shift (SD3 uses 3.0); ``1.0`` leaves the grid uniform.
        time_scale: the network receives ``s * time_scale`` (``1000`` for diffusers models).
        s_min: smallest grid time before the final update to ``s = 0``.
    """

    def __init__(self, shift: float = 1.0, time_scale: float = 1.0, s_min: float = 0.0) -> None:
        if shift <= 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        if not 0.0 <= s_min < 1.0:
            raise ValueError(f"s_min must lie in [0, 1), got {s_min}")
        self.shift = float(shift)
        self.time_scale = float(time_scale)
        self.s_min = float(s_min)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        s = torch.as_tensor(t, dtype=torch.float64)
        return 1.0 - s, s

    def timesteps(self, steps: int) -> Tensor:
        _check_steps(steps)
        # ``steps`` points from 1 down to (but excluding) s_min, then the final update to 0.
        u = torch.linspace(1.0, self.s_min, steps + 1, dtype=torch.float64)[:-1]
        return self.shift * u / (1.0 + (self.shift - 1.0) * u)

    def final_alpha_sigma(self) -> tuple[Tensor, Tensor]:
        return torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)

    def model_time(self, t: Tensor) -> Tensor:
        return torch.as_tensor(t, dtype=torch.float32) * self.time_scale


class ScheduledDenoiser:
    """Mixin: a denoiser whose times come from a `NoiseSchedule` in ``self.schedule``."""

    schedule: NoiseSchedule

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """See `NoiseSchedule.alpha_sigma`."""
        return self.schedule.alpha_sigma(t)

    def timesteps(self, steps: int) -> Tensor:
        """See `NoiseSchedule.timesteps`."""
        return self.schedule.timesteps(steps)

    def final_alpha_sigma(self) -> tuple[Tensor, Tensor]:
        """See `NoiseSchedule.final_alpha_sigma`."""
        return self.schedule.final_alpha_sigma()
