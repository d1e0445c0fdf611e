# %% [markdown]
# # Write your own solver and correction rule, and compare them with the built-ins
#
# A **solver** maps the error $e$ (in $\hat x_0$-space) to a direction $d$ in $x_t$-space; a
# **correction** decides what one denoising step does with it. Neither needs registering to
# be used: `cd.ConstrainedSampler(model, MySolver(), correction=MyCorrection())` takes the
# instances as given (registration only makes a name usable from configuration files and the
# CLI; see CONTRIBUTING.md).
#
# Here, on the shipped MNIST DDPM inpainting the top half of test digits:
#
# - `CentralDifference`: $J e \approx (D(x_t + h' e) - D(x_t - h' e)) / (2 h')$ with
#   $h' = h / \|e\|_\infty$, second-order accurate where the paper's forward difference is
#   first-order, at the price of two extra forwards per inner step instead of one;
# - `ExtrapolatedLoop`: the paper's inner loop written out, then one extra "free" step
#   $x_0 \leftarrow x_0 + \gamma\, e(x_0)$ on the clean estimate before the DDIM update (no
#   network call).
#
# Defaults: 2 digits, 5 steps, 2 inner steps. The full run:
#
# ```bash
# python examples/custom_solver.py --digits 10 --steps 20 --inner-steps 5
# ```

# %%
from __future__ import annotations

import argparse
from typing import ClassVar, Literal

import torch
from _common import out_argument, parse, save_columns
from pydantic import BaseModel, Field
from torch import Tensor

import constrained_diffusion as cd
from constrained_diffusion.sampling import CorrectionConfig, CorrectionResult
from constrained_diffusion.sampling.corrections.base import step_sizes

parser = argparse.ArgumentParser(description="A user-written solver and correction against the built-in ones.")
parser.add_argument("--digits", type=int, default=2, help="number of test digits, 1-10 (default 2)")
parser.add_argument("--steps", type=int, default=5, help="DDIM steps (default 5)")
parser.add_argument("--inner-steps", type=int, default=2, help="constraint steps per DDIM step (default 2)")
parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
out_argument(parser)
args = parse(parser)

# %% [markdown]
# ## A solver: the central difference
#
# Options live in a pydantic `Config` (validated once; `CentralDifference(h=-1)` raises a
# clear error naming `h`). `direction_kind = "jvp"` tells step-size rules that $d \approx J e$.

# %%
class CentralDifferenceConfig(cd.SolverConfig):
    """Options of `CentralDifference`."""

    name: Literal["central-difference"] = "central-difference"
    h: float = Field(0.005, gt=0, description="max-norm of the perturbation h' e")


class CentralDifference(cd.Solver):
    """``d = (D(x_t + h' e) - D(x_t - h' e)) / (2 h')``, ``h' = h / ||e||_inf`` per sample; 1 batched forward."""

    name = "central-difference"
    direction_kind = "jvp"
    Config = CentralDifferenceConfig

    def direction(self, denoiser: cd.Denoiser, x_t: Tensor, t: Tensor, e: Tensor, x0: Tensor) -> Tensor:
        scale = e.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, *[1] * (e.ndim - 1))
        h = self.h / scale
        step = (h * e).to(x_t.dtype)
        both = denoiser(torch.cat([x_t + step, x_t - step]), t)  # one batched call: counts one NFE
        plus, minus = both.chunk(2)
        return ((plus - minus).to(e.dtype) / (2 * h)).where(scale > 1e-12, torch.zeros_like(e))


try:
    CentralDifference(h=-1.0)
except ValueError as error:
    print("bad option:", str(error).splitlines()[0])

# %% [markdown]
# ## A correction: the inner loop plus a free step on $\hat x_0$
#
# $K$ solver steps on $x_t$ as in the paper, $x_t \leftarrow x_t + \lambda_k d / \|d\|_\infty$
# with $\lambda_k$ from `step_scale` and $\hat x_0$ re-evaluated after each; then the clean estimate
# is edited once along the error, $\hat x_0 \leftarrow \hat x_0 + \gamma\, e(\hat x_0)$ (as
# MPGD does, no network call), and the DDIM update uses the edited $\hat x_0$ with the
# unedited noise estimate. Residual rows: before each inner step, after the loop, after the edit.

# %%
class ExtrapolatedLoopConfig(CorrectionConfig):
    """Options of `ExtrapolatedLoop`."""

    inner_steps: int = Field(3, ge=0)
    step_scale: float | tuple[float, float] = (0.5, 0.1)
    gamma: float = Field(0.5, ge=0, le=1, description="fraction of the error added to x0 after the loop")


class ExtrapolatedLoop(cd.sampling.Correction):
    """``K`` solver steps on ``x_t``, then ``x0 <- x0 + gamma e(x0)`` and the update with the loop's noise estimate."""

    Config: ClassVar[type[BaseModel]] = ExtrapolatedLoopConfig
    step_scale: float | tuple[float, float]
    gamma: float

    @property
    def residual_rows(self) -> int:
        return self.inner_steps + 2

    def apply(self, step, x_t: Tensor) -> CorrectionResult:  # noqa: ANN001 - a DenoisingStep
        x_t, x0 = step.evaluate(x_t)
        rows = []
        for lam in step_sizes(self.step_scale, self.inner_steps):
            e, residual = step.constraint.error_and_residual(x0.detach())
            rows.append(residual.detach().float())
            d = step.direction(x_t, e.detach(), x0)
            norm = d.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, *[1] * (d.ndim - 1))
            x_t, x0 = step.evaluate((x_t + lam * d / norm).detach())
        alpha, sigma = step.now
        eps = (x_t - alpha * x0) / sigma
        e, residual = step.constraint.error_and_residual(x0.detach())
        rows.append(residual.detach().float())
        x0 = (x0 + self.gamma * e).detach()
        rows.append(step.constraint.residual(x0).detach().float())
        return CorrectionResult(step.update(x_t, x0, eps=eps), x0, torch.stack(rows))


# %% [markdown]
# ## The comparison
#
# Same digits, same noise, same schedule; the residual of the known pixels (median and
# [min, max] over the digits), forwards and backwards.

# %%
model = cd.models.load("mnist-ddpm")
digits, _ = cd.data.demo_digits()
truth = digits[: args.digits]
mask = torch.ones_like(truth)
mask[..., :16, :] = 0
constraint = cd.Inpainting(truth, mask)
x_T = torch.randn(len(truth), *model.sample_shape, generator=torch.Generator().manual_seed(args.seed))
K = args.inner_steps
samplers = {
    "inexact-newton": cd.ConstrainedSampler(model, cd.InexactNewton(), steps=args.steps, inner_steps=K),
    "central-difference": cd.ConstrainedSampler(model, CentralDifference(), steps=args.steps, inner_steps=K),
    "extrapolated loop": cd.ConstrainedSampler(model, cd.InexactNewton(), steps=args.steps,
                                               correction=ExtrapolatedLoop(inner_steps=K, gamma=0.5)),
}
results = {name: s.sample(constraint, x_T=x_T, progress=False) for name, s in samplers.items()}
print(f"{'method':<20} {'residual median [min, max]':>30} {'NFE':>5} {'NBE':>5}")
for name, r in results.items():
    res = r.final_residual
    print(f"{name:<20} {res.median().item():>12.4f} [{res.min().item():.4f}, {res.max().item():.4f}] {r.nfe:>5} {r.nbe:>5}")

# %% [markdown]
# ## The figure

# %%
columns = {"truth": truth, "observed": truth * mask - (1 - mask), **{name: r.images for name, r in results.items()}}
path = save_columns(args.out / "custom_solver.png", columns, scale=3)
print(f"wrote {path}")
