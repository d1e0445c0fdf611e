"""``constrained-diffusion compare``: the MNIST real-data comparison of solvers (equal steps and equal time).

For each shipped model (ddpm, flow), task (top-half missing; free-form strokes; x4
super-resolution) and solver, on the 500 held-out digits: PSNR, SSIM, label accuracy (the
shipped classifier on the result against the true label), final residual, NFE, seconds per
sample and peak memory, with the same steps for every solver and again at equal wall-clock
time. Since 0.2 it is a configuration of the evaluation harness
(`constrained_diffusion.evaluation.comparison`): ``OUT/<model>/<task>/`` is an ``evaluate``
output folder (records, images, report), resumed by a rerun.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch

from constrained_diffusion.cli.args import (
    describe_device,
    documented_command,
    format_table,
    positive_int,
    summary,
    write_block,
)
from constrained_diffusion.cli.vocabulary import AUTO, add_alias, add_quiet, device_or_auto, model_name, progress_log
from constrained_diffusion.solvers import registry

MODELS = ("mnist-ddpm", "mnist-flow")
TASKS = ("top-half", "mnist-free-form", "sr4")
"""The default tasks: the three of compare since 0.1 (called box, free-form and sr4 before 0.2)."""

BLOCK = "EVAL-TABLE"
OPTIONS = ("--models", "--tasks", "--methods", "--steps", "--inner-steps", "--limit", "--batch-size", "--seed", "--device",
           "--emulate-tf32", "--no-tf32", "--no-equal-time", "--out", "--block")
"""What the command written with the table repeats (``--block`` only when it is not `BLOCK`)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``compare`` and its options on the sub-command parsers ``sub``."""
    from constrained_diffusion.evaluation.task_names import MNIST_TASKS

    p = sub.add_parser("compare", help="PSNR/SSIM/label accuracy/cost table of the solvers on MNIST (equal steps, equal time); "
                                       "runs of the evaluation harness under OUT/<model>/<task>/",
                       description=summary(__doc__))
    p.add_argument("--models", nargs="+", type=model_name(MODELS), default=list(MODELS), metavar="MODEL",
                   help=f"which shipped models (default: {' '.join(MODELS)}); tables name them ddpm, flow")
    p.add_argument("--tasks", nargs="+", choices=list(MNIST_TASKS), default=list(TASKS),
                   help=f"tasks, as evaluate names them (default: {' '.join(TASKS)}; 'box' and 'free-form' "
                        "meant top-half and mnist-free-form here before 0.2)")
    p.add_argument("--methods", nargs="+", choices=registry.names(), metavar="SOLVER",
                   default=["inexact-newton", "gradient-descent", "exact-jvp", "exact-newton"],
                   help="solvers to compare (default: inexact-newton gradient-descent exact-jvp exact-newton)")
    p.add_argument("--steps", type=positive_int, default=20, help="denoising steps (default 20)")
    p.add_argument("--inner-steps", type=positive_int, default=5, help="constraint iterations per step (default 5)")
    p.add_argument("--limit", type=positive_int, default=500, help="number of test digits (default all 500)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="digits per batch (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    p.add_argument("--device", type=device_or_auto, default=AUTO,
                   help="where to sample: cpu or cuda (default cuda when available)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--emulate-tf32", action="store_true",
                           help="round every convolution's input and weight to TF32, as cuDNN does on a GPU by default")
    precision.add_argument("--no-tf32", action="store_true",
                           help="on CUDA, run float32 convolutions and matrix products in full float32 (TF32 off)")
    p.add_argument("--no-equal-time", action="store_true", help="skip the equal wall-clock rows")
    p.add_argument("--out", type=Path, default=Path("results/compare"),
                   help="the output folder: OUT/<model>/<task>/ holds each harness run (default results/compare; resumed); "
                        "a path ending in .jsonl, the records file of compare before 0.2, names the folder without the suffix")
    p.add_argument("--write-docs", type=Path, default=None, help="replace the --block block of this markdown file")
    p.add_argument("--block", default=BLOCK, help=f"name of the marker block --write-docs replaces (default {BLOCK})")
    add_quiet(p)
    p.add_argument("--model", choices=["mnist"], default="mnist", help=argparse.SUPPRESS)  # the old model family: always mnist
    add_alias(p, "--variants", dest="models")
    add_alias(p, "--solvers", dest="methods")
    p.set_defaults(run=run, documented=command_line)


def result_table(rows: list[dict]) -> str:
    """The rows of `constrained_diffusion.evaluation.comparison.Comparison.run` as a table."""
    count = lambda v: str(int(v)) if float(v).is_integer() else f"{v:.1f}"  # noqa: E731
    return format_table(
        ["model", "task", "solver", "budget", "steps x inner", "PSNR", "SSIM", "label acc.", "residual", "NFE", "NBE",
         "s / sample", "peak MB"],
        [[r["model"], r["task"], r["solver"], r["budget"], f"{r['steps']} x {r['inner_steps']}", f"{r['psnr']:.2f}",
          f"{r['ssim']:.3f}", f"{r['label_accuracy']:.3f}", f"{r['residual']:.4f}", count(r["nfe"]), count(r["nbe"]),
          f"{r['seconds']:.3f}", f"{r['peak_mb']:.0f}"] for r in rows])


def out_folder(out: Path) -> Path:
    """``--out``: the folder itself; ``X.jsonl`` (the records file of compare before 0.2) names the folder ``X``, with a warning."""
    if out.suffix.lower() != ".jsonl":
        return out
    folder = out.with_suffix("")
    warnings.warn(f"--out {out}: compare writes a folder of harness runs since 0.2; writing to {folder}", FutureWarning, stacklevel=2)
    return folder


def command_line(args: argparse.Namespace) -> str:
    """The command written with the table (it regenerates the block)."""
    return documented_command("compare", args, OPTIONS, omit={"--block": BLOCK})


def run(args: argparse.Namespace) -> int:
    """Run ``compare`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.evaluation.comparison import Comparison
    from constrained_diffusion.evaluation.methods import shipped_weights
    from constrained_diffusion.evaluation.task_names import renamed_task
    from constrained_diffusion.utils.tables import check_block

    if args.write_docs is not None:
        check_block(args.write_docs, args.block)  # before the run, not after it
    tasks = [renamed_task(t, "--tasks") for t in args.tasks]
    comparison = Comparison(models=args.models, tasks=tasks, solvers=args.methods, out=out_folder(args.out), steps=args.steps,
                            inner_steps=args.inner_steps, limit=args.limit, batch_size=args.batch_size, seed=args.seed,
                            device=args.device, equal_time=not args.no_equal_time, quiet=args.quiet,
                            precision="tf32-emulated" if args.emulate_tf32 else "no-tf32" if args.no_tf32 else "float32")
    rows = comparison.run(log=progress_log(args))
    table = result_table(rows)
    print(table)
    if args.write_docs is not None:
        command = command_line(args)
        machine = f"torch {torch.__version__}, {describe_device(args.device)}"
        weights = ", ".join(f"{name.removeprefix('mnist-')} {shipped_weights(name)}" for name in args.models)
        size = f"{len(rows)} row{'s' * (len(rows) != 1)} of {max(r['n'] for r in rows)} digits"
        write_block(args.write_docs, args.block, f"```\n{command}\n```\n\n{machine}; weights {weights}; {size}.\n\n{table}")
    return 0
