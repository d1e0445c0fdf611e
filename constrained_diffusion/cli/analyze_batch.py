"""``constrained-diffusion analyze batch-dependence``: each solver at batch 1 against batch B on the same digits and seeds.

See `constrained_diffusion.analysis.batch_dependence`. Prints the table and inexact Newton's
sensitivity to a 1e-6 change of the starting noise; ``--write-docs FILE`` replaces the
``BATCH-DEPENDENCE`` block of FILE with them and the command that measured them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constrained_diffusion.cli.args import documented_command, positive_int, summary, write_block
from constrained_diffusion.cli.task_option import TASK_HELP, mnist_task
from constrained_diffusion.cli.vocabulary import add_alias, add_quiet, progress_log

OPTIONS = ("--digits", "--steps", "--inner-steps", "--batch", "--task", "--seed", "--methods")
"""Options the documented command repeats."""


def add_batch_parser(inner: argparse._SubParsersAction) -> None:
    """Register ``analyze batch-dependence`` on the ``analyze`` sub-parsers ``inner``."""
    from constrained_diffusion.analysis.batch_dependence import METHODS, PAIRED

    b = inner.add_parser("batch-dependence", help="max pixel and PSNR change between batch 1 and batch B, per solver (MNIST DDPM)",
                         description=summary(__doc__))
    b.add_argument("--digits", type=positive_int, default=8, help="test digits, spread over the classes (default 8)")
    b.add_argument("--steps", type=positive_int, default=10, help="denoising steps (default 10)")
    b.add_argument("--inner-steps", type=positive_int, default=3, help="inner steps of the paper's loop (default 3)")
    b.add_argument("--batch-size", dest="batch", type=positive_int, default=8, help="the batch size compared with 1 (default 8)")
    b.add_argument("--task", type=mnist_task("--task"), default="sr4", metavar="TASK", help=f"{TASK_HELP} (default sr4)")
    b.add_argument("--seed", type=int, default=0, help="seed of the observations and the noise (default 0)")
    b.add_argument("--methods", nargs="+", choices=[*METHODS, "paired"], default=[*METHODS, "paired"],
                   help=f"solvers with the paper's loop, the dps recipe, and 'paired' ({PAIRED}); default all")
    b.add_argument("--write-docs", type=Path, default=None, help="replace the BATCH-DEPENDENCE block of this markdown file")
    add_quiet(b)
    add_alias(b, "--batch", dest="batch")
    b.set_defaults(run=run_batch_dependence)


def run_batch_dependence(args: argparse.Namespace) -> int:
    """Run ``analyze batch-dependence`` with the parsed ``args``; returns the exit status."""
    import torch

    from constrained_diffusion.analysis.batch_dependence import PAIRED, batch_dependence, batch_table
    from constrained_diffusion.cli.args import describe_device
    from constrained_diffusion.models import load, weights_digest, weights_path

    model = load("mnist-ddpm")
    methods = [PAIRED if m == "paired" else m for m in args.methods]
    rows, sensitivity = batch_dependence(model, args.digits, args.steps, args.inner_steps, args.batch, args.task, args.seed, methods,
                                         log=progress_log(args))
    table = batch_table(rows)
    line = (f"Inexact Newton's own sensitivity: moving every digit's starting noise by 1e-6 x N(0, I) (batch 1) moves its "
            f"result by up to {sensitivity:.3g} in pixel value.")
    print(table)
    print(line)
    if args.write_docs is not None:
        command = documented_command("analyze batch-dependence", args, list(OPTIONS))
        write_block(args.write_docs, "BATCH-DEPENDENCE",
                    f"```\nOMP_NUM_THREADS={torch.get_num_threads()} {command}\n```\n\n"
                    f"Model: mnist-ddpm {weights_digest(weights_path('mnist-ddpm'))}; {args.digits} test digits, task {args.task}, "
                    f"{args.steps} steps x {args.inner_steps} inner steps (dps: its single step), float32 on "
                    f"{describe_device('cpu')}, torch {torch.__version__}. Pixel values in [-1, 1]; each maximum is over every "
                    f"pixel (PSNR: every digit) of the batch-1 run against the batch-{args.batch} run. Seconds are indicative "
                    f"(a shared machine).\n\n{table}\n\n{line}")
    return 0
