"""The denoiser role: a model's estimate of the clean sample, and its noise schedule.

Every model is written as ``x_t = alpha_t * x0 + sigma_t * eps`` (variance-preserving
diffusion: ``alpha = sqrt(abar_t)``, ``sigma = sqrt(1 - abar_t)``; rectified flow:
``alpha = 1 - s``, ``sigma = s``). A denoiser maps ``(x_t, t)`` to ``x0_hat(x_t)``, the
network's estimate of ``x0``. Conditioning (prompt, class, guidance scale) is bound when the
denoiser is built, so to the sampler a denoiser is a fixed function of ``(x_t, t)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from constrained_diffusion.denoisers.schedules import NoiseSchedule, TimeGrid

Space = Literal["pixel", "latent"]


@runtime_checkable
class Codec(Protocol):
    """Maps between a latent denoiser's space and pixel space (e.g. a VAE).

    ``encode``: pixels ``(B, C_pix, H, W)`` -> latents ``(B, *sample_shape)``;
    ``decode``: the inverse direction.
    """

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...


class Denoiser(ABC):
    """Abstract denoiser ``D(x_t, t) = x0_hat`` with its noise schedule.

    Adding a model family means writing `predict_x0` and choosing a `NoiseSchedule` for
    ``schedule``; everything about times comes from the schedule: `grid` (what samplers walk),
    and the conveniences `timesteps`, `alpha_sigma` and `final_alpha_sigma`. Calling the
    denoiser (``denoiser(x_t, t)``) runs `predict_x0` and counts one network function
    evaluation in `nfe`; a batched call counts once. Solvers that backpropagate through the
    network record each backward pass with `count_backward` (`nbe`).

    Args:
        sample_shape: shape of one sample without the batch dimension, e.g. ``(C, H, W)``.
        space: ``"pixel"`` or ``"latent"``; optional, since it follows from ``codec`` (a
            latent denoiser has a codec to pixels, a pixel one none). A contradicting value
            raises.
        codec: optional `Codec` mapping latents to pixels.
        schedule: the `NoiseSchedule`; subclasses may instead assign ``self.schedule``.

    Attributes:
        sample_shape: shape of one sample, e.g. ``(C, H, W)``.
        schedule: the `NoiseSchedule` giving ``(alpha_t, sigma_t)`` and the time grid.
        space: ``"pixel"`` or ``"latent"``: where ``x0_hat`` lives (read-only, from ``codec``).
        codec: optional `Codec` mapping latents to pixels (``None`` in pixel space).
        nfe: network forward evaluations since construction or `reset_counters`.
        nbe: backward passes through the network, likewise.
    """

    sample_shape: tuple[int, ...]
    codec: Codec | None = None

    def __init__(self, sample_shape: tuple[int, ...], space: Space | None = None,
                 codec: Codec | None = None, schedule: NoiseSchedule | None = None) -> None:
        if not sample_shape or any(int(s) < 1 for s in sample_shape):
            raise ValueError(f"sample_shape must be a non-empty tuple of positive sizes, got {sample_shape!r}")
        if space is not None and space not in ("pixel", "latent"):
            raise ValueError(f"space must be 'pixel' or 'latent', got {space!r}")
        implied = "pixel" if codec is None else "latent"
        if space is not None and space != implied:
            raise ValueError(f"space={space!r} contradicts codec={type(codec).__name__ if codec is not None else None}: "
                             "a latent denoiser has a codec to pixels, a pixel one none (omit space)")
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.codec = codec
        if schedule is not None:
            self.schedule = schedule
        self.nfe = 0
        self.nbe = 0

    @property
    def space(self) -> Space:
        """``"latent"`` if the denoiser has a codec to pixels, else ``"pixel"``."""
        return "pixel" if self.codec is None else "latent"

    @property
    def schedule(self) -> NoiseSchedule:
        """The `NoiseSchedule`: ``(alpha_t, sigma_t)``, the time grid and its final point."""
        schedule = self.__dict__.get("_schedule")
        if schedule is None:
            raise AttributeError(f"{type(self).__name__} has no schedule: pass schedule= to Denoiser.__init__ "
                                 "or assign self.schedule (a NoiseSchedule)")
        return schedule

    @schedule.setter
    def schedule(self, schedule: NoiseSchedule) -> None:
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")
        self._schedule = schedule

    # --- the model -------------------------------------------------------------------------
    @abstractmethod
    def predict_x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Estimate the clean sample.

        Args:
            x_t: noisy samples, shape ``(B, *sample_shape)``.
            t: a scalar tensor, one element of ``grid(steps).times``.

        Returns:
            ``x0_hat`` with the shape of ``x_t``. Differentiable with respect to ``x_t`` when
            called with grad enabled; solvers decide whether to keep a graph.
        """

    # --- times: all from the schedule ------------------------------------------------------
    def grid(self, steps: int) -> TimeGrid:
        """``schedule.grid(steps)``: the ``S`` times and the ``(alpha, sigma)`` of ``S + 1`` points."""
        return self.schedule.grid(steps)

    def timesteps(self, steps: int) -> Tensor:
        """``grid(steps).times``: the descending 1-D grid of ``steps`` times."""
        return self.schedule.timesteps(steps)

    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(alpha_t, sigma_t)`` as scalar tensors, with ``x_t = alpha_t x0 + sigma_t eps``."""
        return self.schedule.alpha_sigma(t)

    def final_alpha_sigma(self) -> tuple[Tensor, Tensor]:
        """``(alpha, sigma)`` of the state the last sampler update moves to (usually ``(1, 0)``)."""
        return self.schedule.final_alpha_sigma()

    # --- device and counting ---------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """Device on which samples are created (override for models on an accelerator)."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of samples (override for half-precision models)."""
        return torch.float32

    def __call__(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Evaluate ``x0_hat = D(x_t, t)`` and count one network function evaluation."""
        self.nfe += 1
        return self.predict_x0(x_t, t)

    def count_backward(self, n: int = 1) -> None:
        """Record ``n`` backward passes through the network (called by solvers)."""
        self.nbe += n

    def reset_counters(self) -> None:
        """Set `nfe` and `nbe` to zero."""
        self.nfe = 0
        self.nbe = 0

    def decode(self, sample: Tensor) -> Tensor:
        """Map a sample to pixels: ``codec.decode`` in latent space, the identity in pixel space."""
        if self.space == "pixel" or self.codec is None:
            return sample
        return self.codec.decode(sample)
