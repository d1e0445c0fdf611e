"""``constrained-diffusion bench``: each solver's cost against the forward-pass floor.

A benchmark, not a test. The model is the package's UNet (random weights, seeded) under the
DDPM schedule: the arithmetic of a forward pass does not depend on the weights. For each
solver it runs an inpainting problem and reports NFE per sample, seconds per sample, and

    overhead = measured seconds / (NFE x seconds of one plain forward)

the cost over the forward-pass floor. The time of one forward is measured in place: an
unconstrained run of the same sampler (``inner_steps = 0``, one forward per step) divided by
its NFE, interleaved with the solver runs so that both see the same machine state; each figure
is the median over ``--repeats`` rounds. For InexactNewton everything but the forwards (the
constraint, the normalisation, the update) should be a few percent; GradientDescent and
ExactJVP also pay for backward passes or dual numbers, which NFE does not count.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch

from constrained_diffusion.benchmarks.solver_cost import DEFAULT_SOLVERS, SolverCosts, measure_solver_costs
from constrained_diffusion.cli.args import documented_command, format_table, positive_int, summary, write_block
from constrained_diffusion.cli.vocabulary import add_alias
from constrained_diffusion.solvers import registry

OPTIONS = ("--steps", "--inner-steps", "--batch-size", "--channels", "--size", "--repeats", "--methods")
"""What the command written with the table repeats."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench`` and its options on the sub-command parsers ``sub``."""
    p = sub.add_parser("bench", help="seconds per sample and overhead over the forward-pass floor, per solver; "
                                     "prints a table (--write-docs PAGE: into that page)",
                       description=summary(__doc__))
    p.add_argument("--steps", type=positive_int, default=10, help="denoising steps (default 10)")
    p.add_argument("--inner-steps", type=positive_int, default=5, help="constraint iterations per step (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="samples per run (default 1)")
    p.add_argument("--channels", type=positive_int, default=64, help="UNet base channels (default 64: 6.5M parameters)")
    p.add_argument("--size", type=positive_int, default=32, help="image side (default 32)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed rounds; medians are reported (default 5)")
    p.add_argument("--methods", action="extend", nargs="+", choices=registry.names(), metavar="SOLVER",
                   help=f"solver(s) to run, repeatable (default: {' '.join(DEFAULT_SOLVERS)}, the table of "
                        f"docs/benchmarks.md; also {', '.join(n for n in registry.names() if n not in DEFAULT_SOLVERS)})")
    p.add_argument("--write-docs", type=Path, default=None,
                   help="replace the block between <!-- BENCH-TABLE:START --> and <!-- BENCH-TABLE:END --> in this markdown file")
    add_alias(p, "--method", "--solver", dest="methods")
    p.set_defaults(run=run, documented=command_line)


def setup_line(costs: SolverCosts, args: argparse.Namespace) -> str:
    """The set-up the table was measured with: model, batch, steps, the forward floor, the machine."""
    C, H, W = costs.shape
    return (f"UNet {costs.parameters / 1e6:.1f}M parameters, batch {costs.batch} of {C}x{H}x{W}, steps={args.steps}, "
            f"inner steps={args.inner_steps}, one forward {costs.forward_seconds * 1000:.1f} ms (median of "
            f"{costs.floor_runs} plain runs of {costs.floor_forwards} forwards); torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")


def cost_table(costs: SolverCosts) -> str:
    """One row per solver: NFE, NBE, seconds per sample, overhead over NFE x one forward."""
    return format_table(["solver", "NFE / sample", "NBE / sample", "seconds / sample", "overhead vs NFE x forward"],
                        [[n, str(costs.nfe[n]), str(costs.nbe[n]), f"{costs.seconds[n] / costs.batch:.3f}",
                          f"{costs.overhead(n):.3f}"] for n in costs.seconds])


def command_line(args: argparse.Namespace) -> str:
    """The command written with the table (it regenerates the block); every solver is named."""
    return documented_command("bench", argparse.Namespace(**{**vars(args), "methods": solvers(args)}), OPTIONS)


def solvers(args: argparse.Namespace) -> list[str]:
    """``--methods`` in the order given (repeats dropped), or `DEFAULT_SOLVERS`."""
    return list(dict.fromkeys(args.methods or DEFAULT_SOLVERS))


def run(args: argparse.Namespace) -> int:
    """Run ``bench`` with the parsed ``args``; returns the exit status."""
    costs = measure_solver_costs(solvers(args), steps=args.steps, inner_steps=args.inner_steps, batch_size=args.batch_size,
                                 channels=args.channels, size=args.size, repeats=args.repeats)
    setup, table = setup_line(costs, args), cost_table(costs)
    print(setup)
    print(table)
    if args.write_docs is not None:
        write_block(args.write_docs, "BENCH-TABLE", f"```\n{command_line(args)}\n```\n\n{setup}\n\n{table}")
    return 0
