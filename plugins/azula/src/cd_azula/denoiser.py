r"""azula denoisers as ``cd.Denoiser`` and ``cd.Denoiser`` as azula denoisers, both ways.

`azula <https://github.com/probabilists/azula>`_ writes a model as a denoiser
``q(X | x_t) = denoiser(x_t, t)`` (a posterior whose ``.mean`` is ``E[X | x_t]``) on a schedule
``(alpha_t, sigma_t) = schedule(t)`` of a continuous time ``t`` in ``[0, 1]``, and its samplers walk
``linspace(1, 0, steps + 1)``. This library's denoisers take ``(x_t, t)`` on a `NoiseSchedule`
with the same ``x_t = alpha_t x0 + sigma_t eps``, so only the clocks differ:

* `AzulaDenoiser` wraps an azula denoiser as a ``cd.Denoiser`` on `AzulaSchedule` (azula's own
  schedule and grid: the times ``linspace(1, 0, S + 1)[:-1]``, the last update moving to
  ``schedule(0)``), so the library's samplers walk exactly the times azula's would;
* `CDAzulaDenoiser` wraps a ``cd.Denoiser`` on a discrete `VPSchedule` (e.g. the shipped MNIST
  DDPM) as an azula denoiser on `DiscreteSchedule`: azula's time ``t`` is the training time
  ``k = round(t (T - 1))``, ``(alpha, sigma)`` those of ``k``.

``AzulaDenoiser(CDAzulaDenoiser(model))`` is the network itself on azula's clock (tested), which is
how the parity tests (`cd_azula.parity`) run both libraries on one network.
"""

from __future__ import annotations

import azula
import torch
from azula.denoise import DiracPosterior
from torch import Tensor, nn

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.denoisers.schedules import NoiseSchedule, VPSchedule

__all__ = ["AzulaDenoiser", "AzulaSchedule", "CDAzulaDenoiser", "DiscreteSchedule"]


class AzulaSchedule(NoiseSchedule):
    """An azula ``Schedule`` as a `NoiseSchedule` with azula's sampler grid.

    ``timesteps(S)`` is ``linspace(1, 0, S + 1)[:-1]`` (float64; azula's ``Sampler.timesteps``
    without its last point), the final point ``schedule(0)``; ``alpha_sigma(t) = schedule(t)``.

    Args:
        schedule: the azula schedule (``alpha_t, sigma_t = schedule(t)``).
        dtype: the dtype of azula's time grid (its samplers default to float32), so the times
            the network sees are azula's bit for bit.
    """

    def __init__(self, schedule: azula.noise.Schedule, dtype: torch.dtype = torch.float32) -> None:
        if not callable(schedule):
            raise TypeError(f"schedule must be an azula.noise.Schedule, got {type(schedule).__name__}")
        self.azula = schedule
        self.time_dtype = dtype

    def _times(self, steps: int) -> Tensor:
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        return torch.linspace(1.0, 0.0, steps + 1, dtype=self.time_dtype)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, sigma = self.azula(torch.as_tensor(t, dtype=self.time_dtype))
        return torch.as_tensor(alpha, dtype=torch.float64), torch.as_tensor(sigma, dtype=torch.float64)

    def timesteps(self, steps: int) -> Tensor:
        return self._times(steps)[:-1]

    def final_alpha_sigma(self) -> tuple[Tensor, Tensor]:
        return self.alpha_sigma(torch.zeros((), dtype=self.time_dtype))

    def model_time(self, t: Tensor) -> Tensor:
        return t


class AzulaDenoiser(Denoiser):
    r"""An azula denoiser (``denoiser(x_t, t).mean = E[X | x_t]``) as a ``cd.Denoiser`` on `AzulaSchedule`.

    Args:
        model: an ``azula.denoise.Denoiser`` (an ``nn.Module`` with a ``schedule``).
        sample_shape: ``(C, H, W)`` (or any shape) of one sample.

    Raises:
        TypeError: ``model`` has no azula ``schedule`` or is not callable.

    Examples:
        >>> import torch, azula
        >>> import constrained_diffusion as cd
        >>> from azula.linalg.covariance import DiagonalCovariance
        >>> prior = azula.denoise.GaussianDenoiser(torch.zeros(4), DiagonalCovariance(torch.ones(4)), azula.noise.VPSchedule())
        >>> model = AzulaDenoiser(prior, (4,))
        >>> out = cd.ConstrainedSampler(model, steps=8, inner_steps=0).sample(generator=torch.Generator().manual_seed(0), progress=False)
        >>> tuple(out.sample.shape), out.nfe
        ((1, 4), 8)
    """

    def __init__(self, model: nn.Module, sample_shape: tuple[int, ...]) -> None:
        if not callable(model) or not callable(getattr(model, "schedule", None)):
            raise TypeError(f"model must be an azula.denoise.Denoiser with a schedule, got {type(model).__name__}")
        super().__init__(sample_shape, schedule=AzulaSchedule(model.schedule))
        self.model = model

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None) if isinstance(self.model, nn.Module) else None
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.model.parameters(), None) if isinstance(self.model, nn.Module) else None
        return p.dtype if p is not None else torch.float32

    def predict_x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``E[X | x_t]`` of the azula denoiser at azula time ``t``."""
        return self.model(x_t, torch.as_tensor(t, device=x_t.device)).mean

    def __repr__(self) -> str:
        return f"AzulaDenoiser({type(self.model).__name__}, sample_shape={self.sample_shape})"


class DiscreteSchedule(azula.noise.Schedule):
    """A discrete `VPSchedule` on azula's clock: time ``t`` in ``[0, 1]`` is training time ``k = round(t (T - 1))``.

    Examples:
        >>> import torch
        >>> from constrained_diffusion.denoisers.schedules import VPSchedule
        >>> s = DiscreteSchedule(VPSchedule.linear().alphas_cumprod)
        >>> s.index(torch.tensor([1.0, 0.5, 0.0])).tolist()
        [999, 500, 0]
    """

    def __init__(self, alphas_cumprod: Tensor) -> None:
        self.alphas_cumprod = alphas_cumprod.to(torch.float64)
        self.T = int(alphas_cumprod.numel())

    def index(self, t: Tensor) -> Tensor:
        """``k = round(t (T - 1))`` as ``long``, clamped to ``[0, T - 1]``."""
        return torch.round(torch.as_tensor(t, dtype=torch.float64) * (self.T - 1)).long().clamp(0, self.T - 1)

    def __call__(self, t: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t)
        abar = self.alphas_cumprod[self.index(t).cpu()].to(device=t.device, dtype=t.dtype if t.is_floating_point() else torch.float32)
        return abar.sqrt(), (1 - abar).sqrt()


class CDAzulaDenoiser(azula.denoise.Denoiser):
    """A ``cd.Denoiser`` on a `VPSchedule` as an azula denoiser on `DiscreteSchedule` (returns a ``DiracPosterior``).

    Args:
        denoiser: the library's denoiser (its schedule must be a discrete `VPSchedule`).

    Raises:
        TypeError: ``denoiser`` is not a ``cd.Denoiser`` on a `VPSchedule`.
    """

    def __init__(self, denoiser: Denoiser) -> None:
        super().__init__()
        if not isinstance(denoiser, Denoiser) or not isinstance(denoiser.schedule, VPSchedule):
            raise TypeError("denoiser must be a constrained_diffusion.Denoiser on a VPSchedule (discrete times), "
                            f"got {type(denoiser).__name__}")
        self.denoiser = denoiser
        self.schedule = DiscreteSchedule(denoiser.schedule.alphas_cumprod)

    def forward(self, x_t: Tensor, t: Tensor, **kwargs: object) -> DiracPosterior:
        ks = self.schedule.index(t).reshape(-1)
        if ks.numel() > 1 and not bool((ks == ks[0]).all()):
            raise ValueError("CDAzulaDenoiser takes one time per call (azula's samplers pass a scalar t)")
        return DiracPosterior(mean=self.denoiser(x_t, ks[0]))
