"""What an evaluation run leaves besides its records: ``summary.md``/``.json``, ``grid.png`` and ``pareto.svg``.

They are written to ``reports/<run hash>/`` (the hash of the run's methods, their settings
hashes and its image ids, so a run with other settings never overwrites them) and copied to the
top of the output folder (the latest run's report). Every figure reads exactly the images its
records name (their ``file``), and every file is written atomically (`constrained_diffusion.utils.safe_io`).

Per method, over the images of the run: the mean of each per-image metric with a 95%
interval (normal approximation, ``mean +- 1.96 s / sqrt(n)``, ``s`` the sample standard
deviation), the residual, seconds and NFE per image, peak memory; and the data-set metrics
(FID, KID) computed once from the saved outputs against the clean images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from constrained_diffusion.evaluation.records import image_file, record_file, run_records, settings_hash
from constrained_diffusion.evaluation.scores import DATASET, HIGHER_IS_BETTER, PER_IMAGE, dataset_scores
from constrained_diffusion.utils.paths import under
from constrained_diffusion.utils.safe_io import write_bytes, write_json, write_text
from constrained_diffusion.utils.statistics import mean_interval

REPORTS = "reports"
"""The folder (under ``out``) of the runs' own reports, one sub-folder per run hash."""


def summarise(records: Sequence[dict[str, Any]], labels: Sequence[str], metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per method label (in order) of `mean_interval` figures.

    Each row has ``method``, ``n``, ``<m>`` and ``<m>_ci`` (the 95% half-width) for every
    per-image metric and for ``residual``, ``seconds`` and ``nfe``; ``nbe`` (mean) and
    ``peak_mb`` (the largest batch's).
    """
    rows = []
    for label in labels:
        mine = [r for r in records if r["method"] == label]
        row: dict[str, Any] = {"method": label, "n": len(mine)}
        for m in [*[m for m in metrics if m in PER_IMAGE], "residual", "seconds", "nfe"]:
            vals = [float(r[m]) for r in mine if r.get(m) is not None]
            row[m], row[f"{m}_ci"] = mean_interval(vals)
        row["nbe"] = sum(r["nbe"] for r in mine) / len(mine) if mine else float("nan")
        row["peak_mb"] = max((r["peak_mb"] for r in mine), default=float("nan"))
        rows.append(row)
    return rows


def _read_png(path: Path) -> Tensor:
    from PIL import Image

    with Image.open(path) as img:
        channels = len(img.getbands())
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
        return data.reshape(img.height, img.width, channels).permute(2, 0, 1).float() / 127.5 - 1.0


def _chunks(ids: Sequence[str], size: int = 256):
    for i in range(0, len(ids), size):
        yield ids[i:i + size]


def markdown(rows: list[dict[str, Any]], metrics: Sequence[str], header: str) -> str:
    """The summary table."""
    from constrained_diffusion.utils.tables import format_table

    per = [m for m in metrics if m in PER_IMAGE]
    data = [m for m in metrics if m in DATASET]
    arrow = lambda m: "↑" if HIGHER_IS_BETTER[m] else "↓"  # noqa: E731
    head = ["method", "n", *[f"{m.upper()} {arrow(m)}" for m in per], *[f"{m.upper()} {arrow(m)}" for m in data],
            "residual", "s / image", "NFE / image", "NBE", "peak MB"]
    body = []
    for r in rows:
        fmt = lambda m, d, r=r: f"{r[m]:.{d}f} ± {r[m + '_ci']:.{d}f}" if r[m] == r[m] else "n/a"  # noqa: E731
        cells = [r["method"], str(r["n"]), *[fmt(m, 2 if m == "psnr" else 3) for m in per]]
        cells += [f"{r[m]:.4g}" if r.get(m) is not None and r[m] == r[m] else "n/a" for m in data]
        cells += [fmt("residual", 4), fmt("seconds", 3), f"{r['nfe']:.0f}", f"{r['nbe']:.0f}", f"{r['peak_mb']:.0f}"]
        body.append(cells)
    return f"{header}\n\n{format_table(head, body)}\n"


def grid(files: Callable[[str, str], Path], labels: Sequence[str], ids: Sequence[str], truth: Callable[[str], Tensor],
         path: Path, n: int = 8) -> Path:
    """``grid.png``: one row per image (the first ``n``), columns observation | each method | truth, labelled.

    ``files(column, image_id)`` is the image file of a column (``"observation"`` or a method label).
    """
    from PIL import Image, ImageDraw

    from constrained_diffusion.utils.images import to_uint8
    from constrained_diffusion.utils.safe_io import save_image

    ids = list(ids[:n])
    columns = ["observation", *labels, "truth"]
    first = _read_png(files(labels[0], ids[0]))
    C, H, W = first.shape
    scale = max(1, math.ceil(96 / max(H, W)))
    cell_w, cell_h, pad, top = W * scale, H * scale, 4, 16
    canvas = Image.new("RGB", (pad + len(columns) * (cell_w + pad), top + pad + len(ids) * (cell_h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        x = pad + c * (cell_w + pad)
        text = name if len(name) * 6 <= cell_w else name[: max(1, cell_w // 6 - 1)] + "…"
        draw.text((x + 1, 2), text, fill="black")
        for r, image_id in enumerate(ids):
            img = truth(image_id) if name == "truth" else _read_png(files(name, image_id))
            img = img.repeat(3, 1, 1) if img.shape[0] == 1 else img
            tile = to_uint8(img).permute(1, 2, 0).contiguous().numpy()
            pil = Image.fromarray(tile).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(pil, (x, top + pad + r * (cell_h + pad)))
    return save_image(path, canvas)


def pareto(rows: list[dict[str, Any]], metric: str, path: Path) -> Path:
    """``pareto.svg``: the mean of ``metric`` against seconds per image, one point per method."""
    from constrained_diffusion.utils.svg_plot import Series, scatter_svg

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    series = [Series(r["method"], [r["seconds"]], [r[metric]], colors[i % len(colors)]) for i, r in enumerate(rows)
              if r.get(metric) == r.get(metric) and r.get(metric) is not None]
    arrow = "higher is better" if HIGHER_IS_BETTER.get(metric, True) else "lower is better"
    return write_text(path, scatter_svg(series, "seconds per image", f"{metric.upper()} ({arrow})", f"{metric.upper()} against cost"))


def write_report(cfg: Any, methods: Sequence[Any], ids: Sequence[str], images: Any, resolution: Sequence[int],
                 say: Callable[[str], object]) -> dict[str, Any]:
    """Read ``records.jsonl``, keep this run's records, compute FID/KID, write every report file; returns the summary."""
    out = Path(cfg.out)
    wanted = {(m.label, m.settings) for m in methods}
    records = run_records(out, methods, ids)
    files = {(r["method"], r["image"]): record_file(out, r) for r in records}  # exactly the images of these records
    observation = {m.label: m.observation for m in methods}
    for r in records:
        files.setdefault(("observation", r["image"]), under(out, r["observation"], option="records.jsonl") if r.get("observation")
                         else image_file(out, "observation", r["image"], observation[r["method"]] or None))
    labels = [m.label for m in methods]
    rows = summarise(records, labels, cfg.metrics)
    index = {image_id: i for i, image_id in enumerate(images.ids)}
    truth = lambda image_id: images.load(index[image_id])  # noqa: E731
    if any(m in DATASET for m in cfg.metrics):
        for row in rows:
            done = sorted({r["image"] for r in records if r["method"] == row["method"]})
            fakes = torch.stack([_read_png(files[row["method"], i]) for i in done]) if done else torch.zeros(0)
            reals = torch.stack([truth(i) for i in done]) if done else torch.zeros(0)
            row.update(dataset_scores(cfg.metrics, fakes, reals, cfg.fid_features, cfg.feature_weights))
    metrics = list(cfg.metrics)
    header = (f"# Evaluation: {cfg.task} on {cfg.data} ({len(ids)} images, {'x'.join(map(str, resolution))}) with {cfg.model}\n\n"
              f"{len(records)} records; seed {cfg.seed}; noise std {cfg.noise_std} ([-1, 1] pixels); dtype {cfg.dtype}; "
              f"device {cfg.device}. Means with 95% intervals (1.96 standard errors).")
    run = settings_hash({"methods": sorted(wanted), "images": list(ids)})
    folder = under(out, REPORTS, run)
    for row in rows:
        row["settings"] = next(m.settings for m in methods if m.label == row["method"])
    summary = {"task": cfg.task, "model": cfg.model, "data": cfg.data, "images": len(ids), "records": len(records),
               "resolution": list(resolution), "batch_size": getattr(cfg, "batch_size", None), "report": f"{REPORTS}/{run}",
               "methods": rows}
    have = {(r["image"], r["method"]) for r in records}
    complete = [i for i in ids if all((i, label) in have for label in labels)]
    first = next((m for m in metrics if m in PER_IMAGE or m in DATASET), "residual")
    written = [write_text(folder / "summary.md", markdown(rows, metrics, header)),
               write_json(folder / "summary.json", summary, default=float), pareto(rows, first, folder / "pareto.svg")]
    if complete:
        written.append(grid(lambda column, image_id: files[column, image_id], labels, complete, truth, folder / "grid.png"))
    for path in written:  # the latest run's report at the top of the folder
        write_bytes(out / path.name, path.read_bytes())
    if not cfg.quiet:
        say(markdown(rows, metrics, f"{out}/summary.md:"))
    return summary
