"""``constrained-diffusion adaptive``: the adaptive inner loop vs fixed inner steps on MNIST.

Samples the first ``--digits`` test digits (``--task``, default ``top-half`` inpainting, the shipped DDPM, 20 steps,
inexact Newton) under fixed ``K = 5, 3, 2, 1`` and under ``K = 5`` with early stopping, prints
PSNR, SSIM, residual and NFE per setting, and can write the table into the docs and the
PSNR-versus-NFE figure as SVG. Resumable: records go to ``--results`` as they are made.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constrained_diffusion.cli.args import (
    documented_command,
    format_table,
    positive_int,
    summary,
    write_block,
)
from constrained_diffusion.cli.task_option import TASK_HELP, mnist_task
from constrained_diffusion.cli.vocabulary import AUTO, device_or_auto, model_name

OPTIONS = ("--digits", "--model", "--task", "--device")
"""What the command written with the table repeats."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``adaptive`` and its options on the sub-command parsers ``sub``."""
    p = sub.add_parser("adaptive", help="adaptive inner loop vs fixed inner steps (PSNR vs NFE) on MNIST",
                       description=summary(__doc__))
    p.add_argument("--digits", type=positive_int, default=12, help="test digits to sample (default 12)")
    p.add_argument("--model", type=model_name(["mnist-ddpm", "mnist-flow"]), default="mnist-ddpm",
                   help="shipped MNIST model: mnist-ddpm (default) or mnist-flow")
    p.add_argument("--task", type=mnist_task("--task"), default="top-half", metavar="TASK", help=f"{TASK_HELP} (default top-half)")
    p.add_argument("--results", type=Path, default=Path("runs/adaptive-study.jsonl"), help="JSONL of records (resumable)")
    p.add_argument("--figure", type=Path, default=None, help="write the PSNR-vs-NFE figure (SVG) here")
    p.add_argument("--write-docs", type=Path, default=None, help="replace the ADAPTIVE-TABLE block of this markdown file")
    p.add_argument("--device", type=device_or_auto, default=AUTO,
                   help="where to sample: cpu or cuda (default cuda when available)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--quiet", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run, documented=command_line)


def study_table(rows: list[dict]) -> str:
    """The `summarise_study` rows as a table, with each setting's NFE relative to fixed ``K = 5``."""
    base = next(r for r in rows if r["setting"].startswith("fixed K=5"))
    return format_table(
        ["setting", "digits", "PSNR (dB)", "SSIM", "residual", "NFE / sample", "NFE vs K=5"],
        [[r["setting"], str(r["n"]), f"{r['psnr']:.2f}", f"{r['ssim']:.3f}", f"{r['residual']:.3f}", f"{r['nfe']:.1f}",
          f"{100 * (r['nfe'] / base['nfe'] - 1):+.0f}%"] for r in rows])


def command_line(args: argparse.Namespace) -> str:
    """The command written with the table (it regenerates the block)."""
    return documented_command("adaptive", args, OPTIONS)


def run(args: argparse.Namespace) -> int:
    """Run ``adaptive`` with the parsed ``args``; returns the exit status."""
    import torch

    from constrained_diffusion.data.mnist import mnist
    from constrained_diffusion.evaluation.adaptive import run_study, study_figure, summarise_study
    from constrained_diffusion.models import load, weights_digest, weights_path

    if args.threads:
        torch.set_num_threads(args.threads)
    images, _ = mnist("held-out")
    if args.digits > images.shape[0]:
        raise ValueError(f"--digits must be <= {images.shape[0]}, got {args.digits}")
    model = load(args.model, args.device)
    digest = weights_digest(weights_path(args.model))  # type: ignore[arg-type]
    variant = args.model.removeprefix("mnist-")  # the records' model name (ddpm, flow), as before the load names
    records = run_study(model, images[: args.digits].to(args.device), args.results, task=args.task,
                        model_name=f"{variant} {digest}", progress=not args.quiet)
    rows = summarise_study(records)
    table = study_table(rows)
    print(table)
    if args.figure is not None:
        from constrained_diffusion.utils.safe_io import write_text

        write_text(args.figure, study_figure(rows, f"MNIST {args.task} inpainting, {args.digits} test digits, 20 steps"))
        print(f"wrote {args.figure}")
    if args.write_docs is not None:
        write_block(args.write_docs, "ADAPTIVE-TABLE", f"Produced by `{command_line(args)}`:\n\n{table}")
    return 0
