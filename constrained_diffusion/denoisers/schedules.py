"""Noise schedules in ``(alpha, sigma)`` form and the time grids a sampler walks.

* `VPSchedule` — variance-preserving DDPM/DDIM: ``alpha_t = sqrt(abar_t)``,
  ``sigma_t = sqrt(1 - abar_t)`` with ``abar_t = prod_{s<=t} (1 - beta_s)`` on integer
  ``t in {0, ..., T-1}`` (Ho et al., 2020; Song et al., 2021).
* `FlowSchedule` — rectified flow: ``x_t = (1 - s) x0 + s eps``, ``alpha = 1 - s``,
  ``sigma = s`` with ``s in (0, 1]`` (Liu et al., 2023; Esser et al., 2024), optionally with
  the resolution shift ``s' = shift s / (1 + (shift - 1) s)``.
* `FlowMatchEulerSchedule` — the rectified flow on the grid of diffusers'
  ``FlowMatchEulerDiscreteScheduler`` (SD3, Flux), computed from its configuration.

A schedule's `NoiseSchedule.grid` is the one thing a sampler reads: a `TimeGrid` with the
``S`` times to evaluate the denoiser at and the ``(alpha, sigma)`` of those ``S`` points and
of the final point that the last update moves to. It is a pure function of ``steps``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

Spacing = Literal["trailing", "leading", "linspace"]
FlowBase = Literal["scheduler", "linear"]
TimeShift = Literal["exponential", "linear"]


@dataclass(frozen=True, eq=False)
class TimeGrid:
    """The times a sampler walks and the ``(alpha, sigma)`` of every point, final point included.

    Step ``i`` evaluates the denoiser at ``times[i]``, where ``x = alpha[i] x0 + sigma[i] eps``,
    and moves to the state with ``(alpha[i + 1], sigma[i + 1])``; the last update
    (``i = S - 1``) moves to the final point ``(alpha[S], sigma[S])``, usually ``(1, 0)``.

    Attributes:
        times: ``(S,)`` descending sampling times passed to ``predict_x0`` (``long`` for
            `VPSchedule`, ``float64`` for flows).
        alpha: ``(S + 1,)`` float64: ``alpha`` of ``times[0..S-1]``, then of the final point.
        sigma: ``(S + 1,)`` float64, likewise.

    Examples:
        >>> grid = VPSchedule.linear().grid(4)
        >>> len(grid), grid.times.tolist()
        (4, [999, 749, 499, 249])
        >>> grid.point(4)  # the final point: a clean sample
        (1.0, 0.0)
    """

    times: Tensor
    alpha: Tensor
    sigma: Tensor

    def __post_init__(self) -> None:
        if self.times.ndim != 1 or self.times.numel() < 1:
            raise ValueError(f"times must be a non-empty 1-D tensor, got shape {tuple(self.times.shape)}")
        S = self.times.numel()
        for name in ("alpha", "sigma"):
            value = getattr(self, name)
            if value.shape != (S + 1,):
                raise ValueError(f"{name} must have shape ({S + 1},) for {S} times (the final point included), "
                                 f"got {tuple(value.shape)}")
            object.__setattr__(self, name, value.to(torch.float64))

    def __len__(self) -> int:
        """``S``, the number of sampling steps."""
        return int(self.times.numel())

    def point(self, i: int) -> tuple[float, float]:
        """``(alpha[i], sigma[i])`` as Python floats, ``0 <= i <= S`` (``i = S``: the final point)."""
        if not -len(self.alpha) <= i < len(self.alpha):
            raise IndexError(f"i must lie in [0, {len(self)}] for a grid of {len(self)} steps, got {i}")
        return float(self.alpha[i]), float(self.sigma[i])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TimeGrid):
            return NotImplemented
        return all(a.dtype == b.dtype and torch.equal(a, b) for a, b in
                   ((self.times, other.times), (self.alpha, other.alpha), (self.sigma, other.sigma)))

    __hash__ = None  # type: ignore[assignment]


class NoiseSchedule(ABC):
    """A family ``x_t = alpha_t x0 + sigma_t eps`` with a grid of sampling times.

    Subclasses give `alpha_sigma`, `timesteps`, `final_alpha_sigma` and `model_time`;
    `grid` assembles them. All of them are pure: they read the schedule and mutate nothing.
    """

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

    def grid(self, steps: int) -> TimeGrid:
        """The `TimeGrid` of ``steps`` sampling times and their ``(alpha, sigma)``, final point included.

        Raises:
            ValueError: ``steps`` is not an integer >= 1 (or exceeds what the schedule allows).
        """
        times = self.timesteps(steps)
        points = [self.alpha_sigma(t) for t in times] + [self.final_alpha_sigma()]
        alpha = torch.stack([torch.as_tensor(a, dtype=torch.float64) for a, _ in points])
        sigma = torch.stack([torch.as_tensor(s, dtype=torch.float64) for _, s in points])
        return TimeGrid(times, alpha, sigma)


def _check_steps(steps: int, limit: int | None = None, why: str = "the number of training timesteps") -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if limit is not None and steps > limit:
        raise ValueError(f"steps must be <= {limit} ({why}), got {steps}")


def _linspace(start: float, stop: float, num: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """``numpy.linspace(start, stop, num)`` bit for bit: ``start + k (stop - start) / (num - 1)``, last = ``stop``."""
    k = torch.arange(num, dtype=dtype)
    if num == 1:
        return k + start
    y = k * ((stop - start) / (num - 1)) + start
    y[-1] = stop
    return y


class VPSchedule(NoiseSchedule):
    """Variance-preserving schedule defined by its betas.

    The grid reproduces diffusers' ``DDIMScheduler.set_timesteps`` for each spacing, with
    ``T`` training times and ``S = steps``:

    * ``"trailing"`` (the default, Lin et al., 2024): ``round(T - k T/S) - 1``, starts at ``T - 1``;
    * ``"leading"`` (Stable Diffusion's DDIM): ``k (T // S) + offset``;
    * ``"linspace"``: ``round(linspace(0, T - 1, S))`` reversed.

    Args:
        betas: 1-D tensor of ``T`` noise variances in ``(0, 1)``.
        spacing: how `timesteps` picks ``steps`` of the ``T`` training times (see above).
        offset: added to ``"leading"`` timesteps (``steps_offset`` in diffusers).
        final_alpha_one: if true the last update moves to ``abar = 1`` (a clean sample);
            otherwise to ``abar_0`` (diffusers' ``set_alpha_to_one``).

    Examples:
        >>> VPSchedule.scaled_linear(spacing="leading", offset=1).timesteps(4).tolist()
        [751, 501, 251, 1]
    """

    def __init__(self, betas: Tensor, spacing: Spacing = "trailing", offset: int = 0,
                 final_alpha_one: bool = True) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() < 2:
            raise ValueError(f"betas must be a 1-D tensor of at least 2 values, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must lie in the open interval (0, 1)")
        self._setup(torch.cumprod(1.0 - betas, dim=0), spacing, offset, final_alpha_one)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Tensor, spacing: Spacing = "trailing", offset: int = 0,
                            final_alpha_one: bool = True) -> VPSchedule:
        """A schedule from ``abar_t`` directly (e.g. a diffusers scheduler's ``alphas_cumprod``).

        Args:
            alphas_cumprod: 1-D tensor of ``T >= 2`` non-increasing values in ``[0, 1]`` with
                ``abar_0 < 1`` (``abar_{T-1} = 0`` is allowed: zero terminal SNR).
            spacing: as for the constructor.
            offset: as for the constructor.
            final_alpha_one: as for the constructor.
        """
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.ndim != 1 or abar.numel() < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D tensor of at least 2 values, got shape {tuple(abar.shape)}")
        if not bool(((abar >= 0) & (abar <= 1)).all()) or not float(abar[0]) < 1 or bool((abar[1:] > abar[:-1]).any()):
            raise ValueError("alphas_cumprod must be non-increasing in [0, 1] with alphas_cumprod[0] < 1")
        schedule = cls.__new__(cls)
        schedule._setup(abar, spacing, offset, final_alpha_one)
        return schedule

    def _setup(self, alphas_cumprod: Tensor, spacing: Spacing, offset: int, final_alpha_one: bool) -> None:
        if spacing not in ("trailing", "leading", "linspace"):
            raise ValueError(f"spacing must be 'trailing', 'leading' or 'linspace', got {spacing!r}")
        if int(offset) < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.alphas_cumprod = alphas_cumprod
        self.spacing: Spacing = spacing
        self.offset = int(offset)
        self.final_alpha_one = bool(final_alpha_one)

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 2e-2,
               num_train_timesteps: int = 1000, **kwargs: Any) -> VPSchedule:
        """DDPM's linear betas (``1e-4 ... 2e-2`` over ``T = 1000`` by default)."""
        return cls(torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64), **kwargs)

    @classmethod
    def scaled_linear(cls, beta_start: float = 0.00085, beta_end: float = 0.012,
                      num_train_timesteps: int = 1000, **kwargs: Any) -> VPSchedule:
        """Stable Diffusion's betas: linear in ``sqrt(beta)``."""
        b = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
        return cls(b, **kwargs)

    @property
    def betas(self) -> Tensor:
        """``beta_t = 1 - abar_t / abar_{t-1}`` (``abar_{-1} = 1``), shape ``(T,)``."""
        previous = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod[:-1]])
        return 1.0 - self.alphas_cumprod / previous

    @property
    def num_train_timesteps(self) -> int:
        """``T``, the number of training times."""
        return int(self.alphas_cumprod.numel())

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        abar = self.alphas_cumprod[int(t)]
        return abar.sqrt(), (1.0 - abar).sqrt()

    def timesteps(self, steps: int) -> Tensor:
        """``steps`` descending integer times (``long``), as diffusers' DDIM with this spacing.

        Raises:
            ValueError: ``steps`` < 1, > ``T``, or (``"leading"``) so large that
                ``(steps - 1) (T // steps) + offset`` passes ``T - 1``.
        """
        T = self.num_train_timesteps
        _check_steps(steps, T)
        if self.spacing == "trailing":
            delta = (T - T / steps) - T  # numpy.arange's increment, for bit-identical times
            ts = torch.round(T + torch.arange(steps, dtype=torch.float64) * delta) - 1
        elif self.spacing == "leading":
            ts = torch.arange(steps, dtype=torch.float64).flip(0) * (T // steps) + self.offset
            if int(ts[0]) > T - 1:
                raise ValueError(f"steps={steps} with 'leading' spacing and offset {self.offset} reaches time "
                                 f"{int(ts[0])} > {T - 1}; use fewer steps")
        else:
            ts = torch.round(_linspace(0.0, T - 1.0, steps)).flip(0)
        return ts.long()

    def _final_alpha_cumprod(self) -> Tensor:
        return torch.ones(1, dtype=torch.float64) if self.final_alpha_one else self.alphas_cumprod[:1]

    def final_alpha_sigma(self) -> tuple[Tensor, Tensor]:
        abar = self._final_alpha_cumprod()[0]
        return abar.sqrt(), (1.0 - abar).sqrt()

    def model_time(self, t: Tensor) -> Tensor:
        return t

    def grid(self, steps: int) -> TimeGrid:
        times = self.timesteps(steps)
        abar = torch.cat([self.alphas_cumprod[times], self._final_alpha_cumprod()])
        return TimeGrid(times, abar.sqrt(), (1.0 - abar).sqrt())


class FlowSchedule(NoiseSchedule):
    """Rectified-flow schedule ``x_s = (1 - s) x0 + s eps`` on ``s`` in ``(0, 1]``.

    The grid is ``u_k = 1 - k (1 - s_min) / S`` for ``k = 0..S-1``, shifted to
    ``s_k = shift u_k / (1 + (shift - 1) u_k)``; the final point is ``s = 0``.

    Args:
        shift: resolution shift (SD3 uses 3.0); ``1.0`` leaves the grid uniform.
        time_scale: the network receives ``s * time_scale`` (``1000`` for diffusers models).
        s_min: smallest grid time before the final update to ``s = 0``.

    Examples:
        >>> grid = FlowSchedule(shift=3.0).grid(4)
        >>> grid.times
        tensor([1.0000, 0.9000, 0.7500, 0.5000], dtype=torch.float64)
        >>> grid.point(4)
        (1.0, 0.0)
    """

    def __init__(self, shift: float = 1.0, time_scale: float = 1.0, s_min: float = 0.0) -> None:
        if not shift > 0:
            raise ValueError(f"shift must be > 0, got {shift}")
        if not 0.0 <= s_min < 1.0:
            raise ValueError(f"s_min must lie in [0, 1), got {s_min}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
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

    def grid(self, steps: int) -> TimeGrid:
        times = self.timesteps(steps)
        alpha_final, sigma_final = self.final_alpha_sigma()
        sigma = torch.cat([times, sigma_final.reshape(1)])
        return TimeGrid(times, torch.cat([1.0 - times, alpha_final.reshape(1)]), sigma)


_UNSUPPORTED_FLOW_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas")


class FlowMatchEulerSchedule(FlowSchedule):
    """The ``s`` grid of diffusers' ``FlowMatchEulerDiscreteScheduler``, computed without one.

    With ``T`` training steps and ``S = steps`` the base grid ``u`` is

    * ``base="scheduler"`` (SD3): ``linspace(u_max, u_min, S)`` between the extreme training
      sigmas, ``u_max = 1`` and ``u_min = 1/T`` (static shift: ``u_min`` shifted once already);
    * ``base="linear"`` (the sigmas Flux passes): ``linspace(1, 1/S, S)`` in float32.

    It is then shifted: statically, ``s = shift u / (1 + (shift - 1) u)``; or dynamically with
    ``mu`` (from the latent sequence length), ``s = e^mu / (e^mu + 1/u - 1)``
    (``time_shift="exponential"``) or ``s = mu / (mu + 1/u - 1)`` (``"linear"``). With
    ``shift_terminal`` the grid is stretched so that it ends there:
    ``s <- 1 - (1 - s) (1 - shift_terminal) / (1 - s_{S-1})``. Times are float32 values (as
    diffusers stores them) held in float64; the final point is ``s = 0``.

    Args:
        shift: static shift (used when ``mu`` is ``None``).
        mu: dynamic-shift parameter; ``None`` for a static shift.
        time_shift: ``"exponential"`` or ``"linear"`` dynamic shift.
        shift_terminal: value the last grid time is stretched to (``None``: no stretch).
        num_train_timesteps: ``T``; the network receives ``s T`` (see `model_time`).
        base: ``"scheduler"`` or ``"linear"`` (see above).

    Examples:
        >>> sd3 = FlowMatchEulerSchedule(shift=3.0)  # SD3: down to the shifted 1/T
        >>> times = [round(s, 4) for s in sd3.grid(4).times.tolist()]
        >>> times
        [1.0, 0.8577, 0.6022, 0.0089]
        >>> flux = FlowMatchEulerSchedule(mu=0.5, base="linear")  # Flux: dynamic shift of linspace(1, 1/S, S)
        >>> times = [round(s, 4) for s in flux.grid(4).times.tolist()]
        >>> times
        [1.0, 0.8318, 0.6225, 0.3547]
    """

    def __init__(self, shift: float = 1.0, mu: float | None = None, time_shift: TimeShift = "exponential",
                 shift_terminal: float | None = None, num_train_timesteps: int = 1000,
                 base: FlowBase = "scheduler") -> None:
        if not isinstance(num_train_timesteps, int) or num_train_timesteps < 2:
            raise ValueError(f"num_train_timesteps must be an integer >= 2, got {num_train_timesteps!r}")
        super().__init__(shift=shift, time_scale=float(num_train_timesteps))
        if time_shift not in ("exponential", "linear"):
            raise ValueError(f"time_shift must be 'exponential' or 'linear', got {time_shift!r}")
        if mu is not None and time_shift == "linear" and not mu > 0:
            raise ValueError(f"mu must be > 0 for a linear time shift, got {mu}")
        if shift_terminal is not None and not 0.0 <= shift_terminal < 1.0:
            raise ValueError(f"shift_terminal must lie in [0, 1), got {shift_terminal}")
        if base not in ("scheduler", "linear"):
            raise ValueError(f"base must be 'scheduler' or 'linear', got {base!r}")
        self.mu = None if mu is None else float(mu)
        self.time_shift: TimeShift = time_shift
        self.shift_terminal = shift_terminal or None
        self.num_train_timesteps = num_train_timesteps
        self.base: FlowBase = base

    @classmethod
    def from_config(cls, config: Mapping[str, Any], image_seq_len: int, base: FlowBase = "scheduler",
                    max_shift: float = 1.15) -> FlowMatchEulerSchedule:
        """The grid a pipeline gets from a scheduler with this configuration.

        Args:
            config: a ``FlowMatchEulerDiscreteScheduler`` configuration (``scheduler.config``).
            image_seq_len: the transformer's latent sequence length (sets ``mu`` under
                ``use_dynamic_shifting``: linear from ``base_shift`` at ``base_image_seq_len`` to
                ``max_shift`` at ``max_image_seq_len``).
            base: ``"scheduler"`` (SD3) or ``"linear"`` (Flux's sigmas).
            max_shift: the pipeline's fallback when ``config`` has no ``max_shift``.

        Raises:
            ValueError: a configuration option whose grid this class does not reproduce.
        """
        for option in _UNSUPPORTED_FLOW_OPTIONS:
            if config.get(option, False):
                raise ValueError(f"unsupported scheduler configuration: {option}=True")
        mu = None
        if config.get("use_dynamic_shifting", False):
            base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
            base_shift, top_shift = config.get("base_shift", 0.5), config.get("max_shift", max_shift)
            slope = (top_shift - base_shift) / (max_len - base_len)
            mu = image_seq_len * slope + base_shift - slope * base_len
        return cls(shift=float(config.get("shift", 1.0)), mu=mu, time_shift=config.get("time_shift_type", "exponential"),
                   shift_terminal=config.get("shift_terminal"),
                   num_train_timesteps=int(config.get("num_train_timesteps", 1000)), base=base)

    def _shifted(self, u: Tensor) -> Tensor:
        """The static or dynamic shift of ``u``, in ``u``'s dtype (diffusers' formulas)."""
        if self.mu is None:
            return self.shift * u / (1 + (self.shift - 1) * u)
        # tensor / tensor: ``float / tensor`` would be ``reciprocal * float``, rounded differently
        m = torch.full_like(u, math.exp(self.mu) if self.time_shift == "exponential" else self.mu)
        return m / (m + (torch.ones_like(u) / u - 1))

    def timesteps(self, steps: int) -> Tensor:
        """The ``steps`` grid times, descending from ``s = 1`` (or ``shift_terminal``-stretched).

        Raises:
            ValueError: ``steps`` < 1, or < 2 with ``shift_terminal`` (the stretch needs two points).
        """
        _check_steps(steps)
        if self.shift_terminal and steps < 2:
            raise ValueError(f"steps must be >= 2 with shift_terminal={self.shift_terminal}, got {steps}")
        T = self.num_train_timesteps
        if self.base == "linear":
            u = _linspace(1.0, 1.0 / steps, steps).float()
        else:
            # the extreme training sigmas, 1 and 1/T in float32 (shifted once already if static)
            ends = torch.tensor([float(T), 1.0], dtype=torch.float32) / T
            u_max, u_min = (self._shifted(ends) if self.mu is None else ends).tolist()
            u = _linspace(u_max * T, u_min * T, steps) / T
        s = self._shifted(u)
        if self.shift_terminal:
            one_minus = 1 - s
            s = 1 - one_minus / (one_minus[-1] / (1 - self.shift_terminal))
        return s.float().double()
