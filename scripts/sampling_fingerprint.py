"""Before/after check of a refactoring: sample with every solver, step-size rule and recipe, then compare two checkouts.

Each run samples a batch of 2 from fixed noise (the analytic model in float64 and float32, and
the shipped MNIST DDPM, top half missing) and keeps the samples, the residual history, NFE and
NBE; the latent constraint's finite difference is fingerprinted in three dtypes as well.
``--compare`` prints one line per run found in both files and the largest difference; runs
present in one file only (methods added since) are listed, not compared. Exit status 1 when a
compared run differs in any bit or in its NFE/NBE.

Run it with each checkout's own package on the path, then compare:

    PYTHONPATH=/path/to/old/checkout python scripts/sampling_fingerprint.py old.pt
    python scripts/sampling_fingerprint.py new.pt
    python scripts/sampling_fingerprint.py --compare old.pt new.pt

It uses only names that exist since 0.1, so it runs on older checkouts too (the step-size rule
is passed by its 0.1 keyword ``step_size`` where ``step_rule`` does not exist yet).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import torch

PROBLEMS = ("gauss64", "gauss32", "mnist")
RULES = ("dynamic", "constant", "residual", "norm-ratio", "arnoldi")


def problems(names: tuple[str, ...]) -> Iterator[tuple[str, Any, Any]]:
    """``(name, denoiser, constraint)`` of each named problem: a batch of 2 with the centre box (analytic) or top half missing."""
    import constrained_diffusion as cd
    from constrained_diffusion.default_model import centre_box_mask, default_denoiser

    if "gauss64" in names:
        g = cd.GaussianDenoiser.smooth((1, 8, 8), length_scale=2.0, jitter=1e-3, dtype=torch.float64)
        yield "gauss64", g, cd.Inpainting(g.sample_prior(2, torch.Generator().manual_seed(0)), centre_box_mask(g.sample_shape))
    if "gauss32" in names:
        g32 = default_denoiser()
        yield "gauss32", g32, cd.Inpainting(g32.sample_prior(2, torch.Generator().manual_seed(0)), centre_box_mask(g32.sample_shape))
    if "mnist" in names:
        model = cd.models.load("mnist-ddpm")
        digits, _ = cd.data.demo_digits()
        mask = torch.ones(1, 1, 32, 32)
        mask[..., :16, :] = 0
        yield "mnist", model, cd.Inpainting(digits[:2], mask)


def samplers(den: Any) -> Iterator[tuple[str, Any, Any]]:
    """``(name, sampler, recipe or None)``: every solver, every step-size rule with inexact Newton, every recipe."""
    import constrained_diffusion as cd
    from constrained_diffusion.solvers import registry

    rule_keyword = "step_rule" if "step_rule" in inspect.signature(cd.ConstrainedSampler).parameters else "step_size"
    for name in registry.names():
        yield f"solver:{name}", cd.ConstrainedSampler(den, name, steps=4, inner_steps=2), None
    for rule in RULES:
        yield f"rule:{rule}", cd.ConstrainedSampler(den, "inexact-newton", steps=3, inner_steps=2, **{rule_keyword: rule}), None
    for name in cd.recipes.names():
        recipe = cd.recipes.get(name)
        yield f"recipe:{name}", recipe.sampler(den, steps=4 if recipe.config.steps > 20 else 3), recipe


class _ToyCodec:
    """A nonlinear invertible pixel <-> latent map, for the latent constraint's precision-aware step."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.asinh(2 * x) / 2

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sinh(2 * z) / 2


def encoded_runs() -> dict[str, dict[str, Any]]:
    """The latent constraint's error and residual in float32, bfloat16 and float64."""
    import constrained_diffusion as cd
    from constrained_diffusion.default_model import centre_box_mask

    runs = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        z = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3)).to(dtype)
        truth = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
        c = cd.EncodedConstraint(cd.Inpainting(truth, centre_box_mask((1, 8, 8))), _ToyCodec())
        e, r = c.error_and_residual(z)
        runs[f"encoded/{dtype}"] = {"sample": e.float(), "residuals": r.float(), "nfe": 0, "nbe": 0}
    return runs


def capture(out: str, names: tuple[str, ...] = PROBLEMS) -> dict[str, dict[str, Any]]:
    """Sample every run of every problem in ``names`` and save the fingerprints to ``out`` (``torch.save``)."""
    warnings.simplefilter("ignore")  # deprecated spellings are the point on old checkouts
    torch.set_num_threads(1)
    runs: dict[str, dict[str, Any]] = {}
    for pname, den, con in problems(names):
        for rname, sampler, recipe in samplers(den):
            x_T = torch.randn((2, *den.sample_shape), generator=torch.Generator().manual_seed(1), dtype=den.dtype)
            gens = [torch.Generator().manual_seed(10 + i) for i in range(2)]
            c = recipe.constraint(con, den) if recipe is not None else con
            r = sampler.sample(c, x_T=x_T, generator=gens, progress=False)
            runs[f"{pname}/{rname}"] = {"sample": r.sample, "residuals": r.residuals, "nfe": r.nfe, "nbe": r.nbe}
    runs.update(encoded_runs())
    torch.save(runs, out)
    return runs


def compare(a: str, b: str) -> int:
    """Print one line per run in both files; 1 when any differs in a bit or in NFE/NBE, else 0."""
    A, B = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    only = sorted(set(A) ^ set(B))
    if only:
        print(f"{len(only)} runs in one file only (not compared): {', '.join(only)}")
    worst, differ = 0.0, 0
    common = [k for k in A if k in B]
    for k in common:
        x, y = A[k], B[k]
        d = max(float((x["sample"] - y["sample"]).abs().max()),
                float((x["residuals"] - y["residuals"]).abs().max()) if x["residuals"].numel() else 0.0)
        same = torch.equal(x["sample"], y["sample"]) and torch.equal(x["residuals"], y["residuals"]) and (x["nfe"], x["nbe"]) == (y["nfe"], y["nbe"])
        worst, differ = max(worst, d), differ + (not same)
        print(f"{k:40s} maxdiff={d:.3g} nfe {x['nfe']}/{y['nfe']} nbe {x['nbe']}/{y['nbe']}{'' if same else '  <-- DIFFERS'}")
    print(f"{len(common)} runs compared, {differ} differ; max |difference| over all samples and residuals: {worst}")
    return int(differ > 0)


def main(argv: list[str] | None = None) -> int:
    """``OUT.pt [--problems ...]`` captures; ``--compare A.pt B.pt`` compares."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="where to save this checkout's fingerprints (.pt)")
    parser.add_argument("--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS), help="which problems (default all)")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two saved files instead")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if args.out is None:
        parser.error("give OUT.pt, or --compare A.pt B.pt")
    runs = capture(args.out, tuple(args.problems))
    print(f"{len(runs)} runs saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
