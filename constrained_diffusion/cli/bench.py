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
import statistics
from pathlib import Path

import torch

from constrained_diffusion.cli.args import format_table, positive_int, replace_block, summary
from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.denoisers.network import NetworkDenoiser
from constrained_diffusion.denoisers.schedules import VPSchedule
from constrained_diffusion.models.unet import UNet
from constrained_diffusion.sampling.engine import ConstrainedSampler, randn
from constrained_diffusion.solvers import registry



def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="seconds per sample and overhead over the forward-pass floor, per solver",
                       description=summary(__doc__))
    p.add_argument("--steps", type=positive_int, default=10, help="denoising steps (default 10)")
    p.add_argument("--inner-steps", type=positive_int, default=5, help="constraint iterations per step (default 5)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="samples per run (default 1)")
    p.add_argument("--channels", type=positive_int, default=64, help="UNet base channels (default 64: 6.5M parameters)")
    p.add_argument("--size", type=positive_int, default=32, help="image side (default 32)")
    p.add_argument("--repeats", type=positive_int, default=5, help="timed rounds; medians are reported (default 5)")
    p.add_argument("--solver", action="append", choices=registry.names(), help="solver(s) to run (default: all)")
    p.add_argument("--write-docs", type=Path, default=None,
                   help="replace the block between <!-- BENCH-TABLE:START --> and <!-- BENCH-TABLE:END --> in this markdown file")
    p.set_defaults(run=run)


def forward_seconds(model: NetworkDenoiser, x_T: torch.Tensor, forwards: int) -> float:
    """Seconds per forward of a plain sampling run with ``forwards`` steps (one forward each)."""
    result = ConstrainedSampler(model, steps=forwards, inner_steps=0).sample(None, x_T=x_T, progress=False)
    return result.seconds / result.nfe


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    net = UNet(base_channels=args.channels, sample_size=args.size).eval().requires_grad_(False)
    params = sum(p.numel() for p in net.parameters())
    shape = (1, args.size, args.size)
    model = NetworkDenoiser(net, VPSchedule.linear(), shape, prediction="epsilon")
    B = args.batch_size
    y = torch.rand(B, *shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = torch.zeros(1, 1, args.size, args.size)
    mask[..., : args.size // 2] = 1
    constraint = Inpainting(y, mask)
    x_T = randn(B, shape, torch.Generator().manual_seed(2), model.device, model.dtype)
    names = args.solver or registry.names()
    samplers = {n: ConstrainedSampler(model, n, steps=args.steps, inner_steps=args.inner_steps) for n in names}
    for n in names:  # warm-up (first-call allocations, forward-AD set-up)
        ConstrainedSampler(model, n, steps=1, inner_steps=1).sample(constraint, x_T=x_T, progress=False)
    floor_forwards = max(10, args.steps)
    forward_seconds(model, x_T, 3)

    seconds: dict[str, list[float]] = {n: [] for n in names}
    costs: dict[str, tuple[int, int]] = {}
    floors: list[float] = []
    for _ in range(args.repeats):
        floors.append(forward_seconds(model, x_T, floor_forwards))
        for n in names:
            result = samplers[n].sample(constraint, x_T=x_T, progress=False)
            seconds[n].append(result.seconds)
            costs[n] = (result.nfe, result.nbe)
    floors.append(forward_seconds(model, x_T, floor_forwards))
    t_fwd = statistics.median(floors)

    rows = []
    for n in names:
        nfe, nbe = costs[n]
        sec = statistics.median(seconds[n])
        rows.append([n, str(nfe), str(nbe), f"{sec / B:.3f}", f"{sec / (nfe * t_fwd):.3f}"])

    setup = (f"UNet {params / 1e6:.1f}M parameters, batch {B} of {shape[0]}x{args.size}x{args.size}, steps={args.steps}, "
             f"inner steps={args.inner_steps}, one forward {t_fwd * 1000:.1f} ms (median of {len(floors)} plain runs "
             f"of {floor_forwards} forwards); torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"{platform.processor() or platform.machine()}")
    table = format_table(["solver", "NFE / sample", "NBE / sample", "seconds / sample", "overhead vs NFE x forward"], rows)
    print(setup)
    print(table)
    if args.write_docs is not None:
        write_docs(args.write_docs, setup, table, args)
    return 0


def write_docs(path: Path, setup: str, table: str, args: argparse.Namespace) -> None:
    """Replace the marked block of ``path`` with the command, the setup line and the table."""
    command = (f"constrained-diffusion bench --steps {args.steps} --inner-steps {args.inner_steps} "
               f"--batch-size {args.batch_size} --channels {args.channels} --size {args.size} --repeats {args.repeats}")
    replace_block(path, "BENCH-TABLE", f"```\n{command}\n```\n\n{setup}\n\n{table}")
    print(f"updated {path}")
