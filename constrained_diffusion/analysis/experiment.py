"""The eigenvector experiment of the paper's rebuttal, extended (used by ``analyze eigvec``).

At each time ``t`` and for each of ``samples`` test digits ``x0``: ``x_t = alpha_t x0 + sigma_t eps``
(seeded), ``J = d x0_hat / d x_t`` (dense). "Same" compares ``J`` with its own inverse; the
"random" baseline compares it with the inverse of the next digit's ``J``. Both pairings of
`eigenvector_similarity` are reported, plus the asymmetry of ``J`` and how well ``Je``,
``J^T e`` and ``e`` align with the regularised Newton direction ``J^+ e`` for real errors ``e``:
the box-inpainting error (top half known) and the x4 super-resolution error, each computed
from ``x0_hat(x_t)`` and the digit itself.

With ``results``, each finished row is appended to a JSONL file, keyed by the model and every
setting; a rerun reuses the rows already there, so an interrupted run resumes at the next ``t``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from statistics import mean

import torch
from torch import Tensor

from constrained_diffusion.analysis.eigen import direction_alignment, eigenvector_similarity
from constrained_diffusion.analysis.jacobian import asymmetry, jacobian
from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.constraints.super_resolution import SuperResolution
from constrained_diffusion.denoisers import Denoiser
from constrained_diffusion.utils.jsonl_store import JsonlStore

KEY_FIELDS = ("model", "samples", "k", "rcond", "seed", "t")
"""What identifies a row of the results file: the model, every setting, and the time."""

PAPER_SAME = dict(zip(range(950, 0, -100), (0.68, 0.72, 0.62, 0.72, 0.71, 0.72, 0.72, 0.63, 0.60, 0.58)))
"""The rebuttal's "same image" values at t = 950, 850, ..., 50 (top-20 eigenvectors, mean |cosine|)."""

PAPER_RANDOM = dict(zip(range(950, 0, -100), (0.11, 0.11, 0.16, 0.29, 0.29, 0.19, 0.16, 0.15, 0.14, 0.12)))
"""The rebuttal's "different images" baseline at the same times."""


def real_errors(x0_hat: Tensor, x0: Tensor) -> dict[str, Tensor]:
    """The inpainting (top half known) and x4 super-resolution errors of ``x0_hat`` for digit ``x0``."""
    H = x0.shape[-2]
    mask = torch.zeros(1, 1, H, x0.shape[-1], dtype=x0.dtype)
    mask[..., : H // 2, :] = 1
    sr = SuperResolution(torch.zeros(1, x0.shape[1], H // 4, x0.shape[-1] // 4, dtype=x0.dtype), 4)
    sr = SuperResolution(sr.forward(x0), 4)
    return {"inpainting": Inpainting(x0, mask).error(x0_hat).flatten(),
            "sr4": sr.error(x0_hat).flatten()}


def eigvec_rows(model: Denoiser, images: Tensor, timesteps: list[int], samples: int, k: int = 20,
                rcond: float = 1e-3, seed: int = 0, log: Callable[[str], object] = print,
                results: str | Path | None = None,
                model_name: str = "model") -> list[dict[str, float]]:
    """One row per ``t``: means over ``samples`` digits of every quantity in the module docstring.

    Args:
        model: the denoiser (its ``x0`` prediction is differentiated).
        images: clean test digits ``(N, C, H, W)``, ``N >= samples + 1``.
        timesteps: the times, one row each.
        samples: digits per time; each needs one dense ``(D, D)`` Jacobian, plus one for the
            "random" partner of the last digit.
        k: leading eigenvectors compared.
        rcond: relative cut-off of the pseudo-inverse ``J^+``.
        seed: the noise of time ``t`` comes from ``seed + t``.
        log: called with one line per finished time.
        results: optional JSONL file; rows already there with the same ``model_name``, ``t``,
            ``samples``, ``k``, ``rcond`` and ``seed`` are returned without recomputation, new
            rows are appended as they finish.
        model_name: identifies the model in ``results`` (for example a hash of its weights).

    Returns:
        One dict per time in ``timesteps`` order, with ``t``, ``same_top-k``, ``random_top-k``,
        ``same_all``, ``random_all``, ``asymmetry`` and ``{task}_{quantity}`` for
        ``task`` in ``inpainting``, ``sr4`` and the keys of `direction_alignment`.
    """
    if images.shape[0] < samples + 1:
        raise ValueError(f"need at least samples + 1 = {samples + 1} images, got {images.shape[0]}")
    resume_key = {"model": model_name, "samples": samples, "k": k, "rcond": rcond, "seed": seed}
    store = JsonlStore(results, KEY_FIELDS) if results is not None else None
    rows = []
    for t in timesteps:
        done = store.get(store.key({**resume_key, "t": float(t)})) if store is not None else None
        if done is not None:
            rows.append({name: v for name, v in done.items() if name not in resume_key})
            log(f"t={t}: reused from {results}")
            continue
        row = eigvec_row(model, images, t, samples, k, rcond, seed)
        rows.append(row)
        if store is not None:
            store.append({**resume_key, **row})
        log(f"t={t}: same(top-k) {row['same_top-k']:.3f}, random(top-k) {row['random_top-k']:.3f}, "
            f"same(all) {row['same_all']:.3f}, random(all) {row['random_all']:.3f}, asymmetry {row['asymmetry']:.3f}")
    return rows


def eigvec_row(model: Denoiser, images: Tensor, t: int, samples: int, k: int = 20, rcond: float = 1e-3,
               seed: int = 0) -> dict[str, float]:
    """The row of `eigvec_rows` for one time ``t`` (the noise comes from ``seed + t``)."""
    tt = torch.tensor(t)
    alpha, sigma = (float(v) for v in model.alpha_sigma(tt))
    g = torch.Generator().manual_seed(seed + t)
    Js, errs = [], []
    for i in range(samples + 1):
        x0 = images[i:i + 1].to(model.device, model.dtype)
        x_t = alpha * x0 + sigma * torch.randn(x0.shape, generator=g).to(x0)
        Js.append(jacobian(model, x_t, tt))
        with torch.no_grad():
            errs.append(real_errors(model(x_t, tt).double().cpu(), x0.double().cpu()))
    row: dict[str, float] = {"t": float(t)}
    for pool in ("top-k", "all"):
        row[f"same_{pool}"] = mean(eigenvector_similarity(Js[i], Js[i], k, pool) for i in range(samples))
        row[f"random_{pool}"] = mean(eigenvector_similarity(Js[i], Js[i + 1], k, pool) for i in range(samples))
    row["asymmetry"] = mean(asymmetry(J) for J in Js[:samples])
    for task in ("inpainting", "sr4"):
        aligned = [direction_alignment(Js[i], errs[i][task], rcond) for i in range(samples)]
        for key in aligned[0]:
            row[f"{task}_{key}"] = mean(a[key] for a in aligned)
    return row
