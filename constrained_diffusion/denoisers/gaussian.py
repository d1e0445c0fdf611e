"""Analytic denoiser for Gaussian data, with a known Jacobian.

For data ``x0 ~ N(mu, Sigma)`` and ``x_t = alpha x0 + sigma eps`` the posterior mean (the
ideal denoiser, Tweedie's formula) is affine in ``x_t``:

    x0_hat(x_t) = mu + J_t (x_t - alpha mu),   J_t = alpha Sigma (alpha^2 Sigma + sigma^2 I)^-1

``J_t`` is symmetric (Sigma and the inverse commute), so ``J e = J^T e``. For testing solvers
that must tell the two apart, ``skew > 0`` gives the non-ideal denoiser
``J_t = A_t (I + skew K)`` with ``A_t`` the symmetric matrix above and ``K`` a fixed
skew-symmetric matrix of unit spectral norm; then ``J != J^T``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.denoisers.schedules import NoiseSchedule, VPSchedule


class GaussianDenoiser(Denoiser):
    """Exact posterior-mean denoiser for ``x0 ~ N(mean, cov)``.

    Args:
        mean: prior mean, shape ``sample_shape``.
        cov: prior covariance, shape ``(D, D)`` with ``D = prod(sample_shape)``; symmetric
            positive definite.
        schedule: the noise schedule (default: DDPM linear betas, ``T = 1000``).
        skew: strength of the non-symmetric perturbation (``0``: the ideal, symmetric denoiser).
        seed: seed of the random skew-symmetric matrix ``K``.
        dtype: dtype of the samples it returns.
    """

    def __init__(self, mean: Tensor, cov: Tensor, schedule: NoiseSchedule | None = None,
                 skew: float = 0.0, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float64)
        super().__init__(tuple(mean.shape), schedule=schedule if schedule is not None else VPSchedule.linear())
        D = mean.numel()
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if cov.shape != (D, D):
            raise ValueError(f"cov must have shape ({D}, {D}) for a mean of shape {tuple(mean.shape)}, got {tuple(cov.shape)}")
        if not torch.allclose(cov, cov.T, atol=1e-10):
            raise ValueError("cov must be symmetric")
        evals, evecs = torch.linalg.eigh(cov)
        if bool((evals <= 0).any()):
            raise ValueError("cov must be positive definite")
        if skew < 0:
            raise ValueError(f"skew must be >= 0, got {skew}")
        self.mean = mean
        self.cov = cov
        self._evals, self._evecs = evals, evecs
        self.skew = float(skew)
        g = torch.Generator().manual_seed(seed)
        M = torch.randn(D, D, generator=g, dtype=torch.float64)
        K = M - M.T
        self._K = K / torch.linalg.matrix_norm(K, ord=2)
        self._dtype = dtype
        self._cache: dict[float, Tensor] = {}

    @classmethod
    def smooth(cls, shape: tuple[int, ...] = (1, 16, 16), length_scale: float = 3.0,
               variance: float = 0.5, mean: float = 0.0, jitter: float = 1e-3,
               **kwargs: object) -> GaussianDenoiser:
        """A prior of smooth images: squared-exponential covariance over the pixel grid.

        ``cov[(c,i,j), (c,k,l)] = variance * exp(-((i-k)^2 + (j-l)^2) / (2 length_scale^2))``
        within a channel, channels independent, plus ``jitter * I``. Long-range correlations
        make the known pixels of an inpainting problem informative about the missing ones.

        Args:
            shape: ``(C, H, W)``.
        """
        if len(shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {shape!r}")
        C, H, W = shape
        yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
        pts = torch.stack([yy.flatten(), xx.flatten()], dim=1)
        d2 = torch.cdist(pts, pts) ** 2
        k = variance * torch.exp(-d2 / (2 * length_scale**2))
        cov = torch.kron(torch.eye(C, dtype=torch.float64), k) + jitter * torch.eye(C * H * W, dtype=torch.float64)
        return cls(torch.full(shape, float(mean), dtype=torch.float64), cov, **kwargs)  # type: ignore[arg-type]

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def jacobian(self, t: Tensor) -> Tensor:
        """The exact Jacobian ``J_t = d x0_hat / d x_t``, shape ``(D, D)``, float64."""
        key = float(t)
        if key not in self._cache:
            alpha, sigma = self.alpha_sigma(t)
            lam = self._evals
            A = (self._evecs * (alpha * lam / (alpha**2 * lam + sigma**2))) @ self._evecs.T
            if self.skew > 0:
                A = A @ (torch.eye(A.shape[0], dtype=A.dtype) + self.skew * self._K)
            self._cache[key] = A
        return self._cache[key]

    def predict_x0(self, x_t: Tensor, t: Tensor) -> Tensor:
        alpha, _ = self.alpha_sigma(t)
        J = self.jacobian(t).to(x_t.dtype)
        mu = self.mean.to(x_t.dtype).flatten()
        flat = x_t.flatten(1)
        out = mu + (flat - float(alpha) * mu) @ J.T
        return out.reshape(x_t.shape)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` clean samples ``x0 ~ N(mean, cov)``, shape ``(n, *sample_shape)``."""
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        x = self.mean.flatten() + (z * self._evals.sqrt()) @ self._evecs.T
        return x.reshape(n, *self.sample_shape).to(self._dtype)

    def __repr__(self) -> str:
        return f"GaussianDenoiser(sample_shape={self.sample_shape}, skew={self.skew})"


