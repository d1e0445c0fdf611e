"""``constrained-diffusion demo``: constrained inpainting on the embedded default model.

Draws a ground-truth image from the model's prior, hides a centred box (25% of the pixels),
and fills it in with every solver from the same initial noise. Prints solver, final residual
of the known pixels, network forwards (NFE) and backwards (NBE) and seconds, and writes a PNG
grid: truth | observed | unconstrained | one column per solver.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from constrained_diffusion.cli.args import format_table, non_negative_int, positive_int, summary
from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.default_model import default_denoiser
from constrained_diffusion.sampling.engine import ConstrainedSampler, randn
from constrained_diffusion.solvers import registry
from constrained_diffusion.utils.images import make_grid, save_png, to_uint8


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="constrained inpainting on the embedded default model",
                       description=summary(__doc__))
    p.add_argument("--steps", type=positive_int, default=20, help="denoising steps (default 20)")
    p.add_argument("--inner-steps", type=non_negative_int, default=5, help="constraint iterations per step (default 5)")
    p.add_argument("--solver", choices=[*registry.names(), "all"], default="all", help="solver to run (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image and the noise (default 0)")
    p.add_argument("--out", type=Path, default=Path("demo.png"), help="PNG grid to write (default demo.png)")
    p.add_argument("--quiet", action="store_true", help="hide the progress bars")
    p.set_defaults(run=run)


def box_mask(shape: tuple[int, ...], fraction: float = 0.25) -> torch.Tensor:
    """``(1, 1, H, W)`` mask, 1 = known, with a centred hole covering ``fraction`` of the pixels."""
    H, W = shape[-2:]
    h, w = round(H * fraction**0.5), round(W * fraction**0.5)
    mask = torch.ones(1, 1, H, W)
    mask[..., (H - h) // 2:(H - h) // 2 + h, (W - w) // 2:(W - w) // 2 + w] = 0
    return mask


def run(args: argparse.Namespace) -> int:
    model = default_denoiser()
    truth = model.sample_prior(1, torch.Generator().manual_seed(args.seed))
    mask = box_mask(model.sample_shape)
    constraint = Inpainting(truth, mask)
    x_T = randn(1, model.sample_shape, torch.Generator().manual_seed(args.seed + 1), model.device, model.dtype)
    solvers = registry.names() if args.solver == "all" else [args.solver]
    out_dir = args.out.parent
    if str(out_dir) and out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out: {out_dir} is not a directory")

    columns = {"truth": truth, "observed": truth * mask - (1 - mask)}
    rows = []
    for name, inner in [("none", 0)] + [(s, args.inner_steps) for s in solvers]:
        sampler = ConstrainedSampler(model, name if name != "none" else "inexact-newton",
                                     steps=args.steps, inner_steps=inner)
        result = sampler.sample(constraint, x_T=x_T, progress=not args.quiet)
        columns[name] = result.images
        assert result.final_residual is not None
        rows.append([name if name != "none" else "none (unconstrained)", f"{float(result.final_residual[0]):.4f}",
                     str(result.nfe), str(result.nbe), f"{result.seconds:.3f}"])
    print(f"inpainting a 1x32x32 image from the default model (steps={args.steps}, inner steps={args.inner_steps}, seed={args.seed})")
    print(format_table(["solver", "residual", "NFE", "NBE", "seconds"], rows))

    images = torch.cat(list(columns.values())).repeat_interleave(4, dim=-1).repeat_interleave(4, dim=-2)
    path = save_png(args.out, to_uint8(make_grid(images, nrow=len(columns), pad_value=1.0)))
    print(f"wrote {path} (columns: {' | '.join(columns)})")
    return 0
