r"""deepinv denoisers as ``cd.Denoiser`` and ``cd.Denoiser`` as deepinv denoisers, both ways.

deepinv's diffusion samplers (``deepinv.sampling.DDRM``, ``DiffPIR``, ``DPS``) call a Gaussian
denoiser ``D(u, s)`` (a ``deepinv.models.Denoiser``, e.g. ``deepinv.models.DiffUNet``) on images
``u = x0 + s n`` in ``[0, 1]`` with the noise level ``s`` in the same units. This library's
denoisers take ``(x_t, t)`` with ``x_t = alpha_t x0 + sigma_t eps`` in ``[-1, 1]``. The two
describe the same network through

.. math::

    x_t = \alpha_t (2 u - 1), \qquad s = \frac{\sigma_t}{2 \alpha_t}, \qquad
    \hat x_0 = 2 D(u, s) - 1 ,

(``data_range="[-1,1]"``: ``u = x_t / alpha_t``, ``s = sigma_t / alpha_t``, ``x0 = D(u, s)``).

* `DeepinvDenoiser` wraps a deepinv denoiser as a ``cd.Denoiser`` with a noise schedule
  (default: DDPM's linear betas ``1e-4 .. 2e-2``, ``T = 1000``, the schedule of deepinv's
  ``DiffUNet``), so a deepinv user runs this library's solvers and recipes on their network:

  .. code-block:: python

      import deepinv, constrained_diffusion as cd
      from cd_deepinv import DeepinvDenoiser
      model = DeepinvDenoiser(deepinv.models.DiffUNet(large_model=False), sample_shape=(3, 256, 256))
      result = cd.recipes.get("ddrm").sampler(model).sample(constraint)

* `CDGaussianDenoiser` wraps a ``cd.Denoiser`` on a `VPSchedule` as a
  ``deepinv.models.Denoiser``: ``s`` is mapped to the time whose ``sigma_t / alpha_t`` is
  nearest to ``2 s`` (deepinv's ``DiffUNet`` rule), so deepinv's samplers run on this
  library's networks (the parity tests, `cd_deepinv.parity`, do exactly that).
"""

from __future__ import annotations

from typing import Literal

import deepinv
import torch
from torch import Tensor, nn

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.denoisers.schedules import NoiseSchedule, VPSchedule

__all__ = ["CDGaussianDenoiser", "DataRange", "DeepinvDenoiser"]

DataRange = Literal["[0,1]", "[-1,1]"]


def _check_range(data_range: str) -> None:
    if data_range not in ("[0,1]", "[-1,1]"):
        raise ValueError(f"data_range must be '[0,1]' (deepinv's) or '[-1,1]', got {data_range!r}")


class DeepinvDenoiser(Denoiser):
    r"""A deepinv Gaussian denoiser ``D(u, s)`` as a ``cd.Denoiser`` on a noise schedule.

    ``predict_x0(x_t, t)``: with ``(alpha, sigma)`` of ``t`` on ``schedule``, ``u = x_t / alpha``
    and ``s = sigma / alpha`` (both halved and ``u`` shifted to ``(u + 1) / 2`` for
    ``data_range="[0,1]"``), ``x0 = D(u, s)`` (mapped back to ``[-1, 1]``). One call of ``D``
    per call, so ``nfe`` counts network evaluations as for the library's own models; the
    call is differentiable, so backprop solvers (DPS) work.

    Args:
        model: a ``deepinv.models.Denoiser`` or any ``nn.Module`` called as ``model(x, sigma)``
            with ``x`` of shape ``(B, C, H, W)`` and ``sigma`` a ``(B,)`` tensor.
        sample_shape: ``(C, H, W)`` of one sample.
        schedule: the `NoiseSchedule` the sampler walks; default ``VPSchedule.linear()`` (DDPM's
            ``1e-4 .. 2e-2``, ``T = 1000``, trailing grid). A flow schedule works as well
            (``alpha = 1 - s``): any schedule, since ``D`` takes a continuous noise level.
        data_range: ``"[0,1]"`` (deepinv's convention, default) or ``"[-1,1]"``: the range of
            the images ``model`` denoises.

    Raises:
        TypeError: ``model`` is not callable.
        ValueError: an invalid ``data_range`` or ``sample_shape``.

    Examples:
        >>> import torch, deepinv
        >>> import constrained_diffusion as cd
        >>> model = DeepinvDenoiser(deepinv.models.MedianFilter(), sample_shape=(1, 8, 8))
        >>> isinstance(model, cd.Denoiser), model.schedule.num_train_timesteps
        (True, 1000)
        >>> out = cd.ConstrainedSampler(model, steps=4, inner_steps=0).sample(generator=torch.Generator().manual_seed(0), progress=False)
        >>> tuple(out.sample.shape), out.nfe
        ((1, 1, 8, 8), 4)
    """

    def __init__(self, model: nn.Module, sample_shape: tuple[int, ...], schedule: NoiseSchedule | None = None,
                 data_range: DataRange = "[0,1]") -> None:
        if not callable(model):
            raise TypeError(f"model must be a deepinv denoiser called as model(x, sigma), got {type(model).__name__}")
        _check_range(data_range)
        super().__init__(sample_shape, schedule=schedule if schedule is not None else VPSchedule.linear())
        self.model = model
        self.data_range: DataRange = data_range

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None) if isinstance(self.model, nn.Module) else None
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.model.parameters(), None) if isinstance(self.model, nn.Module) else None
        return p.dtype if p is not None else torch.float32

    def predict_x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        """``x0_hat`` in ``[-1, 1]`` from ``D(u, s)`` (see the class docstring); ``x_t`` ``(B, *sample_shape)``."""
        alpha, sigma = (float(v) for v in self.alpha_sigma(t))
        u, s = x_t / alpha, sigma / alpha
        if self.data_range == "[0,1]":
            u, s = (u + 1) / 2, s / 2
        out = self.model(u, torch.full((x_t.shape[0],), s, device=x_t.device, dtype=x_t.dtype))
        return 2 * out - 1 if self.data_range == "[0,1]" else out

    def __repr__(self) -> str:
        return f"DeepinvDenoiser({type(self.model).__name__}, sample_shape={self.sample_shape}, data_range={self.data_range!r})"


class CDGaussianDenoiser(deepinv.models.Denoiser):
    r"""A ``cd.Denoiser`` on a `VPSchedule` as a deepinv Gaussian denoiser ``D(u, s)``.

    ``forward(u, s)``: ``t`` is the training time whose ``sigma_t / alpha_t`` is nearest to
    ``2 s`` (``s`` for ``data_range="[-1,1]"``; deepinv's ``DiffUNet`` rule), ``x_t = alpha_t (2u - 1)``
    and the result is ``(x0_hat + 1) / 2``. Exact (no rounding of the noise level) when ``s``
    is one of the schedule's levels, which is how the parity tests drive deepinv's samplers.
    ``s`` may be a number or a tensor with one value per batch (the samples are then grouped by time).

    Args:
        denoiser: a ``cd.Denoiser`` whose schedule is a `VPSchedule` (discrete times).
        data_range: ``"[0,1]"`` (deepinv's, default) or ``"[-1,1]"``.

    Raises:
        TypeError: ``denoiser`` is not a ``cd.Denoiser`` on a `VPSchedule`.

    Examples:
        >>> import torch
        >>> import constrained_diffusion as cd
        >>> model = cd.GaussianDenoiser.smooth((1, 4, 4))
        >>> d = CDGaussianDenoiser(model)
        >>> t = torch.tensor(500); alpha, sigma = model.alpha_sigma(t)
        >>> x_t = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> ours = model(x_t, t)
        >>> theirs = 2 * d((x_t / float(alpha) + 1) / 2, float(sigma / alpha) / 2) - 1
        >>> bool(torch.allclose(ours, theirs, atol=1e-5))
        True
    """

    def __init__(self, denoiser: Denoiser, data_range: DataRange = "[0,1]") -> None:
        super().__init__()
        if not isinstance(denoiser, Denoiser) or not isinstance(denoiser.schedule, VPSchedule):
            raise TypeError("denoiser must be a constrained_diffusion.Denoiser on a VPSchedule (discrete times), "
                            f"got {type(denoiser).__name__}")
        _check_range(data_range)
        self.denoiser = denoiser
        self.data_range: DataRange = data_range
        abar = denoiser.schedule.alphas_cumprod.to(torch.float64)
        self.register_buffer("_levels", ((1 - abar) / abar).sqrt(), persistent=False)  # sigma_t / alpha_t, t = 0..T-1

    def time_of(self, level: float) -> int:
        """The training time whose ``sigma_t / alpha_t`` is nearest to ``level`` (in ``[-1, 1]`` units)."""
        return int((self._levels - level).abs().argmin())

    def forward(self, x: Tensor, sigma: float | Tensor, *args: object, **kwargs: object) -> Tensor:
        """``D(u, s)`` for ``u`` ``(B, C, H, W)`` in ``data_range`` and ``s`` a number or ``(B,)``/``(B, 1, ...)``."""
        scale = 2.0 if self.data_range == "[0,1]" else 1.0
        levels = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).cpu() * scale
        if levels.numel() not in (1, x.shape[0]):
            raise ValueError(f"sigma must be a number or one value per sample ({x.shape[0]}), got {levels.numel()} values")
        times = [self.time_of(float(v)) for v in levels.expand(x.shape[0])]
        z = 2 * x - 1 if self.data_range == "[0,1]" else x
        out = torch.empty_like(z)
        for t in sorted(set(times)):  # one network call per distinct time (one in total for a shared sigma)
            idx = [i for i, ti in enumerate(times) if ti == t]
            tt = torch.tensor(t)
            alpha, _ = self.denoiser.alpha_sigma(tt)
            rows = z if len(idx) == x.shape[0] else z[idx]
            x0 = self.denoiser(float(alpha) * rows, tt)
            if len(idx) == x.shape[0]:
                out = x0
            else:
                out[idx] = x0
        return (out + 1) / 2 if self.data_range == "[0,1]" else out
