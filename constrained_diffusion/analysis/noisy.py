"""Noisy observations: fitting the measurements to zero against stopping at the discrepancy.

Box inpainting of MNIST test digits (the top half missing) from a *noisy* bottom half,
``y = x + sigma_y n`` with ``n ~ N(0, I)`` drawn from seed ``seed * 1_000_003 + 7 * digit`` (the
same noise for both methods), ``Inpainting(y, mask, noise_std=sigma_y)``, sampled by the paper's
inner loop (`InexactNewton`, ``steps`` x ``inner_steps``) with

* ``"fit to zero"`` — the fixed ``K`` inner steps, driving ``||y - A x0||`` towards 0;
* ``"discrepancy"`` — ``residual_tol="discrepancy"``: each sample stops its inner loop once
  ``||y - A x0|| <= tau sigma_y sqrt(m)`` (``m`` = 512 known pixels), every step, the last
  included (so the output is not fit to the noise either).

Per digit: PSNR against the *clean* digit over the whole image, over the known half (where
fitting the noise shows) and over the missing half; the final residual over the discrepancy
level ``sigma_y sqrt(m)``; NFE per sample and seconds. The fixed-``K`` runs go in batches (their
NFE per sample does not depend on the batch); the discrepancy runs one digit at a time, so
their NFE is the sample's own. Records are appended to a JSONL file as they are made and a
rerun resumes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.utils.jsonl_store import JsonlStore

METHODS = ("fit to zero", "discrepancy")
"""The two stopping rules compared."""

KEY_FIELDS = ("model", "steps", "inner_steps", "seed", "sigma", "method", "tau", "digit")
"""What identifies a record."""


def digit_indices(n: int, total: int = 500) -> list[int]:
    """``n`` test-set indices spread evenly over the ``total`` digits (the test set is sorted by label).

    Examples:
        >>> digit_indices(4)
        [0, 166, 333, 499]
    """
    if not 1 <= n <= total:
        raise ValueError(f"n must lie in [1, {total}], got {n}")
    return [round(i * (total - 1) / max(n - 1, 1)) for i in range(n)]


def box_mask(size: tuple[int, int] = (32, 32)) -> Tensor:
    """``(1, 1, H, W)``: the top half missing (0), the bottom half known (1), as the MNIST ``box`` task."""
    H, W = size
    mask = torch.ones(1, 1, H, W)
    mask[..., : H // 2, :] = 0
    return mask


def noisy_observation(truth: Tensor, sigma: float, digits: Sequence[int], seed: int = 0) -> Tensor:
    """``truth + sigma n``, ``n ~ N(0, I)``, digit ``d`` (row ``i``) from seed ``seed * 1_000_003 + 7 d``.

    Args:
        truth: clean digits ``(B, 1, H, W)`` in ``[-1, 1]``.
        sigma: the noise's standard deviation ``>= 0`` in the same units.
        digits: the test-set index of each row (the noise depends on it, not on the batch).
        seed: the study's seed.
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    noise = torch.cat([torch.randn(1, *truth.shape[1:], generator=torch.Generator().manual_seed(seed * 1_000_003 + 7 * d))
                       for d in digits])
    return truth + sigma * noise.to(truth)


def _masked_psnr(x: Tensor, truth: Tensor, weight: Tensor) -> Tensor:
    """PSNR (dB, peak-to-peak 2 on ``[-1, 1]``) over the entries where ``weight`` is 1, per sample."""
    w = weight.expand_as(x)
    mse = ((x - truth) ** 2 * w).flatten(1).sum(1) / w.flatten(1).sum(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


@dataclass(frozen=True)
class NoisyRow:
    """One (sigma, method) cell, over its digits.

    Attributes:
        sigma: the noise level ``sigma_y``.
        method: ``"fit to zero"`` or ``"discrepancy"``.
        digits: how many digits.
        psnr, psnr_known, psnr_missing: mean PSNR (dB) against the clean digit: whole image,
            known half, missing half.
        psnr_se: the standard error of ``psnr`` over the digits.
        delta, delta_se: mean paired PSNR difference to the ``"fit to zero"`` row of the same
            sigma and its standard error (0 for that row itself).
        ratio: mean final residual over ``sigma_y sqrt(m)`` (1: at the noise level).
        nfe: mean network forwards per sample.
        seconds: mean seconds per sample (the fixed-``K`` runs are batched, so only the
            discrepancy runs' seconds are a single sample's).
    """

    sigma: float
    method: str
    digits: int
    psnr: float
    psnr_se: float
    psnr_known: float
    psnr_missing: float
    delta: float
    delta_se: float
    ratio: float
    nfe: float
    seconds: float


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _records(model: Denoiser, truth: Tensor, digits: list[int], sigma: float, method: str, steps: int, inner_steps: int,
             tau: float, seed: int, batch_size: int) -> list[dict[str, Any]]:
    """Sample the digits for one (sigma, method); one record per digit (without the key fields)."""
    import constrained_diffusion as cd
    from constrained_diffusion.metrics.images import psnr

    mask = box_mask(tuple(truth.shape[-2:]))  # type: ignore[arg-type]
    options: dict[str, Any] = {"residual_tol": "discrepancy", "discrepancy_tau": tau} if method == "discrepancy" else {}
    sampler = cd.ConstrainedSampler(model, cd.InexactNewton(), steps=steps, inner_steps=inner_steps, **options)
    size = 1 if method == "discrepancy" else batch_size
    out = []
    for start in range(0, len(digits), size):
        ds, clean = digits[start:start + size], truth[start:start + size]
        constraint = Inpainting(noisy_observation(clean, sigma, ds, seed), mask, noise_std=sigma)
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + d) for d in ds]
        began = time.perf_counter()
        result = sampler.sample(constraint, generator=gens, progress=False)
        seconds = (time.perf_counter() - began) / len(ds)
        images = result.images.float().clamp(-1, 1)
        level = float(sigma * math.sqrt(float(constraint.num_measurements[0])))
        assert result.final_residual is not None
        whole, known = psnr(images, clean), _masked_psnr(images, clean, mask)
        missing = _masked_psnr(images, clean, 1 - mask)
        for j, d in enumerate(ds):
            out.append({"digit": d, "psnr": float(whole[j]), "psnr_known": float(known[j]), "psnr_missing": float(missing[j]),
                        "residual": float(result.final_residual[j]), "level": level,
                        "nfe": result.nfe if len(ds) == 1 or method != "discrepancy" else float("nan"),
                        "seconds": seconds})
    return out


def noisy_rows(model: Denoiser, sigmas: Sequence[float] = (0.05, 0.1, 0.2), digits: int = 32, steps: int = 20,
               inner_steps: int = 5, tau: float = 1.0, seed: int = 0, results: str | Path | None = None,
               model_name: str = "mnist-ddpm", batch_size: int = 8,
               log: Callable[[str], None] | None = None) -> list[NoisyRow]:
    """The study's table: one row per (sigma, method), ``"fit to zero"`` first.

    Args:
        model: the denoiser (the shipped MNIST DDPM in the documented table).
        sigmas: noise levels ``sigma_y`` (pixels in ``[-1, 1]``).
        digits: test digits, spread over the classes (`digit_indices`).
        steps: denoising steps.
        inner_steps: inner steps ``K`` (the cap of the discrepancy runs).
        tau: Morozov's factor of the discrepancy level.
        seed: initial noise (digit ``d``: seed ``seed * 1_000_003 + d``) and observation noise.
        results: JSONL file of finished records (a rerun resumes); ``None``: keep nothing.
        model_name: names the model in the records' key.
        batch_size: digits per batch of the fixed-``K`` runs.
        log: called with one line per finished cell.

    Raises:
        ValueError: an empty or invalid ``sigmas``, ``digits`` outside ``[1, 500]``.
    """
    import constrained_diffusion as cd

    if not sigmas or any(not (math.isfinite(s) and s > 0) for s in sigmas):
        raise ValueError(f"sigmas must be finite numbers > 0, got {list(sigmas)}")
    indices = digit_indices(digits)
    images, _ = cd.data.mnist("held-out")
    truth = images[indices]
    store = JsonlStore(results, KEY_FIELDS) if results is not None else None
    rows: list[NoisyRow] = []
    for sigma in sigmas:
        by_method: dict[str, dict[int, dict[str, Any]]] = {}
        for method in METHODS:
            key = {"model": model_name, "steps": steps, "inner_steps": inner_steps, "seed": seed, "sigma": float(sigma),
                   "method": method, "tau": float(tau) if method == "discrepancy" else None}
            by_method[method] = _cell_records(model, truth, indices, key, tau, batch_size, store)
        for method in METHODS:
            row = _noisy_row(float(sigma), method, by_method[method], by_method[METHODS[0]], indices)
            rows.append(row)
            if log is not None:
                log(f"sigma={sigma:g} {method}: PSNR {row.psnr:.2f} dB, NFE {row.nfe:.1f}")
    return rows


def _cell_records(model: Denoiser, truth: Tensor, indices: list[int], key: dict[str, Any], tau: float, batch_size: int,
                  store: JsonlStore | None) -> dict[int, dict[str, Any]]:
    """One (sigma, method) cell's records by digit: those ``store`` holds under ``key``, the others sampled and appended."""
    have = {r["digit"]: r for r in store.records(**key)} if store is not None else {}
    todo = [i for i, d in enumerate(indices) if d not in have]
    if todo:
        new = _records(model, truth[todo], [indices[i] for i in todo], key["sigma"], key["method"], key["steps"], key["inner_steps"],
                       tau, key["seed"], batch_size)
        for r in new:
            if store is not None:
                store.append({**key, **r})
            have[r["digit"]] = r
    return {d: have[d] for d in indices}


def _noisy_row(sigma: float, method: str, recs: dict[int, dict[str, Any]], reference: dict[int, dict[str, Any]],
               indices: list[int]) -> NoisyRow:
    """The row of one cell: means (and standard errors) over the digits, its PSNR paired against the ``reference`` cell's."""
    psnr_mean, psnr_se = _mean_se([recs[d]["psnr"] for d in indices])
    delta, delta_se = _mean_se([recs[d]["psnr"] - reference[d]["psnr"] for d in indices])
    return NoisyRow(sigma, method, len(indices), psnr_mean, psnr_se,
                    _mean_se([recs[d]["psnr_known"] for d in indices])[0],
                    _mean_se([recs[d]["psnr_missing"] for d in indices])[0],
                    delta, delta_se if method != METHODS[0] else 0.0,
                    _mean_se([recs[d]["residual"] / recs[d]["level"] for d in indices])[0],
                    _mean_se([recs[d]["nfe"] for d in indices])[0],
                    _mean_se([recs[d]["seconds"] for d in indices])[0])


def noisy_table(rows: Sequence[NoisyRow]) -> str:
    """The markdown table of `noisy_rows`."""
    from constrained_diffusion.utils.tables import format_table

    fit = {r.sigma: r for r in rows if r.method == METHODS[0]}
    body = []
    for r in rows:
        ref = fit.get(r.sigma)
        nfe = f"{r.nfe / ref.nfe:.2f}x" if ref is not None and ref.nfe > 0 else "-"
        delta = "-" if r.method == METHODS[0] else f"{r.delta:+.2f} ± {r.delta_se:.2f}"
        body.append([f"{r.sigma:g}", r.method, str(r.digits), f"{r.psnr:.2f} ± {r.psnr_se:.2f}", delta,
                     f"{r.psnr_known:.2f}", f"{r.psnr_missing:.2f}", f"{r.ratio:.2f}", f"{r.nfe:.1f}", nfe])
    return format_table(["sigma_y", "stop", "digits", "PSNR (dB)", "vs fit (dB)", "PSNR known", "PSNR missing",
                         "residual / (sigma sqrt m)", "NFE / sample", "NFE vs fit"], body)


__all__ = ["METHODS", "NoisyRow", "box_mask", "digit_indices", "noisy_observation", "noisy_rows", "noisy_table"]
