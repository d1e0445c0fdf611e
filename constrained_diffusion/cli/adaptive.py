"""``constrained-diffusion adaptive``: the adaptive inner loop vs fixed inner steps on MNIST.

Samples the first ``--digits`` test digits (box inpainting, the shipped DDPM, 20 steps,
inexact Newton) under fixed ``K = 5, 3, 2, 1`` and under ``K = 5`` with early stopping, prints
PSNR, SSIM, residual and NFE per setting, and can write the table into the docs and the
PSNR-versus-NFE figure as SVG. Resumable: records go to ``--results`` as they are made.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constrained_diffusion.cli.args import device_name, format_table, positive_int, replace_block, summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adaptive", help="adaptive inner loop vs fixed inner steps (PSNR vs NFE) on MNIST",
                       description=summary(__doc__))
    p.add_argument("--digits", type=positive_int, default=12, help="test digits to sample (default 12)")
    p.add_argument("--model", choices=["ddpm", "flow"], default="ddpm", help="shipped MNIST model (default ddpm)")
    p.add_argument("--task", choices=["box", "free-form", "sr4"], default="box", help="task (default box)")
    p.add_argument("--results", type=Path, default=Path("runs/adaptive-study.jsonl"), help="JSONL of records (resumable)")
    p.add_argument("--figure", type=Path, default=None, help="write the PSNR-vs-NFE figure (SVG) here")
    p.add_argument("--write-docs", type=Path, default=None, help="replace the ADAPTIVE-TABLE block of this markdown file")
    p.add_argument("--device", type=device_name, default=None, help="where to sample: cpu or cuda (default cuda when available)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--quiet", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from constrained_diffusion.data.mnist import mnist
    from constrained_diffusion.denoisers.mnist import MNISTDenoiser
    from constrained_diffusion.evaluation.adaptive import DEFAULT_SETTINGS, run_study, summarise_study
    from constrained_diffusion.models.pretrained import pretrained_path, weights_digest

    if args.threads:
        torch.set_num_threads(args.threads)
    images, _ = mnist("test")
    if args.digits > images.shape[0]:
        raise ValueError(f"--digits must be <= {images.shape[0]}, got {args.digits}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = MNISTDenoiser.pretrained(args.model, device)
    images = images.to(device)
    digest = weights_digest(pretrained_path(f"mnist_{args.model}.safetensors"))
    records = run_study(model, images[: args.digits], args.results, task=args.task, model_name=f"{args.model} {digest}",
                        progress=not args.quiet)
    rows = summarise_study(records)
    base = next(r for r in rows if r["setting"].startswith("fixed K=5"))
    table = format_table(
        ["setting", "digits", "PSNR (dB)", "SSIM", "residual", "NFE / sample", "NFE vs K=5"],
        [[r["setting"], str(r["n"]), f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r['residual']:.3f}", f"{r['nfe']:.1f}",
          f"{100 * (r['nfe'] / base['nfe'] - 1):+.0f}%"] for r in rows])
    command = (f"constrained-diffusion adaptive --digits {args.digits} --model {args.model} --task {args.task}"
               + (f" --device {device}" if device.type != "cpu" else ""))
    print(table)
    if args.figure is not None:
        from constrained_diffusion.utils.svg_plot import Series, scatter_svg

        fixed = [r for r in rows if r["setting"].startswith("fixed")]
        series = [Series("fixed K (1, 2, 3, 5)", [r["nfe"] for r in fixed], [r["psnr"] for r in fixed], "#1f77b4", line=True)]
        colors = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
        for r, c in zip([r for r in rows if r["setting"].startswith("adaptive")], colors):
            series.append(Series(r["setting"].removeprefix("adaptive: "), [r["nfe"]], [r["psnr"]], c))
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        args.figure.write_text(scatter_svg(series, "network forwards per sample (NFE)", "PSNR (dB)",
                                           f"MNIST {args.task} inpainting, {args.digits} test digits, 20 steps"))
        print(f"wrote {args.figure}")
    if args.write_docs is not None:
        replace_block(args.write_docs, "ADAPTIVE-TABLE", f"Produced by `{command}`:\n\n{table}")
        print(f"updated {args.write_docs}")
    return 0
