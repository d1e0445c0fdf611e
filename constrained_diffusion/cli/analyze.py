"""``constrained-diffusion analyze``: the Jacobian analysis on the MNIST DDPM.

* ``analyze eigvec`` — the rebuttal's table (top-k eigenvectors of ``J`` versus ``J^-1``, same
  image versus another image) for both pairings, next to the paper's values, with the asymmetry
  of ``J`` and the alignment of ``Je``, ``J^T e`` and ``e`` with ``J^+ e`` per time.
* ``analyze directions`` — a figure: for a single-pixel error ``e``, the maps ``Je``,
  ``J^+ e`` and ``J^T e``, and the ``x0`` estimate that one step along each produces.
* ``analyze half-precision`` — inexact-Newton top-half-inpainting PSNR of the MNIST models per dtype;
* ``analyze fd-precision`` — the cosine of the finite-difference direction with the float32
  JVP against ``h``, per dtype, on tiny SD 1.x / SD3 / Flux pipelines.
* ``analyze spectra`` / ``analyze fd-vs-backprop`` — on any model: the largest eigenvalues of
  ``J`` and its two parts by Arnoldi, and per-pixel maps of ``J e`` against ``J^T e``
  (``cli/analyze_spectra.py``).
* ``analyze secant`` — secant Newton against inexact Newton, exact Newton and the identity on
  the MNIST models, at equal steps and at equal NFE (``cli/analyze_secant.py``).
* ``analyze batch-dependence`` — each solver at batch 1 against batch B on the same digits and
  seeds: the largest pixel and PSNR change (``cli/analyze_batch.py``, docs: Determinism).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from constrained_diffusion.cli.analyze_batch import add_batch_parser
from constrained_diffusion.cli.analyze_noisy import add_noisy_parser
from constrained_diffusion.cli.analyze_secant import add_secant_parser
from constrained_diffusion.cli.analyze_spectra import add_spectra_parsers
from constrained_diffusion.cli.args import documented_command, format_table, non_negative_int, positive_int, renamed_flag, summary, write_block
from constrained_diffusion.cli.vocabulary import add_quiet, model_name, out_file, progress_log

if TYPE_CHECKING:
    from constrained_diffusion.denoisers import Denoiser

EIGVEC_OPTIONS = ("--timesteps", "--samples", "--k", "--rcond", "--seed", "--weights")
"""What the command written with the eigenvector table repeats."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``analyze`` and its options on the sub-command parsers ``sub``."""
    p = sub.add_parser("analyze", help="Jacobian analysis: J vs J^-1 eigenvectors, Newton-direction alignment; "
                                       "prints tables, writes figures (see each analysis' --help)",
                       description=summary(__doc__))
    inner = p.add_subparsers(dest="analysis", required=True, parser_class=type(p), help="the analysis to run (each has its own --help)")
    e = inner.add_parser("eigvec", help="the eigenvector table")
    e.add_argument("--timesteps", type=non_negative_int, nargs="+", default=list(range(950, 0, -100)),
                   help="DDPM timesteps t of the table (default 950 850 ... 50)")
    e.add_argument("--samples", type=positive_int, default=10, help="digits per timestep (default 10)")
    e.add_argument("--k", type=positive_int, default=20, help="leading eigenvectors compared (default 20)")
    e.add_argument("--rcond", type=float, default=1e-3, help="cut-off of the pseudo-inverse J^+ (default 1e-3)")
    e.add_argument("--seed", type=int, default=0, help="seed of the noise at each t (default 0)")
    e.add_argument("--weights", type=Path, default=None, help="a UNet weight file instead of the shipped DDPM")
    e.add_argument("--results", type=Path, default=Path("runs/eigvec.jsonl"),
                   help="JSONL file of finished rows; a rerun resumes from it (default runs/eigvec.jsonl)")
    e.add_argument("--write-docs", type=Path, default=None, help="replace the EIGVEC-TABLE block of this markdown file")
    add_quiet(e)
    e.set_defaults(run=run_eigvec, documented=command_line)
    d = inner.add_parser("directions", help="the Je / J^+e / J^Te figure for a single-pixel error")
    d.add_argument("--t", type=non_negative_int, default=500, help="timestep (default 500)")
    d.add_argument("--digit", type=non_negative_int, default=0, help="index of the test digit (default 0)")
    d.add_argument("--pixel", type=non_negative_int, nargs=2, default=[16, 16], metavar=("ROW", "COL"),
                   help="the pixel of the single-pixel error e (default 16 16)")
    d.add_argument("--step-scale", type=float, default=0.5, help="max-norm of the one step (default 0.5)")
    d.add_argument("--lr", dest="step_scale", type=float, action=renamed_flag("--step-scale"), help=argparse.SUPPRESS)
    d.add_argument("--rcond", type=float, default=1e-3, help="cut-off of the pseudo-inverse J^+ (default 1e-3)")
    d.add_argument("--seed", type=int, default=0, help="seed of the noise at t (default 0)")
    d.add_argument("--weights", type=Path, default=None, help="a UNet weight file instead of the shipped DDPM")
    d.add_argument("--out", type=Path, default=Path("directions.png"),
                   help="the figure: a path ending in .png (default directions.png), or a folder to write directions.png in")
    d.set_defaults(run=run_directions)
    f = inner.add_parser("fd-precision", help="finite-difference direction cosine against h, per dtype")
    f.add_argument("--kinds", nargs="+", choices=["sd", "sd3", "flux"], default=["sd", "sd3", "flux"],
                   help="model architectures measured (random weights; default sd sd3 flux)")
    f.add_argument("--hs", type=float, nargs="+", default=[0.005, 0.02, 0.05, 0.1, 0.3], help="fixed steps compared")
    f.add_argument("--seed", type=int, default=0, help="seed of the inputs (default 0)")
    f.add_argument("--write-docs", type=Path, default=None, help="replace the FD-PRECISION block of this markdown file")
    add_quiet(f)
    f.set_defaults(run=run_fd_precision, documented=fd_precision_command)
    h = inner.add_parser("half-precision", help="top-half-inpainting PSNR of inexact Newton per dtype on the MNIST models")
    h.add_argument("--models", nargs="+", type=model_name(["mnist-ddpm", "mnist-flow"]), default=["mnist-ddpm", "mnist-flow"],
                   metavar="MODEL", help="shipped MNIST models (default mnist-ddpm mnist-flow; the table names them ddpm, flow)")
    h.add_argument("--dtypes", nargs="+", choices=["float32", "bfloat16", "float16"], default=["float32", "bfloat16"],
                   help="dtypes compared (default float32 bfloat16; float16 convolutions are very slow on CPUs)")
    h.add_argument("--limit", type=positive_int, default=50, help="test digits (default 50)")
    h.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
    h.add_argument("--write-docs", type=Path, default=None, help="replace the HALF-PRECISION-PSNR block of this markdown file")
    add_quiet(h)
    h.set_defaults(run=run_half_precision, documented=half_precision_command)
    add_noisy_parser(inner)  # analyze noisy (cli/analyze_noisy.py)
    add_batch_parser(inner)  # analyze batch-dependence (cli/analyze_batch.py)
    add_secant_parser(inner)  # analyze secant (cli/analyze_secant.py)
    add_spectra_parsers(inner)  # analyze spectra, analyze fd-vs-backprop (cli/analyze_spectra.py)


def _denoiser(weights: Path | None) -> Denoiser:
    """The shipped DDPM, or the UNet weight file ``weights`` (one-line error for any other file)."""
    from constrained_diffusion.denoisers import Denoiser
    from constrained_diffusion.models import load

    model = load(weights or "mnist-ddpm")
    if not isinstance(model, Denoiser):
        raise ValueError(f"--weights: {weights} holds a {type(model).__name__}, not a diffusion model")
    return model


def eigvec_tables(rows: list[dict]) -> tuple[str, str]:
    """The similarity table (with the paper's values) and the alignment table of `eigvec_rows`."""
    from constrained_diffusion.analysis.experiment import PAPER_RANDOM, PAPER_SAME

    paper = lambda table, t: f"{table[t]:.2f}" if t in table else "-"  # noqa: E731
    sim = format_table(
        ["t", "same top-k", "(paper)", "random top-k", "(paper)", "same all", "random all", "asymmetry"],
        [[str(int(r["t"])), f"{r['same_top-k']:.3f}", paper(PAPER_SAME, int(r["t"])), f"{r['random_top-k']:.3f}",
          paper(PAPER_RANDOM, int(r["t"])), f"{r['same_all']:.3f}", f"{r['random_all']:.3f}", f"{r['asymmetry']:.3f}"]
         for r in rows])
    align = format_table(
        ["t", "task", "cos(Je, J+e)", "cos(JTe, J+e)", "cos(e, J+e)", "reduction J+e", "reduction Je", "reduction JTe", "reduction e"],
        [[str(int(r["t"])), task, *(f"{r[f'{task}_{k}']:.3f}" for k in ("cos_Je", "cos_JTe", "cos_e", "reduction_newton",
                                                                       "reduction_Je", "reduction_JTe", "reduction_e"))]
         for r in rows for task in ("inpainting", "sr4")])
    return sim, align


def command_line(args: argparse.Namespace) -> str:
    """The command written with the eigenvector tables (it regenerates the block)."""
    return documented_command("analyze eigvec", args, EIGVEC_OPTIONS)


def run_eigvec(args: argparse.Namespace) -> int:
    """Run ``analyze eigvec`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.analysis.experiment import eigvec_rows
    from constrained_diffusion.data import mnist
    from constrained_diffusion.models import weights_digest, weights_path

    if any(t > 999 for t in args.timesteps):
        raise ValueError("--timesteps: each must lie in [0, 999]")
    source = args.weights or "mnist-ddpm"
    model = _denoiser(args.weights)
    images, _ = mnist("held-out")
    rows = eigvec_rows(model, images, args.timesteps, args.samples, args.k, args.rcond, args.seed,
                       results=args.results, model_name=f"mnist-ddpm {weights_digest(weights_path(source))}",  # type: ignore[arg-type]
                       log=progress_log(args))
    sim, align = eigvec_tables(rows)
    print(sim)
    print()
    print(align)
    if args.write_docs is not None:
        write_block(args.write_docs, "EIGVEC-TABLE", f"```\n{command_line(args)}\n```\n\nModel: {model!r}.\n\n{sim}\n\n{align}")
    return 0


def run_directions(args: argparse.Namespace) -> int:
    """Run ``analyze directions`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.analysis.directions import directions_grid, pixel_directions
    from constrained_diffusion.data import mnist
    from constrained_diffusion.utils.images import save_png, to_uint8

    model = _denoiser(args.weights)
    images, _ = mnist("held-out")
    if args.digit >= images.shape[0]:
        raise ValueError(f"--digit must be < {images.shape[0]}")
    result = pixel_directions(model, images[args.digit:args.digit + 1], args.t, tuple(args.pixel), args.step_scale, args.rcond,
                              args.seed)
    path = save_png(out_file(args.out, "directions.png"), to_uint8(directions_grid(result, model.sample_shape)))
    print(f"wrote {path}: top row e, Je, J+e, JTe (each scaled to max |.| = 1); "
          f"bottom row x0_hat before, and after one step along Je, J+e, JTe (t={args.t}, digit {args.digit})")
    return 0


def fd_precision_table(rows: list) -> str:
    """The markdown table of `constrained_diffusion.analysis.fd_precision.precision_rows`."""
    names = {"sd": "SD 1.x UNet", "sd3": "SD3 transformer", "flux": "Flux transformer"}
    hs = list(rows[0].cosines)
    header = ["pipeline", "dtype", *(f"h = {h:g}" for h in hs), "default h", "cosine at the default h"]
    body = [[names[r.kind], str(r.dtype).removeprefix("torch."), *(f"{r.cosines[h]:.4f}" for h in hs), f"{r.auto_h:.4g}",
             f"{r.auto_cosine:.4f}"] for r in rows]
    return format_table(header, body)


def fd_precision_command(args: argparse.Namespace) -> str:
    """The command written with the fd-precision table (it regenerates the block)."""
    return documented_command("analyze fd-precision", args, ["--kinds", "--hs", "--seed"],
                              omit={"--kinds": ["sd", "sd3", "flux"], "--hs": [0.005, 0.02, 0.05, 0.1, 0.3], "--seed": 0})


def run_fd_precision(args: argparse.Namespace) -> int:
    """Run ``analyze fd-precision`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.analysis.fd_precision import precision_rows

    rows = precision_rows(args.kinds, hs=args.hs, seed=args.seed, log=progress_log(args))
    table = fd_precision_table(rows)
    print(table)
    if args.write_docs is not None:
        write_block(args.write_docs, "FD-PRECISION", f"```\n{fd_precision_command(args)}\n```\n\n{table}")
    return 0


def half_precision_command(args: argparse.Namespace) -> str:
    """The command written with the half-precision table (it regenerates the block)."""
    return documented_command("analyze half-precision", args, ["--models", "--dtypes", "--limit", "--seed"],
                              omit={"--models": ["mnist-ddpm", "mnist-flow"], "--dtypes": ["float32", "bfloat16"],
                                    "--limit": 50, "--seed": 0})


def run_half_precision(args: argparse.Namespace) -> int:
    """Run ``analyze half-precision`` with the parsed ``args``; returns the exit status."""
    import torch

    from constrained_diffusion.analysis.half_precision import half_precision_rows

    rows = half_precision_rows([m.removeprefix("mnist-") for m in args.models], [getattr(torch, d) for d in args.dtypes], limit=args.limit, seed=args.seed,
                               log=progress_log(args))
    table = format_table(["model", "dtype", "digits", "PSNR (dB)", "vs float32 (dB)"],
                         [[r.model, str(r.dtype).removeprefix("torch."), str(r.digits), f"{r.psnr:.2f}", f"{r.delta:+.2f}"]
                          for r in rows])
    print(table)
    if args.write_docs is not None:
        write_block(args.write_docs, "HALF-PRECISION-PSNR", f"```\n{half_precision_command(args)}\n```\n\n{table}")
    return 0
