"""``constrained-diffusion demo``: real test digits inpainted by every method at its tuned setting.

Fills in a missing centred box (half the height and width: the tuning study's ``box`` task) of
``--digits`` real MNIST test digits (class-interleaved, shipped with the package, never seen in
training or tuning) in one batch, with each method at the setting the tuning study found best for this model and task
(``constrained_diffusion/recipes/tuned/<model>-box.yaml``, which names the study). Prints per
method: the mean residual ``||m * (y - x)||_2`` of the known pixels, the mean PSNR, how many digits the shipped classifier
reads right (k/N), network forwards (NFE) and backwards (NBE) and seconds. Writes
``OUT/demo.png``: one row per digit, columns truth | observed | one per method, each column
labelled above and its k/N below. Exact Newton (slow) runs only with ``--methods all``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from constrained_diffusion.cli.args import device_name, format_table, int_at_least, non_negative_int, positive_int, summary
from constrained_diffusion.cli.vocabulary import add_alias, out_file

if TYPE_CHECKING:  # torch loads when the demo runs, not for --help
    from PIL.Image import Image as PILImage
    from PIL.ImageFont import FreeTypeFont, ImageFont
    from torch import Tensor
    from torch.nn import Module

    from constrained_diffusion.denoisers.base import Denoiser
    from constrained_diffusion.evaluation.image_tasks import Problem
    from constrained_diffusion.recipes.recipe import Recipe
    from constrained_diffusion.recipes.tuned import TunedSettings

    Font = ImageFont | FreeTypeFont

MODELS = ("mnist-ddpm", "mnist-flow")
ALIASES = {"mnist": "mnist-ddpm"}
SLOW = ("exact-newton",)
"""Solvers run only when asked by name or by ``--methods all`` (exact Newton: ~4x the others' NFE)."""
MAX_DIGITS = 20
"""Digits shipped for the demo (`shipped_test_digits`)."""


def model_name(text: str) -> str:
    """``--model``: a `cd.models.load` name of a shipped MNIST model (``mnist`` = ``mnist-ddpm``)."""
    name = ALIASES.get(text, text)
    if name not in MODELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(MODELS)}, got {text!r}")
    return name


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo`` and its options on the sub-command parsers ``sub`` (imports no torch: ``--help`` is instant)."""
    p = sub.add_parser("demo", help="inpaint real test digits with every method at its tuned setting; writes OUT/demo.png",
                       description=summary(__doc__))
    p.add_argument("--model", type=model_name, default="mnist-ddpm",
                   help=f"a shipped MNIST model: {' or '.join(MODELS)} (default mnist-ddpm; 'mnist' is mnist-ddpm)")
    p.add_argument("--digits", type=int_at_least(1), default=10,
                   help=f"how many test digits to inpaint, in one batch (1 to {MAX_DIGITS}; default 10: one of each class)")
    p.add_argument("--methods", dest="solver", nargs="+", metavar="NAME", default=None,
                   help="methods to run: names from the tuned-settings file (recipes such as dps, mpgd, or solvers), "
                        "any registered solver (sample --list lists them), or 'all' = every tuned method plus "
                        f"{', '.join(SLOW)} (default: every tuned method)")
    p.add_argument("--steps", type=positive_int, default=None, help="denoising steps (default: the steps the methods were tuned at)")
    p.add_argument("--inner-steps", type=non_negative_int, default=None,
                   help="constraint iterations per step of the inner-loop methods (default: each method's tuned value)")
    p.add_argument("--seed", type=int, default=0, help="seed of the observations and the noise, per digit as in the harness (default 0)")
    p.add_argument("--out", type=Path, default=Path("."),
                   help="folder to write demo.png in (default: the current folder); a path ending in .png is the image file itself")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu (default) or cuda[:N]")
    p.add_argument("--quiet", action="store_true", help="print only the table and the path written")
    add_alias(p, "--method", "--solver", dest="solver")
    p.set_defaults(run=run)


def methods_to_run(requested: Sequence[str] | None, tuned: Sequence[str]) -> list[str]:
    """The methods of ``--methods``: the tuned ones by default, plus the slow solvers with ``all``.

    Raises:
        ValueError: a name that is neither tuned nor a registered solver.
    """
    from constrained_diffusion.solvers import registry

    if not requested:
        return list(tuned)
    names: list[str] = []
    for name in requested:
        for n in ([*tuned, *(s for s in SLOW if s not in tuned)] if name == "all" else [name]):
            if n not in tuned and n not in registry.names():
                raise ValueError(f"--methods: unknown method {n!r}; expected one of {', '.join(tuned)}, a solver "
                                 f"({', '.join(registry.names())}) or 'all'")
            if n not in names:
                names.append(n)
    return names


def output_path(out: Path) -> Path:
    """``--out``: a folder (the image is ``demo.png`` inside) or, if it ends in ``.png``, the image itself."""
    return out_file(out, "demo.png")


def run(args: argparse.Namespace) -> int:
    """Run ``demo`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.data.mnist import shipped_test_digits
    from constrained_diffusion.evaluation.digits import read_digits
    from constrained_diffusion.evaluation.image_tasks import make_problem
    from constrained_diffusion.models import load
    from constrained_diffusion.recipes.tuned import load_tuned
    from constrained_diffusion.utils.images import save_png

    started = time.perf_counter()
    if args.digits > MAX_DIGITS:
        raise ValueError(f"--digits: expected 1 to {MAX_DIGITS} (the shipped test digits), got {args.digits}")
    path = output_path(args.out)
    tuned = load_tuned(args.model, "box")
    names = methods_to_run(args.solver, list(tuned.methods))
    steps = args.steps or tuned.steps
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))

    truth, labels, ids = shipped_test_digits()
    truth, labels, ids = truth[: args.digits], labels[: args.digits], ids[: args.digits]
    device = getattr(args, "device", "cpu")
    model = load(args.model, device=device)
    classifier = load("mnist-classifier", device=device)
    problem = make_problem("box", truth.to(device), ids, args.seed)
    n = len(ids)
    columns = {"truth": truth, "observed": problem.observation.float().cpu()}
    rows, reads_right = [], {"truth": int((read_digits(truth, classifier) == labels).sum())}
    for name in names:
        recipe = _method_recipe(name, tuned, steps, args.inner_steps)
        say(f"running {name} on {n} digits ...")
        label = name if name in tuned.methods else f"{name}*"
        row, columns[label], reads_right[label] = _run_method(label, recipe, model, classifier, problem, truth, labels, ids, args.seed, device)
        rows.append(row)

    _print_results(args, tuned, steps, ids, labels, rows, untuned=any(name not in tuned.methods for name in names),
                   truth_read_right=reads_right["truth"])
    grid = labelled_grid(columns, {c: f"{k}/{n}" for c, k in reads_right.items()})
    written = save_png(path, grid)
    print(f"wrote {written} (rows: digits; columns: {' | '.join(columns)}; under each column: digits read right); "
          f"{time.perf_counter() - started:.0f} s in all")
    return 0


def _method_recipe(name: str, tuned: TunedSettings, steps: int, inner_steps: int | None) -> Recipe:
    """The recipe ``name`` runs with: its tuned setting (an untuned solver: the reference's loop, the solver's defaults)."""
    from constrained_diffusion.recipes.overrides import resolve_recipe

    overrides = dict(tuned.methods.get(name) or tuned.methods.get("inexact-newton", {}))
    if name not in tuned.methods:
        overrides = {k: v for k, v in overrides.items() if not k.startswith("solver.")}
    recipe = resolve_recipe(name, {**overrides, "steps": steps})
    if inner_steps is not None and "inner_steps" in recipe.config.model_dump():
        recipe = recipe.with_config(inner_steps=inner_steps)
    return recipe


def _run_method(label: str, recipe: Recipe, model: Denoiser, classifier: Module, problem: Problem, truth: Tensor, labels: Tensor,
                ids: Sequence[str], seed: int, device: str) -> tuple[list[str], Tensor, int]:
    """Inpaint the digits with ``recipe``: its table row, its outputs ``(N, 1, H, W)`` and how many digits the classifier reads right."""
    from constrained_diffusion.evaluation.batch import sample_batch
    from constrained_diffusion.evaluation.digits import read_digits
    from constrained_diffusion.metrics.images import psnr

    start = time.perf_counter()
    batch = sample_batch(model, recipe, problem.constraint, ids, seed, device)
    seconds = time.perf_counter() - start
    right = int((read_digits(batch.outputs, classifier) == labels).sum())
    residual = f"{float(batch.residual.mean()):.4f}" if batch.residual is not None else "-"
    row = [label, residual, f"{float(psnr(batch.outputs, truth).mean()):.2f}", f"{right}/{len(ids)}",
           str(batch.result.nfe), str(batch.result.nbe), f"{seconds:.1f}"]
    return row, batch.outputs, right


def _print_results(args: argparse.Namespace, tuned: TunedSettings, steps: int, ids: Sequence[str], labels: Tensor, rows: list[list[str]],
                   untuned: bool, truth_read_right: int) -> None:
    """Print what was inpainted, with which settings, the table of ``rows`` and what its columns mean."""
    from constrained_diffusion.recipes.tuned import tuned_path

    n = len(ids)
    print(f"inpainting a centred box (1/4 of the pixels) of {n} real test digits (mnist-test ids {', '.join(ids)}; labels "
          f"{' '.join(str(int(v)) for v in labels)}) with {args.model}, {steps} steps, seed {args.seed}")
    print(f"each method at the setting tuned for {args.model} / box by: {tuned.study.get('command', 'a tuning study')} "
          f"({tuned_path(args.model, 'box').name})")
    print(format_table(["method", "residual", "PSNR (dB)", "read right", "NFE", "NBE", "seconds"], rows))
    if untuned:
        print("* not in the tuning study: inexact-newton's tuned loop settings, the solver's default options")
    print(f"residual: mean over the digits of ||m * (y - x)||_2 on the known pixels; read right: digits the shipped classifier "
          f"reads as the true label (it reads {truth_read_right}/{n} of the true digits right)")


def labelled_grid(columns: dict[str, Tensor], notes: dict[str, str], scale: int = 3) -> Tensor:
    """The demo's picture: one row per image, one column per entry of ``columns``, labelled above, noted below.

    Args:
        columns: label -> images ``(N, 1, H, W)`` in ``[-1, 1]``, every entry with the same ``N``.
        notes: label -> text under that column (``"7/10"``); a column without one gets none.
        scale: pixel repetition of each image.

    Returns:
        ``uint8`` ``(1, height, width)``.
    """
    import torch

    from constrained_diffusion.utils.images import make_grid, to_uint8

    images = torch.stack([c.float().cpu().clamp(-1, 1) for c in columns.values()], dim=1).flatten(0, 1)  # row-major: image by image
    images = images.repeat_interleave(scale, dim=-1).repeat_interleave(scale, dim=-2)
    grid = to_uint8(make_grid(images, nrow=len(columns), pad_value=1.0))
    grid = label_columns(grid, list(columns), cell_width=images.shape[-1])
    return label_columns(grid, [notes.get(c, "") for c in columns], cell_width=images.shape[-1], below=True)


def label_columns(grid: Tensor, labels: Sequence[str], cell_width: int, padding: int = 2, below: bool = False) -> Tensor:
    """Add a white strip above (or below) a `make_grid` image with each column's label drawn centred in it.

    The text is drawn with PIL's built-in default font (nothing is downloaded); a label wider
    than its column is broken at ``-`` or spaces onto further lines, and a word still too wide
    is split across lines.

    Args:
        grid: ``uint8`` grid ``(C, H, W)`` with ``C`` 1 or 3, as `make_grid` + `to_uint8` build it
            with ``len(labels)`` columns of ``cell_width`` pixels separated by ``padding``.
        labels: one label per column, left to right.
        cell_width: width of one image in the grid, in pixels.
        padding: the grid's padding, in pixels.
        below: put the strip under the grid instead of above it.

    Returns:
        ``uint8`` ``(C, H + strip, W)``: the strip (black text on white) above (below) the grid.

    Examples:
        >>> import torch
        >>> grid = torch.zeros(1, 36, 70, dtype=torch.uint8)
        >>> labelled = label_columns(grid, ["truth", "inexact-newton"], cell_width=32)
        >>> labelled.shape[1] > 36, labelled.shape[2], bool((labelled[:, :-36] < 128).any())
        (True, 70, True)
    """
    import torch
    from PIL import ImageFont

    _check_tiling(grid, len(labels), cell_width, padding)
    font = ImageFont.load_default()
    width = _text_width(font)
    strip = _label_strip([_wrap_label(label, cell_width, width) for label in labels], font, width, grid.shape[-1], cell_width, padding)
    C, H, W = grid.shape
    header = torch.frombuffer(bytearray(strip.tobytes()), dtype=torch.uint8).reshape(1, strip.height, W).expand(C, strip.height, W)
    return torch.cat([grid, header] if below else [header, grid], dim=1)


def _check_tiling(grid: Tensor, columns: int, cell_width: int, padding: int) -> None:
    """Raise `ValueError` unless ``grid`` is ``uint8`` ``(C, H, W)`` tiled by ``columns`` cells of ``cell_width`` and ``padding``."""
    import torch

    if grid.dtype != torch.uint8 or grid.ndim != 3 or grid.shape[0] not in (1, 3):
        raise ValueError(f"grid must be uint8 (C, H, W) with C 1 or 3, got {grid.dtype} {tuple(grid.shape)}")
    if cell_width < 1 or padding < 0:
        raise ValueError(f"cell_width must be >= 1 and padding >= 0, got {cell_width} and {padding}")
    if padding + columns * (cell_width + padding) != grid.shape[-1]:
        raise ValueError(f"labels: {columns} columns of width {cell_width} (padding {padding}) do not tile "
                         f"a grid {grid.shape[-1]} pixels wide")


def _text_width(font: Font) -> Callable[[str], int]:
    """The function giving the width in pixels of a text drawn in ``font``."""
    from PIL import Image, ImageDraw

    measure = ImageDraw.Draw(Image.new("L", (1, 1)))

    def width(text: str) -> int:
        box = measure.textbbox((0, 0), text, font=font)
        return int(box[2] - box[0])

    return width


def _wrap_label(label: str, cell_width: int, width: Callable[[str], int]) -> list[str]:
    """``label`` broken into lines at most ``cell_width`` wide: after ``-`` or at spaces, a word still too wide split across lines."""
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


def _label_strip(wrapped: list[list[str]], font: Font, width: Callable[[str], int], grid_width: int, cell_width: int,
                 padding: int) -> PILImage:
    """A white ``L`` image ``grid_width`` wide with each column's lines of text drawn centred in black."""
    from PIL import Image, ImageDraw

    ascent, descent = font.getmetrics()
    line_height = ascent + descent + 1
    strip = padding + max(len(lines) for lines in wrapped) * line_height + 1
    canvas = Image.new("L", (grid_width, strip), 255)
    draw = ImageDraw.Draw(canvas)
    for column, lines in enumerate(wrapped):
        left = padding + column * (cell_width + padding)
        for row, line in enumerate(lines):
            draw.text((left + (cell_width - width(line)) // 2, padding + row * line_height), line, fill=0, font=font)
    return canvas
