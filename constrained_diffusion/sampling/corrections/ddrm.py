r"""DDRM: denoising diffusion restoration in the spectral space of a linear operator.

Kawar, Elad, Ermon & Song, *Denoising Diffusion Restoration Models*, NeurIPS 2022 (eq. 7-8),
written for ``x_t = alpha_t x0 + sigma_t eps`` (DDRM's variance-exploding ``sigma = sigma_t /
alpha_t``). With ``A = U S V^T`` (`svd_of`), ``x_bar = V^T x``, ``y_bar = S^+ U^T y``, the
noise level ``sigma_y`` of ``y`` (the constraint's ``noise_std``, else 0), ``x0 = D(x_t, t)``,
``eps_bar = V^T (x_t - alpha_t x0) / sigma_t`` and fresh ``z ~ N(0, I)``, each spectral
component ``i`` of the next state (``a = alpha_prev``, ``b = sigma_prev``, ``eta`` the
sampler's) is:

    s_i = 0:                         x_bar_prev = a x0_bar + sqrt(1 - eta^2) b eps_bar + eta b z
    s_i > 0, b/a < sigma_y/s_i:       x_bar_prev = a x0_bar + sqrt(1 - eta^2) b (y_bar - x0_bar) s_i / sigma_y + eta b z
    s_i > 0, b/a >= sigma_y/s_i:      x_bar_prev = a ((1 - eta_b) x0_bar + eta_b y_bar) + sqrt(b^2 - (a eta_b sigma_y / s_i)^2) z

and ``x_prev = V x_bar_prev``. Noiseless (``sigma_y = 0``) with ``eta_b = 1`` every observed
component is set to ``a y_bar``: the sample reproduces the observations exactly at the clean
end of the grid. Unobserved components follow DDIM with ``eta``. The step's reported ``x0`` is
``V`` of ``(1 - eta_b) x0_bar + eta_b y_bar`` on the observed components.

Cost per step: 1 NFE, 0 NBE; no solver. DDRM's own initialisation of ``x_T`` from ``y`` is not
used (the engine's ``x_T ~ N(0, I)``), and the observed-noise case uses the constraint's
``noise_std``. Pixel and latent models, for a constraint on the denoiser's own space.

Peers: deepinv's ``deepinv.sampling.DDRM`` is this update in variance-exploding form with two
differences: it starts from ``y`` (``x_bar_T ~ N(y_bar, sigma_T^2)`` on the observed components;
pass that ``x_T`` to reproduce it) and draws its noise with standard deviation
``sigma_t / sqrt(2)`` while telling the denoiser ``sigma_t``. With both undone the two agree to
6e-6 on real digits at 100 steps (``python -m cd_deepinv.parity``; the docs' recipes page,
"Parity with deepinv and azula"); as shipped deepinv's is 0.6 dB lower on box inpainting.

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
    >>> truth = model.sample_prior(1, torch.Generator().manual_seed(0))
    >>> c = cd.SuperResolution(torch.nn.functional.avg_pool2d(truth, 2), 2, kernel="box")
    >>> out = cd.recipes.get("ddrm", steps=10).sampler(model).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    >>> float(out.final_residual) < 1e-5, out.nfe
    (True, 10)
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from constrained_diffusion.sampling.corrections.base import Correction, CorrectionResult
from constrained_diffusion.sampling.corrections.operators import svd_of
from constrained_diffusion.sampling.corrections.registry import register_correction
from constrained_diffusion.sampling.noise import randn
from constrained_diffusion.sampling.step import DenoisingStep


class DDRMConfig(BaseModel):
    """Options of `DDRM` (DDRM's ``eta`` is the sampler's ``eta``; the paper's 0.85).

    Attributes:
        eta_b: the weight of the observation on the observed components, in ``[0, 1]`` (paper: 1).
    """

    model_config = ConfigDict(extra="forbid")
    eta_b: float = Field(1.0, ge=0.0, le=1.0)


@register_correction("ddrm")
class DDRM(Correction):
    """One DDRM step in the operator's spectral space (see the module docstring)."""

    Config: ClassVar[type[BaseModel]] = DDRMConfig
    uses_solver = False
    moves_x_t = False
    eta_b: float

    def apply(self, step: DenoisingStep, x_t: Tensor) -> CorrectionResult:
        """One DDRM step; refuses a constraint without a closed-form SVD."""
        op = svd_of(step.constraint, "DDRM")
        x_t, x0 = step.evaluate(x_t)
        x0 = x0.detach()
        (alpha, sigma), (a, b) = step.now, step.prev
        eta, eb = step.eta, self.eta_b
        x0_bar = op.to_spectral(x0)
        eps_bar = op.to_spectral((x_t - alpha * x0) / sigma)
        s = op.singular_values(x0_bar).to(x0_bar).expand_as(x0_bar)
        y_bar = op.y_bar(x0_bar)
        sy = step.constraint.noise_std
        sigma_y = torch.zeros_like(s) if sy is None else _per_sample(sy, s)
        z = op.to_spectral(randn(x_t.shape[0], tuple(x_t.shape[1:]), step.generator, x_t.device, x_t.dtype)) if b > 0 else 0 * x0_bar
        level = torch.where(s > 0, sigma_y / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))  # sigma_y / s_i
        free = a * x0_bar + math.sqrt(max(0.0, 1 - eta**2)) * b * eps_bar + eta * b * z
        noisy = a * x0_bar + math.sqrt(max(0.0, 1 - eta**2)) * b * (y_bar - x0_bar) / torch.where(level > 0, level, torch.ones_like(level)) + eta * b * z
        fitted = a * ((1 - eb) * x0_bar + eb * y_bar) + (b**2 - (a * eb * level) ** 2).clamp_min(0).sqrt() * z
        above = a * level <= b  # b / a >= sigma_y / s_i (a = 0: pure noise, always above)
        x_bar = torch.where(s > 0, torch.where(above, fitted, noisy), free)
        x0_fit = op.from_spectral(torch.where(s > 0, (1 - eb) * x0_bar + eb * y_bar, x0_bar))
        rows = torch.stack([step.constraint.residual(x0).float(), step.constraint.residual(x0_fit).float()])
        return CorrectionResult(op.from_spectral(x_bar).detach(), x0_fit.detach(), rows)


def _per_sample(sigma: Tensor, like: Tensor) -> Tensor:
    """``(1,)`` or ``(B,)`` noise levels as ``(B|1, 1, ..., 1)`` broadcast to ``like``."""
    return sigma.to(like).reshape(-1, *([1] * (like.ndim - 1))).expand_as(like)
