"""``constrained-diffusion analyze``: the Jacobian analysis on the MNIST DDPM.

* ``analyze eigvec`` — the rebuttal's table (top-k eigenvectors of ``J`` versus ``J^-1``, same
  image versus another image) for both pairings, next to the paper's values, with the asymmetry
  of ``J`` and the alignment of ``Je``, ``J^T e`` and ``e`` with ``J^+ e`` per time.
* ``analyze directions`` — a figure: for a single-pixel error ``e``, the maps ``Je``,
  ``J^+ e`` and ``J^T e``, and the ``x0`` estimate that one step along each produces.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from constrained_diffusion.cli.args import format_table, non_negative_int, positive_int, replace_block, summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="Jacobian analysis: J vs J^-1 eigenvectors, Newton-direction alignment",
                       description=summary(__doc__))
    inner = p.add_subparsers(dest="analysis", required=True, parser_class=type(p))
    e = inner.add_parser("eigvec", help="the eigenvector table")
    e.add_argument("--timesteps", type=non_negative_int, nargs="+", default=list(range(950, 0, -100)))
    e.add_argument("--samples", type=positive_int, default=10, help="digits per timestep (default 10)")
    e.add_argument("--k", type=positive_int, default=20, help="leading eigenvectors compared (default 20)")
    e.add_argument("--rcond", type=float, default=1e-3, help="cut-off of the pseudo-inverse J^+ (default 1e-3)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--weights", type=Path, default=None, help="a UNet weight file instead of the shipped DDPM")
    e.add_argument("--results", type=Path, default=Path("runs/eigvec.jsonl"),
                   help="JSONL file of finished rows; a rerun resumes from it (default runs/eigvec.jsonl)")
    e.add_argument("--write-docs", type=Path, default=None, help="replace the EIGVEC-TABLE block of this markdown file")
    e.set_defaults(run=run_eigvec)
    d = inner.add_parser("directions", help="the Je / J^+e / J^Te figure for a single-pixel error")
    d.add_argument("--t", type=non_negative_int, default=500, help="timestep (default 500)")
    d.add_argument("--digit", type=non_negative_int, default=0, help="index of the test digit (default 0)")
    d.add_argument("--pixel", type=non_negative_int, nargs=2, default=[16, 16], metavar=("ROW", "COL"))
    d.add_argument("--lr", type=float, default=0.5, help="max-norm of the one step (default 0.5)")
    d.add_argument("--rcond", type=float, default=1e-3)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--weights", type=Path, default=None)
    d.add_argument("--out", type=Path, default=Path("directions.png"))
    d.set_defaults(run=run_directions)


def _weights_file(weights: Path | None) -> Path:
    from constrained_diffusion.models.pretrained import pretrained_path

    return Path(weights) if weights is not None else Path(pretrained_path("mnist_ddpm.safetensors"))


def _model(weights: Path | None):
    from constrained_diffusion.denoisers.mnist import MNISTDenoiser

    return MNISTDenoiser.from_file(_weights_file(weights))


def run_eigvec(args: argparse.Namespace) -> int:
    from constrained_diffusion.analysis.experiment import PAPER_RANDOM, PAPER_SAME, eigvec_rows
    from constrained_diffusion.data import mnist
    from constrained_diffusion.models.pretrained import weights_digest

    if any(t > 999 for t in args.timesteps):
        raise ValueError("--timesteps: each must lie in [0, 999]")
    model = _model(args.weights)
    images, _ = mnist("test")
    rows = eigvec_rows(model, images, args.timesteps, args.samples, args.k, args.rcond, args.seed,
                       results=args.results, model_name=f"mnist-ddpm {weights_digest(_weights_file(args.weights))}")
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
    print(sim)
    print()
    print(align)
    if args.write_docs is not None:
        command = (f"constrained-diffusion analyze eigvec --timesteps {' '.join(map(str, args.timesteps))} "
                   f"--samples {args.samples} --k {args.k} --rcond {args.rcond} --seed {args.seed}"
                   + (f" --weights {args.weights}" if args.weights else ""))
        replace_block(args.write_docs, "EIGVEC-TABLE", f"```\n{command}\n```\n\nModel: {model!r}.\n\n{sim}\n\n{align}")
        print(f"updated {args.write_docs}")
    return 0


def run_directions(args: argparse.Namespace) -> int:
    from constrained_diffusion.analysis.jacobian import jacobian
    from constrained_diffusion.data import mnist
    from constrained_diffusion.utils.images import make_grid, save_png, to_uint8

    model = _model(args.weights)
    images, _ = mnist("test")
    if args.digit >= images.shape[0]:
        raise ValueError(f"--digit must be < {images.shape[0]}")
    H, W = model.sample_shape[-2:]
    row, col = args.pixel
    if not (row < H and col < W):
        raise ValueError(f"--pixel must lie inside the {H}x{W} image")
    t = torch.tensor(args.t)
    alpha, sigma = (float(v) for v in model.alpha_sigma(t))
    x0 = images[args.digit:args.digit + 1]
    x_t = alpha * x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(args.seed))
    J = jacobian(model, x_t, t)
    e = torch.zeros(H * W, dtype=torch.float64)
    e[row * W + col] = 1.0
    U, S, Vh = torch.linalg.svd(J)
    keep = S > args.rcond * S[0]
    directions = {"Je": J @ e, "J+e": Vh[keep].T @ ((U[:, keep].T @ e) / S[keep]), "JTe": J.T @ e}
    maps, after = [e], []
    with torch.no_grad():
        before = model(x_t, t)
        for d in directions.values():
            maps.append(d)
            step = (args.lr * d / d.abs().max()).reshape(x_t.shape).float()
            after.append(model(x_t + step, t))
    maps_img = torch.stack([m.reshape(1, H, W).float() / m.abs().max().clamp_min(1e-12) for m in maps])
    recon = torch.cat([before, *after])
    grid = make_grid(torch.cat([maps_img, recon]).repeat_interleave(4, -1).repeat_interleave(4, -2), nrow=4)
    path = save_png(args.out, to_uint8(grid))
    print(f"wrote {path}: top row e, Je, J+e, JTe (each scaled to max |.| = 1); "
          f"bottom row x0_hat before, and after one step along Je, J+e, JTe (t={args.t}, digit {args.digit})")
    return 0
