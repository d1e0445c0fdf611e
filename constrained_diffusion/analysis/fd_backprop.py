r"""Per-pixel maps: the finite-difference ``J e`` against the backpropagated ``J^T e`` (and the exact ``J e``).

For a probe pixel ``p = (row, col)`` of the sample grid and each channel ``c``, ``e_c`` is the
unit vector at ``(c, row, col)``. At a state ``x_t`` of the forward process (as in
`analysis.spectra`: same clean sample, same seeded noise, same times) three products are formed,
each a ``(C, C, H, W)`` block (input channel, output channel, pixel):

* ``"fd"``: ``J e_c``, the column of ``J`` at ``p`` — what the inexact-Newton step moves, by a
  forward difference (`linalg.fd_jvp`, precision-aware step unless ``h`` is given; one batched
  forward of ``C`` states);
* ``"exact"``: ``J e_c`` by forward-mode AD (`forward_jvp`), where the model supports it;
* ``"backprop"``: ``J^T e_c``, the row of ``J`` at ``p`` — what gradient descent (DPS) moves,
  by one batched backward.

Compared (all ``C * C * H * W`` entries at once), with ``cos(a, b) = <a, b> / (|a| |b|)`` and
``rel(a, b) = |a - b| / |b|``:

* ``cos_fd_backprop``, ``rel_fd_backprop``: column against row — 1 and 0 for a symmetric ``J``
  (an ideal denoiser), so this measures how far the two methods' directions differ at ``p``;
* ``cos_fd_exact``, ``rel_fd_exact``: the finite difference against the exact column — its
  accuracy in the model's arithmetic;
* ``cos_exact_backprop``: the same asymmetry without finite-difference error.

The maps are the per-pixel Frobenius norms over both channel axes,
``M[y, x] = (sum_{c, c'} P[c, c', y, x]^2)^{1/2}`` (the reference notebook shows the
channel-mean of the log of the norm over input channels), and ``|J e - J^T e|`` likewise.
``constrained-diffusion analyze fd-vs-backprop`` writes one record per time (maps included),
resumes from them, and draws the figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, Field
from torch import Tensor

from constrained_diffusion.analysis.spectra import analysis_time, noised_state
from constrained_diffusion.configurable import Configurable
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.linalg.finite_difference import fd_jvp
from constrained_diffusion.solvers.exact_jvp import forward_jvp, math_attention
from constrained_diffusion.utils.jsonl_store import JsonlStore

KEY_FIELDS = ("model", "state", "dtype", "t", "row", "col", "h", "exact", "seed")
"""What identifies a record: the model, the clean sample, the dtype, the time, the probe pixel and the settings."""
MAPS = ("fd", "exact", "backprop", "difference")
"""The maps of a record: ``|J e|`` (finite difference), ``|J e|`` (exact), ``|J^T e|`` and ``|J e - J^T e|``."""


def unit_probes(sample_shape: Sequence[int], pixel: tuple[int, int], dtype: torch.dtype = torch.float32) -> Tensor:
    """The ``C`` unit vectors ``e_c`` at ``(c, row, col)``, shape ``(C, *sample_shape)``.

    Raises:
        ValueError: ``pixel`` outside the ``H x W`` grid (naming ``pixel``).

    Examples:
        >>> probes = unit_probes((2, 3, 3), (1, 2))
        >>> probes.shape, probes.sum().item(), probes[1, 1, 1, 2].item()
        (torch.Size([2, 2, 3, 3]), 2.0, 1.0)
    """
    C, H, W = sample_shape[0], sample_shape[-2], sample_shape[-1]
    row, col = pixel
    if not (0 <= row < H and 0 <= col < W):
        raise ValueError(f"pixel: (row, col) must lie in the {H}x{W} grid of the samples, got {tuple(pixel)}")
    probes = torch.zeros(C, *sample_shape, dtype=dtype)
    probes[torch.arange(C), torch.arange(C), row, col] = 1.0
    return probes


def pixel_products(denoiser: Denoiser, x_t: Tensor, t: Tensor, pixel: tuple[int, int], h: float | None = None,
                   exact: bool = True) -> tuple[dict[str, Tensor], dict[str, float]]:
    """``J e_c`` (finite difference, and exact if ``exact``) and ``J^T e_c`` for every channel ``c`` at ``pixel``.

    Args:
        denoiser: the model.
        x_t: the state ``(1, *sample_shape)`` in the model's dtype.
        t: the model time.
        pixel: ``(row, col)`` in the sample grid.
        h: finite-difference max-norm step; ``None``: precision-aware.
        exact: also the forward-mode JVP.

    Returns:
        ``({"fd", "exact"?, "backprop"} -> (C, *sample_shape) float64 on the CPU, name -> seconds)``.
    """
    probes = unit_probes(denoiser.sample_shape, pixel).to(x_t.device)
    C = probes.shape[0]
    xs = x_t.detach().expand(C, *denoiser.sample_shape).contiguous()
    out: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    with torch.no_grad():
        fx = denoiser(xs, t)
    begin = _tick(x_t)
    out["fd"] = fd_jvp(lambda z: denoiser(z, t), xs, probes, h, fx=fx, dtype=denoiser.dtype)
    seconds["fd"] = _tick(x_t) - begin
    if exact:
        begin = _tick(x_t)
        out["exact"] = forward_jvp(denoiser, xs, t, probes)[1]
        seconds["exact"] = _tick(x_t) - begin
    begin = _tick(x_t)
    with torch.enable_grad(), math_attention():
        leaf = xs.clone().requires_grad_(True)
        result = denoiser(leaf, t)
        (out["backprop"],) = torch.autograd.grad(result, leaf, probes.to(result.dtype))
    denoiser.count_backward()
    seconds["backprop"] = _tick(x_t) - begin
    return {k: v.detach().double().cpu() for k, v in out.items()}, seconds


def _tick(x: Tensor) -> float:
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
    return time.perf_counter()


def _cos(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def pixel_map(products: Tensor) -> Tensor:
    """Per-pixel Frobenius norm over the input and output channels: ``(C, C, H, W) -> (H, W)``."""
    return products.pow(2).sum(dim=(0, 1)).sqrt()


def compare(products: dict[str, Tensor]) -> dict[str, Any]:
    """Cosines, relative differences and maps (nested lists, ``MAPS``) of `pixel_products`' output."""
    fd, bp = products["fd"], products["backprop"]
    row: dict[str, Any] = {"cos_fd_backprop": _cos(fd, bp), "rel_fd_backprop": _rel(fd, bp)}
    maps = {"fd": pixel_map(fd), "backprop": pixel_map(bp), "difference": pixel_map(fd - bp)}
    if "exact" in products:
        ex = products["exact"]
        row.update(cos_fd_exact=_cos(fd, ex), rel_fd_exact=_rel(fd, ex), cos_exact_backprop=_cos(ex, bp),
                   rel_exact_backprop=_rel(ex, bp))
        maps["exact"] = pixel_map(ex)
    row["maps"] = {name: [[float(f"{v:.5g}") for v in line] for line in m.tolist()] for name, m in maps.items()}
    return row


class FDBackpropConfig(BaseModel):
    """Options of `FDBackprop`."""

    times: list[float] = Field([900, 700, 500, 300], min_length=1,
                               description="analysis times (integer times of a 1000-step VP model; flows: s = t/1000)")
    pixel: tuple[int, int] | None = Field(None, description="probe (row, col) in the sample grid; None: the centre")
    h: float | None = Field(None, gt=0, description="finite-difference max-norm step; None: precision-aware")
    exact: bool = Field(True, description="also the exact J e by forward-mode AD")
    seed: int = Field(0, description="noise of time t from seed + round(t)")


class FDBackprop(Configurable):
    """Finite-difference ``J e`` against backpropagated ``J^T e`` per time at one probe pixel (module docstring).

    Cost per time: ``C`` states in one batch — one forward (``x0_hat``), one forward (the
    difference), one dual forward (exact) and one forward and backward with a graph.

    Examples:
        >>> import constrained_diffusion as cd
        >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
        >>> x0 = model.sample_prior(1, torch.Generator().manual_seed(0))
        >>> row = FDBackprop(times=[500]).run(model, x0)[0]
        >>> round(row["cos_fd_backprop"], 4), round(row["cos_fd_exact"], 4)  # symmetric J, linear model
        (1.0, 1.0)
    """

    Config = FDBackpropConfig

    def probe(self, denoiser: Denoiser) -> tuple[int, int]:
        """The probe pixel: ``pixel``, or the centre ``(H // 2, W // 2)`` of the sample grid."""
        H, W = denoiser.sample_shape[-2:]
        pixel = self.config.pixel if self.config.pixel is not None else (H // 2, W // 2)
        unit_probes(denoiser.sample_shape, pixel)  # raises for a pixel outside the grid
        return pixel

    def run(self, denoiser: Denoiser, x0: Tensor, results: str | Path | None = None, model_name: str = "model",
            state_name: str = "x0", log: Callable[[str], object] | None = None) -> list[dict[str, Any]]:
        """One record per time with the `compare` fields, ``seconds_{fd,exact,backprop}``, ``alpha``, ``sigma``.

        Bad times and a probe outside the grid raise before any network call; records already in
        ``results`` (a JSONL file) are returned without recomputation, new ones appended.
        """
        model_times = [analysis_time(denoiser, t) for t in self.config.times]
        row, col = self.probe(denoiser)
        if tuple(x0.shape[1:]) != denoiser.sample_shape or x0.shape[0] != 1:
            raise ValueError(f"x0 must have shape (1, *{denoiser.sample_shape}), got {tuple(x0.shape)}")
        store = JsonlStore(results, KEY_FIELDS) if results is not None else None
        base = {"model": model_name, "state": state_name, "dtype": str(denoiser.dtype).removeprefix("torch."),
                "row": row, "col": col, "h": self.config.h, "exact": self.config.exact, "seed": self.config.seed}
        records = []
        for t, tt in zip(self.config.times, model_times):
            key = {**base, "t": float(t)}
            done = store.get(store.key(key)) if store is not None else None
            if done is not None:
                records.append(done)
                if log is not None:
                    log(f"t={t:g}: reused from {results}")
                continue
            x_t = noised_state(denoiser, x0, tt, self.config.seed + round(t))
            products, seconds = pixel_products(denoiser, x_t, tt, (row, col), self.config.h, self.config.exact)
            alpha, sigma = (float(v) for v in denoiser.alpha_sigma(tt))
            record = {**key, **compare(products), **{f"seconds_{k}": v for k, v in seconds.items()},
                      "alpha": alpha, "sigma": sigma}
            if store is not None:
                store.append(record)
            records.append(record)
            if log is not None:
                log(f"t={t:g}: cos(Je, J^T e) {record['cos_fd_backprop']:.4f}"
                    + (f", cos(Je fd, Je exact) {record['cos_fd_exact']:.6f}" if "cos_fd_exact" in record else ""))
        return records


def fd_backprop_table(records: Sequence[dict[str, Any]]) -> str:
    """A markdown table: one row per time with the cosines, relative differences and seconds."""
    from constrained_diffusion.utils.tables import format_table

    exact = all("cos_fd_exact" in r for r in records)
    header = ["t", "cos(Je, JTe)", "rel(Je, JTe)"]
    if exact:
        header += ["cos(Je fd, Je exact)", "rel(Je fd, Je exact)", "cos(Je exact, JTe)"]
    header += ["s (fd)", *(["s (exact)"] if exact else []), "s (backprop)"]
    body = []
    for r in sorted(records, key=lambda r: -r["t"]):
        cells = [f"{r['t']:g}", f"{r['cos_fd_backprop']:.4f}", f"{r['rel_fd_backprop']:.4f}"]
        if exact:
            cells += [f"{r['cos_fd_exact']:.6f}", f"{r['rel_fd_exact']:.2e}", f"{r['cos_exact_backprop']:.4f}"]
        cells += [f"{r['seconds_fd']:.3f}", *([f"{r['seconds_exact']:.3f}"] if exact else []), f"{r['seconds_backprop']:.3f}"]
        body.append(cells)
    return format_table(header, body)


def fd_backprop_figure(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """A grid of maps: one row per time; columns ``log10 |J e|`` (fd, exact), ``log10 |J^T e|``, ``log10 |J e - J^T e|``.

    Each row shares one colour scale; the probe pixel is marked.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = sorted(records, key=lambda r: -r["t"])
    names = [m for m in MAPS if all(m in r["maps"] for r in records)]
    titles = {"fd": "J e (finite diff.)", "exact": "J e (exact JVP)", "backprop": "J^T e (backprop)",
              "difference": "J e - J^T e"}
    fig, axes = plt.subplots(len(records), len(names), figsize=(1.9 * len(names), 1.9 * len(records)), dpi=80,
                             squeeze=False)
    for i, r in enumerate(records):
        logs = {m: torch.tensor(r["maps"][m]).clamp_min(1e-12).log10() for m in names}
        vmax = max(float(v.max()) for v in logs.values())
        for j, m in enumerate(names):
            ax = axes[i][j]
            im = ax.imshow(logs[m], cmap="plasma", vmin=vmax - 4, vmax=vmax)
            ax.scatter([r["col"]], [r["row"]], c="lime", s=12, marker="o")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(titles[m], fontsize=8)
            if j == 0:
                ax.set_ylabel(f"t = {r['t']:g}", fontsize=8)
        fig.colorbar(im, ax=list(axes[i]), fraction=0.02, pad=0.01).ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    from constrained_diffusion.utils.safe_io import save_figure

    path = save_figure(path, fig)  # atomically
    plt.close(fig)
    return path
