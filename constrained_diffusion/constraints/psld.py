"""PSLD's latent constraint: measurement consistency plus the "gluing" term.

Rout, Raoof, Daras, Caramanis, Dimakis & Shakkottai, *Solving Linear Inverse Problems Provably
via Posterior Sampling with Latent Diffusion Models*, NeurIPS 2023. For a latent ``z`` with
decoder ``D`` and encoder ``E``, and a pixel-space linear operator ``A`` with measurements ``y``:

    loss(z) = omega ||y - A D(z)||_2 + gamma ||E(A^T y + (I - A^T A) D(z)) - z||_2

The first term is latent DPS; the second asks ``z`` to be a fixed point of "decode, replace the
measured part by the measurements, encode" (for inpainting ``A^T A`` is the mask). Both are
norms, not squares, as in the paper; one backward runs through the decoder and the encoder.
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrained_diffusion.constraints.base import LinearConstraint
from constrained_diffusion.constraints.latent import DecodedConstraint
from constrained_diffusion.denoisers.base import Codec
from constrained_diffusion.linalg.precision import upcast


def _norm(v: Tensor) -> Tensor:
    """Per-sample 2-norm ``(B,)`` with a finite gradient at 0."""
    return v.flatten(1).pow(2).sum(dim=1).clamp_min(1e-24).sqrt()


class PSLDConstraint(DecodedConstraint):
    """PSLD's loss on latents; ``residual`` is the pixel residual ``||y - A D(z)||``.

    Args:
        pixel: the linear constraint on decoded pixels (``A``, ``y``).
        codec: the latent model's codec (``encode`` and ``decode``); ``None`` for a pixel-space
            model (both the identity: the gluing term becomes ``||A^T (y - A x)||``).
        omega: weight of the measurement term (PSLD: 1).
        gamma: weight of the gluing term (PSLD: 0.1).

    Raises:
        TypeError: ``pixel`` is not a `LinearConstraint`.
        ValueError: a negative weight.
    """

    def __init__(self, pixel: LinearConstraint, codec: Codec | None, omega: float = 1.0, gamma: float = 0.1) -> None:
        if not isinstance(pixel, LinearConstraint):
            raise TypeError(f"pixel must be a LinearConstraint (PSLD needs A and A^T), got {type(pixel).__name__}")
        if not omega >= 0 or not gamma >= 0:
            raise ValueError(f"omega and gamma must be >= 0, got omega={omega}, gamma={gamma}")
        self.pixel, self.codec, self.omega, self.gamma = pixel, codec, float(omega), float(gamma)  # type: ignore[assignment]

    def decode(self, z: Tensor) -> Tensor:
        return upcast(z if self.codec is None else self.codec.decode(z))

    def _encode(self, x: Tensor) -> Tensor:
        return upcast(x if self.codec is None else self.codec.encode(x))

    def _adjoint(self, v: Tensor, like: Tensor) -> Tensor:
        """``A^T v``, differentiable in ``v``: the closed form, or autograd through ``A`` at 0."""
        if self.pixel._has_closed_form_adjoint():
            return self.pixel.adjoint(v)
        with torch.enable_grad():
            probe = torch.zeros_like(like).requires_grad_(True)
            (g,) = torch.autograd.grad(self.pixel.forward(probe), probe, v, create_graph=True)
        return g

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        """Pixel-space models: the pixel constraint must fit the samples (latent models are
        checked at the first decode)."""
        if self.codec is None:
            self.pixel.validate(sample_shape)

    def loss(self, z: Tensor) -> Tensor:
        x = self.decode(z)
        r = self.pixel.measurement_residual(x)
        loss = self.omega * _norm(r)
        if self.gamma > 0:
            y = self.pixel.y.to(x)
            glued = self._adjoint(y.expand(x.shape[0], *y.shape[1:]), x) + x - self._adjoint(self.pixel.forward(x), x)
            loss = loss + self.gamma * _norm(self._encode(glued.to(z.dtype)) - z)
        return loss.to(z.dtype)
