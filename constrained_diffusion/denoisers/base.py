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
    """Abstract denoiser ``D(x_t, t) = x0_hat``.

    Subclasses implement `predict_x0`, `alpha_sigma`, `timesteps` and
    `final_alpha_sigma`. Calling the denoiser (``denoiser(x_t, t)``) runs
    `predict_x0` and counts one network function evaluation in `nfe`; a batched
    call counts once. Solvers that backpropagate through the network record each backward pass
    with `count_backward` (`nbe`).

    Attributes:
        sample_shape: shape of one sample without the batch dimension, e.g. ``(C, H, W)``.
        space: ``"pixel"`` or ``"latent"``: where ``x0_hat`` lives.
        codec: optional `Codec` mapping latents to pixels (``None`` in pixel space).
        nfe: network forward evaluations since construction or `reset_counters`.
        nbe: backward passes through the network, likewise.
    """

    sample_shape: tuple[int, ...]
    space: Space = "pixel"
    codec: Codec | None = None

    def __init__(self, sample_shape: tuple[int, ...], space: Space = "pixel",
                 codec: Codec | None = None) -> None:
        if not sample_shape or any(int(s) < 1 for s in sample_shape):
            raise ValueError(f"sample_shape must be a non-empty tuple of positive sizes, got {sample_shape!r}")
        if space not in ("pixel", "latent"):
            raise ValueError(f"space must be 'pixel' or 'latent', got {space!r}")
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.space = space
        self.codec = codec
        self.nfe = 0
        self.nbe = 0

    # --- the model -------------------------------------------------------------------------
    @abstractmethod
    def predict_x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        """Estimate the clean sample.

        Args:
            x_t: noisy samples, shape ``(B, *sample_shape)``.
            t: a scalar tensor, one element of `timesteps`.

        Returns:
            ``x0_hat`` with the shape of ``x_t``. Differentiable with respect to ``x_t`` when
            called with grad enabled; solvers decide whether to keep a graph.
        """

    @abstractmethod
    def alpha_sigma(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(alpha_t, sigma_t)`` as scalar tensors, with ``x_t = alpha_t x0 + sigma_t eps``."""

    @abstractmethod
    def timesteps(self, steps: int) -> Tensor:
        """The descending 1-D grid of ``steps`` times that a sampler walks."""

    @abstractmethod
    def final_alpha_sigma(self) -> tuple[Tensor, Tensor]:
        """``(alpha, sigma)`` of the state the last sampler update moves to (usually ``(1, 0)``)."""

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
        """Map a sample to pixels: ``codec.decode`` in latent space, the identity otherwise."""
        if self.codec is None:
            return sample
        return self.codec.decode(sample)
