"""``analyze spectra`` and ``analyze fd-vs-backprop``: the Jacobian analysis on any model.

* ``analyze spectra --model M`` — the largest eigenvalues of ``J``, ``(J+J^T)/2`` and
  ``(J-J^T)/2`` per time by matrix-free Arnoldi (`constrained_diffusion.analysis.spectra`);
  ``--dense`` adds the exact values from the dense Jacobian (small models).
* ``analyze fd-vs-backprop --model M`` — per-pixel maps of the finite-difference ``J e``, the
  exact ``J e`` and the backpropagated ``J^T e`` at one probe pixel, with cosines
  (`constrained_diffusion.analysis.fd_backprop`).

``M`` is a shipped model, a weight file, a diffusers folder, a Hub id or ``sd15-random``. Both
write one JSON line per finished unit to ``--results`` and resume from it, draw ``--figure``
and, with ``--write-docs FILE``, replace the ``--block`` of a markdown page.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from constrained_diffusion.cli.args import (
    describe_device,
    documented_command,
    non_negative_int,
    positive_int,
    write_block,
)
from constrained_diffusion.cli.vocabulary import AUTO, add_quiet, device_or_auto, progress_log

TIMES = [900, 700, 500, 300]
SPECTRA_OPTIONS = ("--model", "--device", "--dtype", "--prompt", "--image", "--digit", "--sample-steps", "--times",
                   "--iterations", "--operators", "--h", "--jvp", "--start", "--seed", "--dense", "--results", "--figure",
                   "--block")
"""What the command written with the spectra table repeats (``--results`` only when not the default: the records
it reuses, so a block can keep timings of its own run)."""
FD_OPTIONS = ("--model", "--device", "--dtype", "--prompt", "--image", "--digit", "--sample-steps", "--times", "--pixel",
              "--h", "--no-exact", "--seed", "--figure", "--block")
"""What the command written with the fd-vs-backprop table repeats."""


def non_negative_float(text: str) -> float:
    """An argparse type: a number ``>= 0`` (an ``int`` when it is whole, so ``900`` stays ``900``), else a one-line error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return int(value) if value.is_integer() else value


def positive_float(text: str) -> float:
    """An argparse type: a number ``> 0``, else a one-line error."""
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number > 0, got 0")
    return value


def _model_options(p: argparse.ArgumentParser) -> None:
    """The options both commands share: the model, its state, the times and the outputs."""
    p.add_argument("--model", required=True,
                   help="a shipped model (mnist-ddpm, mnist-flow, ...), a weight file, a diffusers folder, a Hub id, "
                        "or sd15-random (the SD 1.5 UNet architecture with random weights)")
    p.add_argument("--device", type=device_or_auto, default=AUTO, help="cpu or cuda[:N] (default: cuda if available)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16", "float64"], default="float32", help="dtype of the model (default float32)")
    p.add_argument("--prompt", default="", help="prompt bound to a text-conditioned model (default: empty)")
    p.add_argument("--image", type=Path, default=None, help="clean image whose forward process gives x_t")
    p.add_argument("--digit", type=non_negative_int, default=None,
                   help="MNIST test digit as the clean sample (default 0 for the 1x32x32 MNIST models)")
    p.add_argument("--sample-steps", type=positive_int, default=20,
                   help="without --image/--digit: DDIM steps of the model sample used as the clean sample (default 20)")
    p.add_argument("--times", type=non_negative_float, nargs="+", default=list(TIMES),
                   help="times of a 1000-step VP model (flows: s = t/1000; default 900 700 500 300)")
    p.add_argument("--h", type=positive_float, default=None, help="finite-difference max-norm step (default: precision-aware)")
    p.add_argument("--seed", type=int, default=0, help="noise of time t from seed + t (default 0)")
    p.add_argument("--figure", type=Path, default=None, help="write the figure to this PNG or SVG file")
    p.add_argument("--write-docs", type=Path, default=None, help="replace the --block of this markdown file")
    add_quiet(p)


def add_spectra_parsers(inner: argparse._SubParsersAction) -> None:
    """Register ``analyze spectra`` and ``analyze fd-vs-backprop`` on the ``analyze`` sub-parsers ``inner``."""
    s = inner.add_parser("spectra", help="largest eigenvalues of J, (J+J^T)/2, (J-J^T)/2 by Arnoldi, any model")
    _model_options(s)
    s.add_argument("--iterations", type=positive_int, nargs="+", default=[10, 30], help="Arnoldi steps (default 10 30)")
    s.add_argument("--operators", nargs="+", choices=["J", "sym", "antisym"], default=["J", "sym", "antisym"],
                   help="J, its symmetric part (J+J^T)/2, its antisymmetric part (J-J^T)/2 (default all)")
    s.add_argument("--jvp", choices=["fd", "exact"], default="fd", help="J v by finite difference (default) or forward AD")
    s.add_argument("--start", choices=["x0-hat", "random"], default="x0-hat", help="Arnoldi start vector (default x0-hat)")
    s.add_argument("--dense", action="store_true", help="also the exact eigenvalues of the dense Jacobian (small models)")
    s.add_argument("--results", type=Path, default=Path("runs/spectra.jsonl"), help="JSONL of records; a rerun resumes")
    s.add_argument("--block", default="SPECTRA-TABLE", help="block of --write-docs (default SPECTRA-TABLE)")
    s.set_defaults(run=run_spectra, documented=spectra_command)
    f = inner.add_parser("fd-vs-backprop", help="per-pixel maps: finite-difference J e against backpropagated J^T e")
    _model_options(f)
    f.add_argument("--pixel", type=non_negative_int, nargs=2, default=None, metavar=("ROW", "COL"),
                   help="probe pixel in the sample grid (default: the centre)")
    f.add_argument("--no-exact", action="store_true", help="skip the exact JVP (forward-mode AD)")
    f.add_argument("--results", type=Path, default=Path("runs/fd-vs-backprop.jsonl"), help="JSONL of records; a rerun resumes")
    f.add_argument("--block", default="FD-BACKPROP-TABLE", help="block of --write-docs (default FD-BACKPROP-TABLE)")
    f.set_defaults(run=run_fd_backprop, documented=fd_backprop_command)


def spectra_command(args: argparse.Namespace) -> str:
    """The command written with the spectra table (it regenerates the block)."""
    return documented_command("analyze spectra", args, SPECTRA_OPTIONS, omit=_omit(args, "SPECTRA-TABLE"))


def fd_backprop_command(args: argparse.Namespace) -> str:
    """The command written with the fd-vs-backprop table (it regenerates the block)."""
    return documented_command("analyze fd-vs-backprop", args, FD_OPTIONS, omit=_omit(args, "FD-BACKPROP-TABLE"))


def _omit(args: argparse.Namespace, block: str) -> dict[str, Any]:
    """Defaults the documented command leaves out; ``--dtype`` and ``--device`` are always written."""
    omit: dict[str, Any] = {"--block": block, "--prompt": "", "--sample-steps": 20, "--times": TIMES, "--seed": 0}
    if args.command == "analyze" and getattr(args, "analysis", "") == "spectra":
        omit.update({"--iterations": [10, 30], "--operators": ["J", "sym", "antisym"], "--jvp": "fd", "--start": "x0-hat",
                     "--results": Path("runs/spectra.jsonl")})
    return omit


def _setup(args: argparse.Namespace) -> tuple[Any, str]:
    """The conditioned model and its key; refuses a bad ``--digit``/``--image`` combination before loading."""
    from constrained_diffusion.analysis.spectra import load_denoiser

    if args.image is not None and args.digit is not None:
        raise ValueError("--image and --digit: give at most one clean sample")
    if args.image is not None and not args.image.is_file():
        raise FileNotFoundError(f"--image: no file at {args.image}")
    return load_denoiser(args.model, args.device, args.dtype, args.prompt)


def _clean(args: argparse.Namespace, model: Any) -> tuple[Any, str]:
    """The clean sample: ``--image``, ``--digit`` (default 0 for a 1x32x32 pixel model), else a model sample."""
    from constrained_diffusion.analysis.spectra import clean_sample

    digit = args.digit
    if digit is None and args.image is None and model.space == "pixel" and model.sample_shape == (1, 32, 32):
        digit = 0
    return clean_sample(model, args.image, digit, args.sample_steps, args.seed)


def run_spectra(args: argparse.Namespace) -> int:
    """Run ``analyze spectra`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.analysis.spectra import Spectra, spectra_figure, spectra_table

    spectra = Spectra(times=args.times, iterations=args.iterations, operators=args.operators, h=args.h, jvp=args.jvp,
                      start=args.start, seed=args.seed, dense=args.dense)
    model, key = _setup(args)
    spectra.check(model)  # bad times raise here, before the clean sample is drawn
    x0, state = _clean(args, model)
    records = spectra.run(model, x0, args.results, key, state, log=progress_log(args))
    table = spectra_table(records, paper=True)
    print(table)
    if args.figure is not None:
        print(f"wrote {spectra_figure(records, args.figure, f'{args.model}, {state}')}")
    if args.write_docs is not None:
        write_block(args.write_docs, args.block,
                    f"```\n{spectra_command(args)}\n```\n\nModel: `{key}`; clean sample: {state}; {describe_device(args.device)}."
                    f"\n\n{table}\n\n{spectra_cost(records)}")
    return 0


def spectra_cost(records: list[dict[str, Any]]) -> str:
    """Seconds per product (median and range over times) and in all, per operator at the largest ``n``; dense; peak memory."""
    lines = []
    for op in dict.fromkeys(r["operator"] for r in records):
        arnoldi = [r for r in records if r["operator"] == op and r["method"] == "arnoldi"]
        if arnoldi:
            n = max(r["iterations"] for r in arnoldi)
            rows = [r for r in arnoldi if r["iterations"] == n]
            per = [r["seconds"] / r["products"] for r in rows]
            lines.append(f"- `{op}`, n = {n}: {statistics.median(per):.3f} s per product (median over {len(rows)} times, "
                         f"range {min(per):.3f}–{max(per):.3f}), {sum(r['seconds'] for r in rows):.1f} s in all")
    dense = {r["t"]: r["seconds"] for r in records if r["method"] == "dense"}
    if dense:
        lines.append(f"- dense Jacobian and its three eigendecompositions: {statistics.median(dense.values()):.1f} s per time "
                     f"(median over {len(dense)}, range {min(dense.values()):.1f}–{max(dense.values()):.1f})")
    peaks = [r["peak_mb"] for r in records if r.get("peak_mb") is not None]
    if peaks:
        lines.append(f"- peak memory: {max(peaks):,.0f} MB (CUDA memory allocated on a GPU; on a CPU the process's peak "
                     "resident set, model and data included)")
    return "Cost (seconds are wall clock of the run that made the records):\n\n" + "\n".join(lines)


def run_fd_backprop(args: argparse.Namespace) -> int:
    """Run ``analyze fd-vs-backprop`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.analysis.fd_backprop import FDBackprop, fd_backprop_figure, fd_backprop_table
    from constrained_diffusion.analysis.spectra import analysis_time

    analysis = FDBackprop(times=args.times, pixel=tuple(args.pixel) if args.pixel else None, h=args.h,
                          exact=not args.no_exact, seed=args.seed)
    model, key = _setup(args)
    for t in args.times:
        analysis_time(model, t)  # bad times raise before any network call
    analysis.probe(model)
    x0, state = _clean(args, model)
    records = analysis.run(model, x0, args.results, key, state, log=progress_log(args))
    table = fd_backprop_table(records)
    print(table)
    if args.figure is not None:
        row, col = analysis.probe(model)
        print(f"wrote {fd_backprop_figure(records, args.figure, f'{args.model}, {state}, probe ({row}, {col})')}")
    if args.write_docs is not None:
        row, col = analysis.probe(model)
        write_block(args.write_docs, args.block,
                    f"```\n{fd_backprop_command(args)}\n```\n\nModel: `{key}`; clean sample: {state}; probe pixel "
                    f"({row}, {col}); {describe_device(args.device)}.\n\n{table}")
    return 0
