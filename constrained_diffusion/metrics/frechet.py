"""Fréchet distance between two sets of feature vectors (the FID formula on any features).

For Gaussians fitted to the features, ``N(mu_1, S_1)`` and ``N(mu_2, S_2)``:

    FD = ||mu_1 - mu_2||^2 + tr(S_1 + S_2 - 2 (S_1^{1/2} S_2 S_1^{1/2})^{1/2})

(Heusel et al., 2017). The matrix square roots are taken by symmetric eigendecompositions in
float64 (negative eigenvalues from round-off are clipped to zero).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _sqrtm_psd(M: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh(0.5 * (M + M.T))
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """Fréchet distance between ``(N, F)`` and ``(M, F)`` feature sets (``N, M >= 2``)."""
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"features must be (N, F) and (M, F), got {tuple(features_a.shape)} and {tuple(features_b.shape)}")
    if min(features_a.shape[0], features_b.shape[0]) < 2:
        raise ValueError("each feature set needs at least 2 rows")
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    return float((mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * torch.trace(cross))
