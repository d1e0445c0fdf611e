"""``constrained-diffusion demo``: constrained inpainting on an embedded model, every solver.

Fills in the missing part of an image with each solver from the same initial noise and prints
solver, final residual of the known pixels, network forwards (NFE) and backwards (NBE),
seconds (and, on MNIST, the digit the shipped classifier reads in the result); writes a PNG
grid: truth | observed | unconstrained | one column per solver.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from constrained_diffusion.cli.args import format_table, non_negative_int, positive_int, summary
from constrained_diffusion.default_model import demo_problem, solve_demo
from constrained_diffusion.solvers import registry
from constrained_diffusion.utils.images import make_grid, save_png, to_uint8


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` and its options on the sub-command parsers ``sub``."""
    p = sub.add_parser("demo", help="constrained inpainting on the embedded default model", description=summary(__doc__))
    p.add_argument("--model", choices=["mnist", "gaussian"], default="mnist",
                   help="mnist: the shipped DDPM on a real digit (default); gaussian: the analytic model")
    p.add_argument("--steps", type=positive_int, default=20, help="denoising steps (default 20)")
    p.add_argument("--inner-steps", type=non_negative_int, default=5, help="constraint iterations per step (default 5)")
    p.add_argument("--solver", choices=[*registry.names(), "all"], default="all", help="solver to run (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image and the noise (default 0)")
    p.add_argument("--out", type=Path, default=Path("demo.png"), help="PNG grid to write (default demo.png)")
    p.add_argument("--quiet", action="store_true", help="hide the progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``demo`` with the parsed ``args``; returns the exit status."""
    out_dir = args.out.parent
    if str(out_dir) and out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out: {out_dir} is not a directory")
    problem = demo_problem(args.model, args.seed)
    solvers = registry.names() if args.solver == "all" else [args.solver]
    results = solve_demo(problem, solvers, args.steps, args.inner_steps, args.seed, progress=not args.quiet)
    reads = None
    if problem.label is not None:
        from constrained_diffusion.evaluation.digits import read_digits
        from constrained_diffusion.models import load

        classifier = load("mnist-classifier")
        reads = {name: int(read_digits(r.images, classifier)[0]) for name, r in results.items()}
    rows = []
    for name, result in results.items():
        assert result.final_residual is not None
        rows.append([name if name != "none" else "none (unconstrained)", f"{float(result.final_residual[0]):.4f}",
                     str(result.nfe), str(result.nbe), f"{result.seconds:.3f}", *([str(reads[name])] if reads else [])])
    print(f"inpainting {problem.description} (steps={args.steps}, inner steps={args.inner_steps}, seed={args.seed})")
    header = ["solver", "residual", "NFE", "NBE", "seconds"] + ([f"digit read (true: {problem.label})"] if reads else [])
    print(format_table(header, rows))

    columns = {"truth": problem.truth, "observed": problem.truth * problem.mask - (1 - problem.mask),
               **{name: r.images for name, r in results.items()}}
    images = torch.cat([c.clamp(-1, 1) for c in columns.values()]).repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)
    path = save_png(args.out, to_uint8(make_grid(images, nrow=len(columns), pad_value=1.0)))
    print(f"wrote {path} (columns: {' | '.join(columns)})")
    return 0
