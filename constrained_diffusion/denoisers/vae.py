"""A diffusers VAE as a `Codec`: latents in the denoiser's scale to pixels in ``[-1, 1]`` and back.

Stable Diffusion 1.x/2.x store ``z = scaling_factor * E(x)``; SD3 and Flux also shift:
``z = scaling_factor * (E(x) - shift_factor)``. So::

    encode(x) = scaling_factor * (mean of q(z | x) - shift_factor)
    decode(z) = D(z / scaling_factor + shift_factor)

Pixels are ``(B, 3, H, W)``; latents ``(B, C, H / f, W / f)`` with ``f`` the VAE's factor.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class VAECodec:
    """Wraps an ``AutoencoderKL`` (``encode(x).latent_dist``, ``decode(z).sample``).

    Args:
        vae: the diffusers autoencoder.
        sample: draw from ``q(z | x)`` in `encode` instead of taking its mean.
    """

    def __init__(self, vae: nn.Module, sample: bool = False) -> None:
        self.vae = vae
        config = vae.config  # type: ignore[attr-defined]
        self.scaling_factor = float(getattr(config, "scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(getattr(config, "shift_factor", 0.0) or 0.0)
        self.factor = 2 ** (len(config.block_out_channels) - 1)
        self.sample = sample

    def encode(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Pixels ``(B, 3, H, W)`` in ``[-1, 1]`` -> latents ``(B, C, H/f, W/f)``."""
        dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist  # type: ignore[operator]
        z = dist.sample(generator) if self.sample else dist.mean
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, z: Tensor) -> Tensor:
        """Latents -> pixels in (roughly) ``[-1, 1]``."""
        return self.vae.decode(z.to(self.vae.dtype) / self.scaling_factor + self.shift_factor).sample  # type: ignore[operator]
