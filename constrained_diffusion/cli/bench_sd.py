"""``constrained-diffusion bench-sd``: solver cost on the full SD 1.x UNet, SD3 and Flux transformers, and whole samples.

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

``--arch sd3`` / ``--arch flux`` measure the same rows on Stable Diffusion 3 Medium's and
FLUX.1-dev's transformers, built from their public configurations with random weights
(``--depth N``: N blocks, for a model that does not fit; see
`constrained_diffusion.benchmarks.architectures`). ``--end-to-end`` times whole samples on
the SD 1.5 architecture: plain sampling, ``paper-inpainting``, ``paper-sr8``, gradient descent
and exact JVP at equal steps, per dtype, eager and compiled, with a warm-up run and ``--runs``
timed runs (`constrained_diffusion.benchmarks.end_to_end`). ``--tiny`` shrinks every width
(a smoke test of the command; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from constrained_diffusion.benchmarks.architectures import ARCHES, network_config
from constrained_diffusion.benchmarks.end_to_end import METHODS, MODES, EndToEndRow
from constrained_diffusion.benchmarks.gpu_suite import PART_NAMES
from constrained_diffusion.benchmarks.sd_unet import SDStepCosts, measure_sd_step_costs
from constrained_diffusion.cli.args import (
    describe_device,
    documented_command,
    format_table,
    positive_int,
    summary,
    write_block,
)
from constrained_diffusion.cli.vocabulary import AUTO, device_or_auto
from constrained_diffusion.denoisers.compiled import COMPILE_MODES

BLOCK = "SD-BENCH-TABLE"
BLOCKS = {"sd15": BLOCK, "sd3": "SD3-MEMORY-TABLE", "flux": "FLUX-MEMORY-TABLE", "end-to-end": "SD-E2E-TABLE", "suite": "GPU-SUITE"}
"""The block ``--write-docs`` replaces when no ``--block`` is given, per mode."""
OPTIONS = ("--arch", "--depth", "--tiny", "--size", "--inner-steps", "--device", "--dtype", "--solvers", "--block")
"""What the command written with the table repeats (``--arch``, ``--block`` only when not the default)."""
E2E_OPTIONS = ("--end-to-end", "--tiny", "--size", "--steps", "--runs", "--methods", "--dtypes", "--modes",
               "--batch-sizes", "--compile-mode", "--compile-backend", "--device", "--block")
"""What the command written with the end-to-end table repeats."""
TRANSFORMER_SOLVERS = ["inexact-newton", "gradient-descent", "exact-jvp"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench-sd`` and its options on the sub-command parsers ``sub``."""
    p = sub.add_parser("bench-sd", help="seconds per inner step and peak memory on the full SD 1.x UNet; "
                                        "prints a table (--write-docs PAGE: into that page)", description=summary(__doc__))
    p.add_argument("--size", type=positive_int, default=64, help="latent side (default 64, i.e. 512x512 images)")
    p.add_argument("--inner-steps", type=positive_int, default=2, help="constraint iterations timed (default 2)")
    p.add_argument("--device", type=device_or_auto, default=AUTO, help="cpu or cuda[:N] (default: cuda if available)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32", help="dtype of the UNet (default float32)")
    p.add_argument("--arch", choices=ARCHES, default="sd15",
                   help="sd15 (default: the SD 1.5 UNet), sd3 (SD3 Medium's transformer), flux (FLUX.1-dev's)")
    p.add_argument("--depth", type=positive_int, default=None, help="transformer blocks (sd3, flux; default: all)")
    p.add_argument("--tiny", action="store_true", help="tiny widths: a smoke test of the command (numbers mean nothing)")
    p.add_argument("--solvers", nargs="+", default=None, metavar="SOLVER",
                   help="solvers to measure (default: every registered one for sd15; "
                        f"{' '.join(TRANSFORMER_SOLVERS)} for sd3 and flux)")
    e2e = p.add_argument_group("--end-to-end: whole samples on the SD 1.5 architecture")
    e2e.add_argument("--end-to-end", action="store_true", help="time whole samples per method instead of one step")
    e2e.add_argument("--steps", type=positive_int, default=20, help="denoising steps (default 20, the recipes')")
    e2e.add_argument("--runs", type=positive_int, default=5, help="timed runs per row after one warm-up run (default 5)")
    e2e.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="METHOD",
                     help=f"default: {' '.join(METHODS)}")
    e2e.add_argument("--dtypes", nargs="+", choices=["float32", "float16", "bfloat16"], default=["float16", "bfloat16"],
                     metavar="DTYPE", help="default: float16 bfloat16")
    e2e.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), metavar="MODE", help="default: eager compiled")
    e2e.add_argument("--batch-sizes", nargs="+", type=positive_int, default=[1, 4, 8], metavar="B",
                     help="batch sizes; seconds per image = seconds / B (default 1 4 8)")
    e2e.add_argument("--compile-mode", default="reduce-overhead", choices=COMPILE_MODES,
                     help="torch.compile mode of the compiled rows (default reduce-overhead: CUDA graphs)")
    e2e.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled rows (default inductor)")
    suite = p.add_argument_group("--suite gpu: the prepared GPU run (scripts/gpu_check.sh; docs/benchmarks.md, 'The GPU run')")
    suite.add_argument("--suite", choices=["gpu"], default=None,
                       help="run the GPU suite's parts, each in its own process under its cap, into --out")
    suite.add_argument("--out", type=Path, default=None, help="the suite's output folder (every file stays under it)")
    suite.add_argument("--parts", nargs="+", choices=PART_NAMES, default=None, metavar="PART",
                       help=f"parts to run, in the suite's order (default: all: {' '.join(PART_NAMES)})")
    suite.add_argument("--cap", action="append", default=[], metavar="PART=SECONDS", help="override a part's time cap")
    suite.add_argument("--report-only", action="store_true", help="run nothing: rebuild the report (and --write-docs) from --out")
    suite.add_argument("--rerun", action="store_true", help="run parts that --out already holds as done (default: keep them)")
    suite.add_argument("--suite-part", choices=PART_NAMES, default=None, help=argparse.SUPPRESS)
    suite.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--write-docs", type=Path, default=None, help="replace the --block block of this markdown file")
    p.add_argument("--block", default=None,
                   help="name of the marker block --write-docs replaces (default " + ", ".join(f"{v} for {k}" for k, v in BLOCKS.items()) + ")")
    p.set_defaults(run=run, documented=command_line)


def default_block(args: argparse.Namespace) -> str:
    """The block this run writes when no ``--block`` is given."""
    if getattr(args, "suite", None) or getattr(args, "report_only", False):
        return BLOCKS["suite"]
    return BLOCKS["end-to-end" if args.end_to_end else args.arch]


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
    if args.end_to_end:
        omit = {"--block": default_block(args), "--compile-mode": "reduce-overhead", "--compile-backend": "inductor",
                "--steps": 20, "--runs": 5, "--methods": list(METHODS), "--dtypes": ["float16", "bfloat16"],
                "--modes": list(MODES), "--batch-sizes": [1, 4, 8]}
        return documented_command("bench-sd", args, E2E_OPTIONS, omit=omit)
    return documented_command("bench-sd", args, OPTIONS, omit={"--block": default_block(args), "--arch": "sd15"})


def check_args(args: argparse.Namespace) -> str | None:
    """A one-line error for options that do not fit together, else ``None``."""
    from constrained_diffusion.solvers import registry

    if (args.suite is not None or args.report_only or args.suite_part is not None) and args.out is None:
        return "--suite gpu / --report-only: give the output folder, --out DIR"
    if args.suite is None and not args.report_only and (args.parts is not None or args.cap or args.rerun):
        return "--parts, --cap and --rerun belong to --suite gpu"
    if args.end_to_end and (args.arch != "sd15" or args.depth is not None or args.solvers is not None):
        return "--end-to-end runs the SD 1.5 architecture with its own --methods; drop --arch, --depth and --solvers"
    if args.depth is not None and args.arch == "sd15":
        return "--depth applies to --arch sd3 or flux (the SD 1.5 UNet has no depth option)"
    unknown = [s for s in args.solvers or [] if s not in registry.names()]
    if unknown:
        return f"--solvers: unknown solver(s) {', '.join(unknown)}; expected some of {', '.join(registry.names())}"
    if args.end_to_end and "compiled" in args.modes and args.compile_backend == "":
        return "--compile-backend: give a torch.compile backend name"
    return None


_NAMES = {"sd15": "SD 1.5 UNet", "sd3": "SD3 Medium transformer", "flux": "FLUX.1-dev transformer"}


def run(args: argparse.Namespace) -> int:
    """Run ``bench-sd`` with the parsed ``args``; returns the exit status (2: options that do not fit)."""
    from constrained_diffusion.solvers import registry

    error = check_args(args)
    if error is not None:
        print(f"bench-sd: error: {error}", file=sys.stderr)
        return 2
    if args.suite_part is not None:
        from constrained_diffusion.benchmarks.gpu_suite import run_part

        run_part(args.suite_part, args.out, tiny=args.tiny, deadline_s=args.deadline)
        return 0
    if args.suite is not None or args.report_only:
        from constrained_diffusion.cli.bench_sd_suite import run_suite

        return run_suite(args)
    if args.end_to_end:
        return run_end_to_end(args)
    solvers = args.solvers or (registry.names() if args.arch == "sd15" else TRANSFORMER_SOLVERS)
    unet = network_config("sd15", tiny=True) if args.arch == "sd15" and args.tiny else None
    costs = measure_sd_step_costs(solvers, args.size, args.inner_steps, args.device, args.dtype, unet_config=unet,
                                  log=lambda line: print(line, flush=True), arch=args.arch, depth=args.depth, tiny=args.tiny)
    config = network_config(args.arch, args.depth, args.tiny)
    blocks = "" if args.arch == "sd15" else f" ({_blocks(args.arch, config)})"
    channels = config["in_channels"] // (4 if args.arch == "flux" else 1)
    setup = (f"{_NAMES[args.arch]}{' (tiny)' if args.tiny else ''}{blocks}, {costs.parameters / 1e6:.1f}M parameters "
             f"(random weights), batch 1, latent {channels}x{args.size}x{args.size} ({8 * args.size}x{8 * args.size} "
             f"images), {args.dtype}, {args.device}, torch {torch.__version__}, {describe_device(args.device)}; "
             "one process per row")
    table = cost_table(costs, solvers, args.inner_steps)
    print(setup)
    print(table)
    if args.write_docs is not None:
        write_block(args.write_docs, args.block or default_block(args), f"```\n{command_line(args)}\n```\n\n{setup}\n\n{table}")
    return 0


def _blocks(arch: str, config: dict[str, int]) -> str:
    if arch == "sd3":
        return f"{config['num_layers']} of 24 MM-DiT blocks"
    return f"{config['num_layers']} of 19 double and {config['num_single_layers']} of 38 single blocks"


def e2e_table(rows: list[EndToEndRow]) -> str:
    """One row per method, dtype, mode and batch: min / median seconds, per image, NFE, NBE, peak memory."""
    cells = []
    for r in rows:
        if r.failure is not None:
            cells.append([r.method, r.dtype, r.mode, str(r.batch), f"failed ({r.failure})", "-", "-", "-", "-", "-"])
            continue
        cells.append([r.method, r.dtype, r.mode, str(r.batch), f"{r.min_seconds:.3f}", f"{r.median_seconds:.3f}",
                      f"{r.median_seconds / r.batch:.3f}", str(r.nfe), str(r.nbe), f"{r.peak_mb:.0f}"])
    return format_table(["method", "dtype", "mode", "batch", "min s", "median s", "median s / image", "NFE", "NBE",
                         "peak MB above the model"], cells)


def run_end_to_end(args: argparse.Namespace) -> int:
    """``bench-sd --end-to-end``: whole samples per method (`measure_end_to_end`)."""
    from constrained_diffusion.benchmarks.end_to_end import measure_end_to_end

    rows = measure_end_to_end(args.methods, args.dtypes, args.modes, args.batch_sizes, args.size, args.steps, args.runs,
                              args.device, tiny=args.tiny, compile_mode=args.compile_mode,
                              compile_backend=args.compile_backend, log=lambda line: print(line, flush=True))
    setup = (f"SD 1.5 UNet + VAE{' (tiny)' if args.tiny else ''} (random weights), {8 * args.size}x{8 * args.size} "
             f"images, {args.steps} steps, one warm-up run then {args.runs} timed runs per row (whole samples: constraint, "
             "sampling, decoding), "
             + (f"compiled = torch.compile mode {args.compile_mode} backend {args.compile_backend}, " if "compiled" in args.modes else "")
             + f"{args.device}, torch {torch.__version__}, {describe_device(args.device)}")
    table = e2e_table(rows)
    print(setup)
    print(table)
    if args.write_docs is not None:
        write_block(args.write_docs, args.block or default_block(args), f"```\n{command_line(args)}\n```\n\n{setup}\n\n{table}")
    return 0
