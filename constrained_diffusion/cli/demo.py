"""``constrained-diffusion demo``: constrained inpainting on an embedded model, every solver.

Fills in the missing part of an image with each solver from the same initial noise and prints
solver, final residual of the known pixels, network forwards (NFE) and backwards (NBE),
seconds (and, on MNIST, the digit the shipped classifier reads in the result); writes a PNG
grid: truth | observed | unconstrained | one column per solver, each column labelled above it.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

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
    grid = to_uint8(make_grid(images, nrow=len(columns), pad_value=1.0))
    labels = [name if name != "none" else "unconstrained" for name in columns]
    path = save_png(args.out, label_columns(grid, labels, cell_width=images.shape[-1]))
    print(f"wrote {path} (columns: {' | '.join(labels)})")
    return 0


def label_columns(grid: Tensor, labels: Sequence[str], cell_width: int, padding: int = 2) -> Tensor:
    """Add a white strip above a `make_grid` image with each column's label drawn centred in it.

    The text is drawn with PIL's built-in default font (nothing is downloaded); a label wider
    than its column is broken at ``-`` or spaces onto further lines, and a word still too wide
    is split across lines.

    Args:
        grid: ``uint8`` grid ``(C, H, W)`` with ``C`` 1 or 3, as `make_grid` + `to_uint8` build it
            with ``len(labels)`` columns of ``cell_width`` pixels separated by ``padding``.
        labels: one label per column, left to right.
        cell_width: width of one image in the grid, in pixels.
        padding: the grid's padding, in pixels.

    Returns:
        ``uint8`` ``(C, H + strip, W)``: the strip (black text on white) above the grid.

    Example:
        >>> grid = torch.zeros(1, 36, 70, dtype=torch.uint8)
        >>> labelled = label_columns(grid, ["truth", "inexact-newton"], cell_width=32)
        >>> labelled.shape[1] > 36, labelled.shape[2], bool((labelled[:, :-36] < 128).any())
        (True, 70, True)
    """
    from PIL import Image, ImageDraw, ImageFont

    if grid.dtype != torch.uint8 or grid.ndim != 3 or grid.shape[0] not in (1, 3):
        raise ValueError(f"grid must be uint8 (C, H, W) with C 1 or 3, got {grid.dtype} {tuple(grid.shape)}")
    if cell_width < 1 or padding < 0:
        raise ValueError(f"cell_width must be >= 1 and padding >= 0, got {cell_width} and {padding}")
    if padding + len(labels) * (cell_width + padding) != grid.shape[-1]:
        raise ValueError(f"labels: {len(labels)} columns of width {cell_width} (padding {padding}) do not tile "
                         f"a grid {grid.shape[-1]} pixels wide")
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))

    def width(text: str) -> int:
        box = measure.textbbox((0, 0), text, font=font)
        return int(box[2] - box[0])

    def wrap(label: str) -> list[str]:
        words = label.replace("-", "- ").split()
        lines: list[str] = []
        for word in words:
            joined = (lines[-1] + ("" if lines[-1].endswith("-") else " ") + word) if lines else word
            if lines and width(joined) <= cell_width:
                lines[-1] = joined
                continue
            while len(word) > 1 and width(word) > cell_width:  # a word wider than the column: split it
                cut = max(1, max(i for i in range(1, len(word)) if width(word[:i]) <= cell_width or i == 1))
                lines.append(word[:cut])
                word = word[cut:]
            lines.append(word)
        return lines or [""]

    wrapped = [wrap(label) for label in labels]
    ascent, descent = font.getmetrics()
    line_height = ascent + descent + 1
    strip = padding + max(len(lines) for lines in wrapped) * line_height + 1
    C, H, W = grid.shape
    canvas = Image.new("L", (W, strip), 255)
    draw = ImageDraw.Draw(canvas)
    for column, lines in enumerate(wrapped):
        left = padding + column * (cell_width + padding)
        for row, line in enumerate(lines):
            draw.text((left + (cell_width - width(line)) // 2, padding + row * line_height), line, fill=0, font=font)
    header = torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8).reshape(1, strip, W).expand(C, strip, W)
    return torch.cat([header, grid], dim=1)
