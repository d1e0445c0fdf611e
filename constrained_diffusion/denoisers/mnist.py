"""The MNIST denoisers that ship with the package: a DDPM and a rectified flow on 32x32 digits.

* ``"ddpm"``: epsilon prediction, DDPM linear betas ``1e-4 .. 2e-2``, ``T = 1000`` (the paper's
  MNIST set-up); ``x0 = (x_t - sigma eps_hat) / alpha``.
* ``"flow"``: velocity ``v = eps - x0`` on ``x_s = (1 - s) x0 + s eps``, network time
  ``1000 s``; ``x0 = x_s - s v_hat``.

Samples are ``(B, 1, 32, 32)`` in ``[-1, 1]`` (digits zero-padded from 28x28).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from constrained_diffusion.denoisers.network import NetworkDenoiser
from constrained_diffusion.denoisers.schedules import FlowSchedule, VPSchedule
from constrained_diffusion.models.pretrained import pretrained_path
from constrained_diffusion.models.unet import UNet
from constrained_diffusion.models.weights import load_weights

Kind = Literal["ddpm", "flow"]


class MNISTDenoiser(NetworkDenoiser):
    """A UNet trained on MNIST as a `Denoiser`.

    Args:
        network: the UNet.
        kind: ``"ddpm"`` or ``"flow"`` (fixes the schedule and what the network predicts).
        metadata: training facts read from the weight file (steps, final loss, ...).
    """

    def __init__(self, network: UNet, kind: Kind = "ddpm", metadata: dict[str, str] | None = None) -> None:
        if kind == "ddpm":
            schedule, prediction = VPSchedule.linear(1e-4, 2e-2, 1000), "epsilon"
        elif kind == "flow":
            schedule, prediction = FlowSchedule(time_scale=1000.0), "velocity"
        else:
            raise ValueError(f"kind must be 'ddpm' or 'flow', got {kind!r}")
        size = network.config.sample_size
        super().__init__(network, schedule, (network.config.in_channels, size, size), prediction=prediction)  # type: ignore[arg-type]
        self.kind: Kind = kind
        self.metadata = dict(metadata or {})

    @classmethod
    def from_file(cls, path: str | Path, device: torch.device | str | None = None) -> MNISTDenoiser:
        """Load a UNet weight file written by ``constrained-diffusion train ... --export``."""
        network, meta = load_weights(path, device)
        if not isinstance(network, UNet):
            raise ValueError(f"{path} does not hold UNet weights")
        kind = meta.get("kind")
        if kind not in ("ddpm", "flow"):
            raise ValueError(f"{path} does not say whether it is a 'ddpm' or a 'flow' model (metadata kind={kind!r})")
        return cls(network, kind, meta)  # type: ignore[arg-type]

    @classmethod
    def pretrained(cls, name: Kind = "ddpm", device: torch.device | str | None = None) -> MNISTDenoiser:
        """The shipped model: ``"ddpm"`` or ``"flow"``."""
        if name not in ("ddpm", "flow"):
            raise ValueError(f"name must be 'ddpm' or 'flow', got {name!r}")
        return cls.from_file(pretrained_path(f"mnist_{name}.safetensors"), device)

    def __repr__(self) -> str:
        steps = self.metadata.get("train_steps", "?")
        return f"MNISTDenoiser(kind={self.kind!r}, train_steps={steps})"
