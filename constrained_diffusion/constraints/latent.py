"""Constraints on a latent model's ``z0_hat`` built from pixel-space data.

Three ways, from cheapest to most faithful (see the design notes):

* `latent_inpainting` — as the paper does: encode the masked image and pool the mask to
  the latent grid (a latent cell is known only when all its pixels are known); then
  ``e = m_z * (z_y - z0_hat)`` needs no decoder at all.
* `DecodedConstraint` — a pixel constraint through the decoder:
  ``e = -grad_z L(decode(z))`` with ``L`` the pixel constraint's loss (for a linear one,
  ``0.5 ||y - A decode(z)||^2``): one backward through the VAE decoder, never through the
  denoiser.
* `EncodedConstraint` ("VAE Newton") — the decoder's inverse Jacobian approximated by the
  encoder's: ``e = (E(D(z) + h' e_pix) - E(D(z))) / h'`` with ``h' = h / max|e_pix|``,
  forward passes only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from constrained_diffusion._validation import check_tensor, check_unit_interval
from constrained_diffusion.constraints.base import Constraint, LinearConstraint, NonlinearConstraint
from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.denoisers.base import Codec, Denoiser
from constrained_diffusion.linalg.finite_difference import H_ENCODER, check_h, default_h, fd_jvp, tf32_active
from constrained_diffusion.linalg.precision import upcast


def _codec_of(denoiser: Denoiser) -> Codec:
    if denoiser.codec is None:
        raise ValueError(f"{type(denoiser).__name__} has no codec; latent constraints need a latent model")
    return denoiser.codec


def latent_inpainting(denoiser: Denoiser, image: Tensor, mask: Tensor) -> Inpainting:
    """Inpainting in latent space from a pixel image ``(B, 3, H, W)`` and a pixel mask (1 = known).

    Args:
        denoiser: a latent denoiser with a codec (e.g. `StableDiffusionDenoiser`).
        image: pixels in ``[-1, 1]``; ``(H, W)`` must be the denoiser's latent size times the
            VAE factor.
        mask: ``(B or 1, 1, H, W)`` in ``[0, 1]``.

    Raises:
        ValueError: an image or mask whose size does not match the denoiser's, a mask outside
            ``[0, 1]``, NaN/inf values.
    """
    image = check_tensor("image", image, min_ndim=4)
    mask = check_tensor("mask", mask.to(image.dtype) if not mask.is_floating_point() else mask, min_ndim=4)
    check_unit_interval("mask", mask)
    codec = _codec_of(denoiser)
    h, w = denoiser.sample_shape[-2:]
    H, W = image.shape[-2:]
    if H % h or W % w or H // h != W // w:
        raise ValueError(f"image of size {(H, W)} does not match the denoiser's latents {(h, w)} times a VAE factor")
    if mask.shape[-2:] != (H, W):
        raise ValueError(f"mask of size {tuple(mask.shape[-2:])} does not match the image size {(H, W)}")
    factor = H // h
    with torch.no_grad():
        z = codec.encode((image * mask).to(denoiser.device, denoiser.dtype)).float()
    known = (F.avg_pool2d(mask.float(), factor) >= 1.0).float()  # a cell is known iff all its pixels are
    return Inpainting(z, known.to(z.device))


class _OnPixels:
    """What a latent constraint takes from the pixel constraint ``self.pixel`` it wraps: the
    batch size its data fix and the noise level of its residual (which is the pixel residual)."""

    pixel: Constraint

    @property
    def batch_size(self) -> int | None:
        return self.pixel.batch_size

    @property
    def noise_std(self) -> Tensor | None:
        """The pixel constraint's ``sigma_y``."""
        return self.pixel.noise_std

    @property
    def num_measurements(self) -> Tensor | None:
        """The pixel constraint's ``m``."""
        return self.pixel.num_measurements


class DecodedConstraint(_OnPixels, NonlinearConstraint):
    """A pixel-space constraint applied to ``decode(z)``; ``e = -grad_z L(decode(z))``.

    Args:
        pixel: the constraint on pixels: a `LinearConstraint` (loss ``0.5 ||y - A x||^2``) or a
            `NonlinearConstraint` (its ``loss``).
        codec: the latent model's codec.
    """

    def __init__(self, pixel: Constraint, codec: Codec) -> None:
        if not isinstance(pixel, (LinearConstraint, NonlinearConstraint)):
            raise TypeError("pixel must be a LinearConstraint or a NonlinearConstraint")
        self.pixel = pixel
        self.codec = codec

    def pixel_loss(self, x: Tensor) -> Tensor:
        if isinstance(self.pixel, LinearConstraint):
            return 0.5 * self.pixel.measurement_residual(x).flatten(1).pow(2).sum(dim=1)
        return self.pixel.loss(x)  # type: ignore[union-attr]

    def decode(self, z: Tensor) -> Tensor:
        """Latents to pixels, in float32 (or float64 when the latents are)."""
        return upcast(self.codec.decode(z))

    def loss(self, z: Tensor) -> Tensor:
        return self.pixel_loss(self.decode(z))

    def residual(self, z: Tensor) -> Tensor:
        with torch.no_grad():
            return self.pixel.residual(self.decode(z))

    def error_and_residual(self, z: Tensor) -> tuple[Tensor, Tensor]:
        e, _ = super().error_and_residual(z)
        return e, self.residual(z)


class EncodedConstraint(_OnPixels, Constraint):
    """"VAE Newton": a pixel error mapped to latents by a finite difference of the encoder.

    ``e = (E(D(z) + h' e_pix) - E(D(z))) / h'`` with ``e_pix`` the pixel constraint's error at
    ``D(z)`` and ``h' = h / max|e_pix|`` per sample: two encoder and one decoder forward, no
    backward.

    Args:
        pixel: the pixel-space constraint.
        codec: the latent model's codec.
        h: max-norm of the pixel perturbation; ``None`` (default): precision-aware,
            `default_h` of the latents' dtype (and TF32 on CUDA) with the floor ``H_ENCODER``,
            i.e. 0.01 in float32, about 0.11 in float16 and 0.31 in bfloat16 (pixels in ``[-1, 1]``).
            A given ``h`` below the rounding floor of the encoder's dtype is refused (`check_h`:
            when sampling starts, and at the first error evaluation in a new dtype).
    """

    H_FLOAT32 = H_ENCODER
    """The step in full float32 (`constrained_diffusion.linalg.finite_difference.H_ENCODER`, where the rule lives)."""

    def __init__(self, pixel: Constraint, codec: Codec, h: float | None = None) -> None:
        if h is not None and not h > 0:
            raise ValueError(f"h must be > 0, got {h}")
        self.pixel = pixel
        self.codec = codec
        self.h = h
        self._checked: set[torch.dtype] = set()

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        """Refuse a given ``h`` below the rounding floor of the codec's dtype (where the codec tells it), before any network call."""
        vae = getattr(self.codec, "vae", self.codec)
        dtype, device = getattr(vae, "dtype", None), getattr(vae, "device", None)
        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            self._check(dtype, device)

    def _check(self, dtype: torch.dtype, device: torch.device | str | None) -> None:
        if self.h is not None and dtype not in self._checked:
            check_h(self.h, dtype, device)
            self._checked.add(dtype)

    @torch.no_grad()
    def error_and_residual(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self._check(z.dtype, z.device)  # a Python check, once per dtype: no host synchronisation
        x = self.codec.decode(z).float()
        e_pix, residual = self.pixel.error_and_residual(x)
        e = fd_jvp(lambda u: self.codec.encode(u.to(z.dtype)).float(), x, e_pix, self.step(z))  # one batched encoder call
        return e.to(z.dtype), residual

    def step(self, z: Tensor) -> float:
        """The max-norm ``h`` of the pixel perturbation for latents ``z`` (the given ``h``, else precision-aware)."""
        if self.h is not None:
            return float(self.h)
        tf32 = z.dtype == torch.float32 and tf32_active(z.device)
        return float(default_h(z.dtype, tf32, floor=self.H_FLOAT32))

    def error(self, z: Tensor) -> Tensor:
        return self.error_and_residual(z)[0]

    @torch.no_grad()
    def residual(self, z: Tensor) -> Tensor:
        return self.pixel.residual(self.codec.decode(z).float())
