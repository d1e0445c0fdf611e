"""``constrained-diffusion analyze noisy``: noisy box inpainting, fit to zero against the discrepancy stop.

See `constrained_diffusion.analysis.noisy`. The table goes to the ``NOISY-TABLE`` block of
``--write-docs FILE``; records go to ``--results`` as they are made (a rerun resumes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constrained_diffusion.cli.args import documented_command, non_negative_int, positive_int, write_block
from constrained_diffusion.cli.vocabulary import add_quiet, progress_log

DEFAULTS = {"--digits": 32, "--sigmas": [0.05, 0.1, 0.2], "--tau": 1.0, "--steps": 20, "--inner-steps": 5, "--seed": 0}
"""Options left out of the documented command while they have these values."""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


_positive_float.__name__ = "number > 0"


def add_noisy_parser(inner: argparse._SubParsersAction) -> None:
    """Register ``analyze noisy`` on the ``analyze`` sub-parsers ``inner``."""
    n = inner.add_parser("noisy", help="noisy box inpainting: fit to zero against the discrepancy stop (MNIST DDPM)",
                         description=__doc__.splitlines()[0].replace("``", "") if __doc__ else None)
    n.add_argument("--digits", type=positive_int, default=32, help="test digits, spread over the classes (default 32)")
    n.add_argument("--sigmas", type=_positive_float, nargs="+", default=[0.05, 0.1, 0.2],
                   help="observation noise levels sigma_y, pixels in [-1, 1] (default 0.05 0.1 0.2)")
    n.add_argument("--tau", type=_positive_float, default=1.0, help="Morozov's factor of the discrepancy level (default 1)")
    n.add_argument("--steps", type=positive_int, default=20, help="denoising steps (default 20)")
    n.add_argument("--inner-steps", type=non_negative_int, default=5, help="inner steps K, the cap of the stop (default 5)")
    n.add_argument("--seed", type=int, default=0, help="seed of the observation noise and the sampler (default 0)")
    n.add_argument("--results", type=Path, default=Path("runs/noisy.jsonl"),
                   help="JSONL file of finished records; a rerun resumes from it (default runs/noisy.jsonl)")
    n.add_argument("--write-docs", type=Path, default=None, help="replace the NOISY-TABLE block of this markdown file")
    add_quiet(n)
    n.set_defaults(run=run_noisy, documented=noisy_command)


def noisy_command(args: argparse.Namespace) -> str:
    """The command written with the table (it regenerates the block)."""
    return documented_command("analyze noisy", args, list(DEFAULTS), omit=DEFAULTS)


def run_noisy(args: argparse.Namespace) -> int:
    """Run ``analyze noisy`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.analysis.noisy import noisy_rows, noisy_table
    from constrained_diffusion.cli.args import describe_device
    from constrained_diffusion.models import load, weights_digest, weights_path

    if args.digits > 500:
        raise ValueError("--digits must be <= 500 (the test set)")
    model = load("mnist-ddpm")
    name = f"mnist-ddpm {weights_digest(weights_path('mnist-ddpm'))}"
    rows = noisy_rows(model, args.sigmas, args.digits, args.steps, args.inner_steps, args.tau, args.seed,  # type: ignore[arg-type]
                      results=args.results, model_name=name, log=progress_log(args))
    table = noisy_table(rows)
    print(table)
    if args.write_docs is not None:
        machine = describe_device(str(model.device))
        write_block(args.write_docs, "NOISY-TABLE",
                    f"```\n{noisy_command(args)}\n```\n\nModel: {name}, {args.steps} steps x {args.inner_steps} inner steps, "
                    f"inexact Newton; {args.digits} test digits; tau = {args.tau:g}; on {machine}. "
                    f"PSNR: mean ± standard error over the digits; \"vs fit\": paired difference to the fit-to-zero run.\n\n"
                    f"{table}")
    return 0
