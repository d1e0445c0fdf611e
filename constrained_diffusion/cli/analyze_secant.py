"""``constrained-diffusion analyze secant``: secant Newton against inexact Newton, exact Newton and the identity.

See `constrained_diffusion.analysis.secant`. The table goes to the ``SECANT-TABLE`` block of
``--write-docs FILE``; records go to ``--results`` as they are made (a rerun resumes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constrained_diffusion.cli.args import documented_command, positive_int, summary, write_block
from constrained_diffusion.cli.task_option import TASK_HELP, mnist_task
from constrained_diffusion.cli.vocabulary import add_quiet, model_name, progress_log

DEFAULTS = {"--models": ["mnist-ddpm", "mnist-flow"], "--tasks": ["top-half", "mnist-free-form", "sr4"], "--digits": 16, "--steps": 20,
            "--inner-steps": 5, "--seed": 0}
"""Options left out of the documented command while they have these values."""


def add_secant_parser(inner: argparse._SubParsersAction) -> None:
    """Register ``analyze secant`` on the ``analyze`` sub-parsers ``inner``."""
    s = inner.add_parser("secant", help="secant Newton vs inexact/exact Newton and identity, equal steps and equal NFE (MNIST)",
                         description=summary(__doc__))
    s.add_argument("--models", nargs="+", type=model_name(["mnist-ddpm", "mnist-flow"]), default=["mnist-ddpm", "mnist-flow"],
                   metavar="MODEL", help="shipped MNIST models (default mnist-ddpm mnist-flow; records name them ddpm, flow)")
    s.add_argument("--tasks", nargs="+", type=mnist_task("--tasks"), default=["top-half", "mnist-free-form", "sr4"], metavar="TASK",
                   help=f"{TASK_HELP} (default top-half mnist-free-form sr4)")
    s.add_argument("--digits", type=positive_int, default=16, help="test digits spread over the classes, one batch (default 16)")
    s.add_argument("--steps", type=positive_int, default=20, help="denoising steps at equal steps (default 20)")
    s.add_argument("--inner-steps", type=positive_int, default=5, help="inner steps K of every method (default 5)")
    s.add_argument("--seed", type=int, default=0, help="seed of the observations and the noise (default 0)")
    s.add_argument("--results", type=Path, default=Path("runs/secant.jsonl"),
                   help="JSONL file of finished runs; a rerun resumes from it (default runs/secant.jsonl)")
    s.add_argument("--write-docs", type=Path, default=None, help="replace the SECANT-TABLE block of this markdown file")
    add_quiet(s)
    s.set_defaults(run=run_secant, documented=secant_command)


def secant_command(args: argparse.Namespace) -> str:
    """The command written with the table (it regenerates the block)."""
    return documented_command("analyze secant", args, list(DEFAULTS), omit=DEFAULTS)


def run_secant(args: argparse.Namespace) -> int:
    """Run ``analyze secant`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.analysis.secant import MODELS, secant_rows, secant_summary, secant_table
    from constrained_diffusion.cli.args import describe_device
    from constrained_diffusion.models import weights_digest, weights_path

    if args.digits > 500:
        raise ValueError("--digits must be <= 500 (the test set)")
    variants = [m.removeprefix("mnist-") for m in args.models]  # the records' model names: ddpm, flow
    names = {m: f"{MODELS[m]} {weights_digest(weights_path(MODELS[m]))}" for m in variants}
    rows = secant_rows(variants, args.tasks, args.digits, args.steps, args.inner_steps, args.seed, results=args.results,
                       model_names=names, log=progress_log(args))
    table, verdict = secant_table(rows), secant_summary(rows)
    print(table)
    print(verdict)
    if args.write_docs is not None:
        machine = describe_device("cpu")
        write_block(args.write_docs, "SECANT-TABLE",
                    f"```\n{secant_command(args)}\n```\n\nModels: {', '.join(names.values())}; {args.digits} test digits "
                    f"(one batch), {args.steps} steps x {args.inner_steps} inner steps at equal steps; on {machine} "
                    f"(shared with other jobs: seconds are indicative only). PSNR, SSIM: mean ± standard error over the "
                    f"digits; \"PSNR − secant\": paired difference to secant Newton; residual: median over the digits; "
                    f"residual cut: median of unconstrained / method residual; \"NFE / inexact\": against inexact Newton "
                    f"at equal steps.\n\n{table}\n\n{verdict}")
    return 0
