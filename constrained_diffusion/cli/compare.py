"""``constrained-diffusion compare``: the MNIST real-data comparison of solvers (equal steps and equal time).

For each shipped model (ddpm, flow), task (box: top half missing; free-form strokes; x4
super-resolution) and solver, on the 500 test digits: PSNR, SSIM, label accuracy (the shipped
classifier on the result against the true label), final residual, NFE, seconds per sample and
peak memory, with the same steps for every solver and again at equal wall-clock time. Results
go to a JSON-lines file batch by batch; rerunning the command resumes where it stopped.

This was ``evaluate`` before the general harness took that name; its flags and records are
unchanged. ``configs/mnist/*.yaml`` run the equal-steps part of it with ``evaluate``.
"""

from __future__ import annotations

import argparse
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
from constrained_diffusion.cli.vocabulary import AUTO, add_alias, add_quiet, device_or_auto, model_name, out_file, progress_log
from constrained_diffusion.solvers import registry

MODELS = ("mnist-ddpm", "mnist-flow")

BLOCK = "EVAL-TABLE"
OPTIONS = ("--models", "--tasks", "--methods", "--steps", "--inner-steps", "--limit", "--batch-size", "--seed", "--device",
           "--emulate-tf32", "--no-tf32", "--no-equal-time", "--out", "--block")
"""What the command written with the table repeats (``--block`` only when it is not `BLOCK`)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``compare`` and its options on the sub-command parsers ``sub``."""
    from constrained_diffusion.evaluation.tasks import TASKS

    p = sub.add_parser("compare", help="PSNR/SSIM/label accuracy/cost table of the solvers on MNIST (equal steps, equal time); "
                                       "appends records to OUT/compare.jsonl (--out a .jsonl file: to that file)",
                       description=summary(__doc__))
    p.add_argument("--models", nargs="+", type=model_name(MODELS), default=list(MODELS), metavar="MODEL",
                   help=f"which shipped models (default: {' '.join(MODELS)}); records name them ddpm, flow")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS), help=f"tasks to run (default: {' '.join(TASKS)})")
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
    p.add_argument("--out", type=Path, default=Path("results/mnist-evaluation.jsonl"),
                   help="folder of the JSON-lines results OUT/compare.jsonl, or a path ending in .jsonl: that file "
                        "(default results/mnist-evaluation.jsonl; resumed)")
    p.add_argument("--write-docs", type=Path, default=None, help="replace the --block block of this markdown file")
    p.add_argument("--block", default=BLOCK, help=f"name of the marker block --write-docs replaces (default {BLOCK})")
    add_quiet(p)
    p.add_argument("--model", choices=["mnist"], default="mnist", help=argparse.SUPPRESS)  # the old model family: always mnist
    add_alias(p, "--variants", dest="models")
    add_alias(p, "--solvers", dest="methods")
    p.set_defaults(run=run, documented=command_line)


def result_table(rows: list[dict]) -> str:
    """The summary rows of `constrained_diffusion.evaluation.summarise` as a table."""
    return format_table(
        ["model", "task", "solver", "budget", "steps x inner", "PSNR", "SSIM", "label acc.", "residual", "NFE", "NBE",
         "s / sample", "peak MB"],
        [[r["model"], r["task"], r["solver"], r["budget"], f"{r['steps']} x {r['inner_steps']}", f"{r['psnr']:.2f}",
          f"{r['ssim']:.3f}", f"{r['label_accuracy']:.3f}", f"{r['residual']:.4f}", str(r["nfe"]), str(r["nbe"]),
          f"{r['seconds_per_sample']:.3f}", f"{r['peak_mb']:.0f}"] for r in rows])


def command_line(args: argparse.Namespace) -> str:
    """The command written with the table (it regenerates the block)."""
    return documented_command("compare", args, OPTIONS, omit={"--block": BLOCK})


def run(args: argparse.Namespace) -> int:
    """Run ``compare`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.data import mnist
    from constrained_diffusion.evaluation import Settings, evaluate, ordered, precision_context, summarise
    from constrained_diffusion.models import load, weights_digest, weights_path

    variants = [name.removeprefix("mnist-") for name in args.models]  # the records' model names: ddpm, flow
    models = {name: load(name, args.device) for name in variants}
    digests = {name: weights_digest(weights_path(name)) for name in variants}  # type: ignore[arg-type]
    images, labels = mnist("held-out")
    settings = Settings(steps=args.steps, inner_steps=args.inner_steps, batch_size=args.batch_size,
                        limit=args.limit, seed=args.seed, device=args.device,
                        precision="tf32-emulated" if args.emulate_tf32 else "no-tf32" if args.no_tf32 else "float32")
    with precision_context(models.values(), settings.precision):
        records = evaluate(models, load("mnist-classifier"), images, labels, args.tasks, args.methods, out_file(args.out, "compare.jsonl"), settings,
                           equal_time=not args.no_equal_time, weights=digests, log=progress_log(args))
    table = result_table(ordered(summarise(records), variants, args.tasks, args.methods))
    print(table)
    if args.write_docs is not None:
        command = command_line(args)
        machine = f"torch {torch.__version__}, {describe_device(args.device)}"
        weights = ", ".join(f"{name} {digest}" for name, digest in digests.items())
        write_block(args.write_docs, args.block,
                    f"```\n{command}\n```\n\n{machine}; weights {weights}; {len(records)} batch records.\n\n{table}")
    return 0
