"""Wrap any noise-, velocity- or sample-predicting network as a `Denoiser`.

With ``x_t = alpha x0 + sigma eps`` the network output converts to ``x0_hat`` by:

* ``"epsilon"``:  ``x0 = (x_t - sigma eps_hat) / alpha``
* ``"v"`` (v-prediction, ``v = alpha eps - sigma x0``): ``x0 = (alpha x_t - sigma v_hat) / (alpha^2 + sigma^2)``
* ``"velocity"`` (rectified flow, ``v = eps - x0``): ``x0 = (x_t - sigma v_hat) / (alpha + sigma)``
* ``"sample"``: the output is ``x0`` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from constrained_diffusion.denoisers.base import Codec, Denoiser, Space
from constrained_diffusion.denoisers.schedules import NoiseSchedule

Prediction = Literal["epsilon", "v", "velocity", "sample"]


def to_x0(output: Tensor, x_t: Tensor, alpha: float, sigma: float, prediction: Prediction) -> Tensor:
    """Convert a network output to ``x0_hat`` (formulas in the module docstring)."""
    if prediction == "epsilon":
        return (x_t - sigma * output) / alpha
    if prediction == "v":
        return (alpha * x_t - sigma * output) / (alpha**2 + sigma**2)
    if prediction == "velocity":
        return (x_t - sigma * output) / (alpha + sigma)
    if prediction == "sample":
        return output
    raise ValueError(f"prediction must be 'epsilon', 'v', 'velocity' or 'sample', got {prediction!r}")


def _unwrap(output: object) -> Tensor:
    """Accept a tensor, a diffusers output with ``.sample`` or a tuple whose first item is it."""
    if isinstance(output, Tensor):
        return output
    sample = getattr(output, "sample", None)
    if isinstance(sample, Tensor):
        return sample
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"the network returned {type(output).__name__}; expected a tensor or an object with .sample")


class NetworkDenoiser(Denoiser):
    """A denoiser from a network ``f(x_t, t_model) -> prediction`` and a noise schedule.

    Args:
        network: callable taking ``(x_t, t)`` with ``x_t`` of shape ``(B, *sample_shape)`` and
            ``t`` a ``(B,)`` tensor of model times; e.g. a diffusers ``UNet2DModel``.
        schedule: gives ``alpha``, ``sigma``, the time grid and ``model_time``.
        sample_shape: shape of one sample, e.g. ``(1, 32, 32)``.
        prediction: what the network predicts (see module docstring).
        space: ``"pixel"`` or ``"latent"``; optional, it follows from ``codec`` (see `Denoiser`).
        codec: latent-to-pixel codec for latent models.
    """

    def __init__(self, network: Callable[..., object], schedule: NoiseSchedule,
                 sample_shape: tuple[int, ...], prediction: Prediction = "epsilon",
                 space: Space | None = None, codec: Codec | None = None) -> None:
        super().__init__(sample_shape, space=space, codec=codec, schedule=schedule)
        if prediction not in ("epsilon", "v", "velocity", "sample"):
            raise ValueError(f"prediction must be 'epsilon', 'v', 'velocity' or 'sample', got {prediction!r}")
        self.network = network
        self.prediction: Prediction = prediction

    def _first_parameter(self) -> Tensor | None:
        if isinstance(self.network, nn.Module):
            return next(self.network.parameters(), None)
        return None

    @property
    def device(self) -> torch.device:
        p = self._first_parameter()
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = self._first_parameter()
        return p.dtype if p is not None else torch.float32

    def predict_x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = (float(v) for v in self.alpha_sigma(t))
        t_model = self.schedule.model_time(t).to(x_t.device, non_blocking=True).expand(x_t.shape[0])
        out = _unwrap(self.network(x_t, t_model))
        return to_x0(out, x_t, alpha, sigma, self.prediction)
