"""The DDIM update in ``(alpha, sigma)`` form — also the Euler step of a rectified flow.

Song, Meng & Ermon, *Denoising Diffusion Implicit Models*, ICLR 2021. From ``x_t`` and
``x0 = D(x_t, t)``:

    eps_hat = (x_t - alpha_t x0) / sigma_t
    x_prev  = alpha_prev x0 + sqrt(sigma_prev^2 - c^2) eps_hat + c z,     z ~ N(0, I)
    c       = eta * sigma_prev * sqrt(1 - SNR_t / SNR_prev),  SNR = alpha^2 / sigma^2

For variance-preserving models this ``c`` is DDIM's ``sigma_t(eta)``; for a rectified flow
(``alpha = 1 - s``, ``sigma = s``) and ``eta = 0`` it is exactly the Euler step
``x_prev = x_t + (s_prev - s) v_hat``. The sampler never needs to know which model it runs.
"""

from __future__ import annotations

import math

from torch import Tensor


def ddim_noise_scale(alpha_t: float, sigma_t: float, alpha_prev: float, sigma_prev: float, eta: float) -> float:
    """``c = eta sigma_prev sqrt(1 - (alpha_t sigma_prev)^2 / (alpha_prev sigma_t)^2)`` (0 if ``sigma_prev = 0``)."""
    if eta == 0.0 or sigma_prev == 0.0:
        return 0.0
    ratio = (alpha_t * sigma_prev) ** 2 / (alpha_prev * sigma_t) ** 2
    return eta * sigma_prev * math.sqrt(max(0.0, 1.0 - ratio))


def posterior_noise_scale(beta_t: float, sigma_t: float, sigma_prev: float, eta: float) -> float:
    """``c = eta sqrt(beta_tilde_t)``, the one-step DDPM posterior standard deviation.

    ``beta_tilde_t = beta_t (1 - abar_prev) / (1 - abar_t) = beta_t sigma_prev^2 / sigma_t^2``
    with ``beta_t = 1 - abar_t / abar_{t-1}`` the *single-step* beta at ``t`` (not the
    ``1 - abar_t / abar_prev`` of the strided step that DDIM's ``eta = 1`` uses). The paper's
    reference notebooks draw this noise on their 20-step grid (`SamplerConfig.noise`
    ``"one-step-posterior"``). 0 when ``eta = 0`` or ``sigma_prev = 0``.

    Examples:
        >>> round(posterior_noise_scale(0.01, 0.5, 0.4, 1.0), 6)  # sqrt(0.01 * 0.16 / 0.25)
        0.08
    """
    if eta == 0.0 or sigma_prev == 0.0:
        return 0.0
    return eta * math.sqrt(max(0.0, beta_t)) * sigma_prev / sigma_t


def ddim_update(x_t: Tensor, x0: Tensor, alpha_t: float, sigma_t: float, alpha_prev: float,
                sigma_prev: float, eta: float = 0.0, noise: Tensor | None = None,
                eps: Tensor | None = None, noise_scale: float | None = None) -> Tensor:
    """One DDIM step from time ``t`` to ``t_prev``; shapes ``(B, *sample_shape)``.

    ``eps`` overrides ``eps_hat``: MPGD edits ``x0`` after the network call and keeps the
    noise estimate of the unedited one. ``noise_scale`` overrides ``c`` (e.g.
    `posterior_noise_scale`); ``None`` uses `ddim_noise_scale` with ``eta``.
    """
    if eps is None:
        eps = (x_t - alpha_t * x0) / sigma_t
    c = ddim_noise_scale(alpha_t, sigma_t, alpha_prev, sigma_prev, eta) if noise_scale is None else noise_scale
    out = alpha_prev * x0 + math.sqrt(max(0.0, sigma_prev**2 - c**2)) * eps
    if c > 0.0:
        if noise is None:
            raise ValueError("a noise scale > 0 (eta > 0) needs a noise tensor")
        out = out + c * noise
    return out


def renoise(x_prev: Tensor, alpha_t: float, sigma_t: float, alpha_prev: float, sigma_prev: float,
            noise: Tensor) -> Tensor:
    """Sample ``x_t ~ q(x_t | x_prev)``: the forward process over one step (FreeDoM's time travel).

    ``x_t = (alpha_t / alpha_prev) x_prev + sqrt(sigma_t^2 - (alpha_t sigma_prev / alpha_prev)^2) z``;
    for variance-preserving models the variance is ``1 - alpha_bar_t / alpha_bar_prev``.
    """
    ratio = alpha_t / alpha_prev
    var = max(0.0, sigma_t**2 - (ratio * sigma_prev) ** 2)
    return ratio * x_prev + math.sqrt(var) * noise
