"""``constrained-diffusion bench-sd``: solver cost on the full Stable Diffusion 1.x UNet.

The UNet is built from Stable Diffusion 1.5's configuration with random weights (859.5M
parameters; no download: a forward's arithmetic does not depend on the weights) and wrapped as
an epsilon-prediction denoiser with a fixed random text conditioning ``(1, 77, 768)``. For
plain inference and each solver it runs one denoising step with ``--inner-steps`` constraint
iterations on a latent inpainting problem and reports seconds per inner step
(``(run - one forward) / inner steps``) and the peak memory above the model's own footprint.
Each measurement runs in a fresh process, so the peaks do not bleed into one another, and
times the second of two identical runs, so first-call costs (cuDNN's kernel selection) stay
out; on CUDA the peak is the allocator's, on CPU the sampled resident set size. A solver that
cannot run on this model or dtype is reported as a failed row.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from constrained_diffusion.benchmarks.sd_unet import SDStepCosts, measure_sd_step_costs
from constrained_diffusion.cli.args import (
    default_device,
    describe_device,
    device_name,
    documented_command,
    format_table,
    positive_int,
    summary,
    write_block,
)

BLOCK = "SD-BENCH-TABLE"
OPTIONS = ("--size", "--inner-steps", "--device", "--dtype", "--block")
"""What the command written with the table repeats (``--block`` only when it is not `BLOCK`)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench-sd`` and its options on the sub-command parsers ``sub``."""
    p = sub.add_parser("bench-sd", help="seconds per inner step and peak memory on the full SD 1.x UNet", description=summary(__doc__))
    p.add_argument("--size", type=positive_int, default=64, help="latent side (default 64, i.e. 512x512 images)")
    p.add_argument("--inner-steps", type=positive_int, default=2, help="constraint iterations timed (default 2)")
    p.add_argument("--device", type=device_name, default=default_device())
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--write-docs", type=Path, default=None, help="replace the --block block of this markdown file")
    p.add_argument("--block", default=BLOCK, help=f"name of the marker block --write-docs replaces (default {BLOCK})")
    p.set_defaults(run=run, documented=command_line)


def cost_table(costs: SDStepCosts, solvers: list[str], inner_steps: int) -> str:
    """Plain inference, then one row per solver: passes, seconds per inner step, peak memory."""
    plain_mb = costs.peak_mb["plain"]
    rows = [["plain inference (one forward)", "-", f"{costs.seconds['plain']:.2f}", f"{plain_mb:.0f}", "1.00"]]
    for name in solvers:
        if name in costs.failures:
            rows.append([name, "-", f"failed ({costs.failures[name]})", "-", "-"])
            continue
        passes = f"{(costs.nfe[name] - 1) / inner_steps:g} F + {costs.nbe[name] / inner_steps:g} B"
        rows.append([name, passes, f"{costs.seconds_per_inner_step(name, inner_steps):.2f}",
                     f"{costs.peak_mb[name]:.0f}", f"{costs.peak_mb[name] / plain_mb:.2f}"])
    return format_table(["", "passes per inner step", "seconds (per inner step)", "peak MB above the model",
                         "peak vs plain"], rows)


def command_line(args: argparse.Namespace) -> str:
    """The command written with the table (it regenerates the block)."""
    return documented_command("bench-sd", args, OPTIONS, omit={"--block": BLOCK})


def run(args: argparse.Namespace) -> int:
    """Run ``bench-sd`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.solvers import registry

    solvers = registry.names()
    costs = measure_sd_step_costs(solvers, args.size, args.inner_steps, args.device, args.dtype,
                                  log=lambda line: print(line, flush=True))
    setup = (f"SD 1.5 UNet, {costs.parameters / 1e6:.1f}M parameters (random weights), batch 1, latent "
             f"4x{args.size}x{args.size}, {args.dtype}, {args.device}, torch {torch.__version__}, "
             f"{describe_device(args.device)}; one process per row")
    table = cost_table(costs, solvers, args.inner_steps)
    print(setup)
    print(table)
    if args.write_docs is not None:
        write_block(args.write_docs, args.block, f"```\n{command_line(args)}\n```\n\n{setup}\n\n{table}")
    return 0
