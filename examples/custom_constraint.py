# %% [markdown]
# # Write your own constraint: a linear operator, then a nonlinear loss
#
# A constraint gives the sampler an error $e$ in $\hat x_0$-space and a residual. Two base
# classes cover almost everything:
#
# - `cd.LinearConstraint`: implement `forward(x)` $= A x$; the adjoint $A^\top v$ defaults to
#   autograd's vector-Jacobian product of `forward` (exact, since $A$ is linear), and the
#   error is $e = A^\top (y - A \hat x_0)$;
# - `cd.NonlinearConstraint`: implement `loss(x)` $\ge 0$ of shape `(B,)`; the error is
#   $e = -\nabla_x L(\hat x_0)$, a backward through the loss only, never through the network.
#
# Both are shown on the shipped MNIST DDPM: a **column-sum** operator (each column of the
# digit must have the truth's total ink, a projection the model never saw) and a **mean
# intensity** loss. Defaults: 2 digits, 5 steps, 2 inner steps; the full run is
#
# ```bash
# python examples/custom_constraint.py --digits 10 --steps 20 --inner-steps 5
# ```

# %%
from __future__ import annotations

import argparse

import torch
from _common import out_argument, parse, save_columns
from torch import Tensor

import constrained_diffusion as cd

parser = argparse.ArgumentParser(description="A user-written linear and nonlinear constraint on the MNIST DDPM.")
parser.add_argument("--digits", type=int, default=2, help="number of test digits, 1-10 (default 2)")
parser.add_argument("--steps", type=int, default=5, help="DDIM steps (default 5)")
parser.add_argument("--inner-steps", type=int, default=2, help="constraint steps per DDIM step (default 2)")
parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
out_argument(parser)
args = parse(parser)

# %% [markdown]
# ## A linear operator: column sums
#
# $A: (B, 1, 32, 32) \to (B, 1, 32)$, $(A x)_{w} = \sum_h x_{h w}$. Only `forward` is written;
# the adjoint comes from autograd. We check it against the identity
# $\langle A x, v\rangle = \langle x, A^\top v\rangle$ and against the closed form
# $A^\top v = v$ broadcast over the rows.

# %%
class ColumnSums(cd.LinearConstraint):
    """A x = the sum of each image column: (B, C, H, W) -> (B, C, W)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.sum(dim=-2)


model = cd.models.load("mnist-ddpm")
digits, _ = cd.data.demo_digits()
truth = digits[: args.digits]
columns_constraint = ColumnSums(truth.sum(dim=-2), input_shape=model.sample_shape)

x, v = torch.randn(3, 1, 32, 32, dtype=torch.float64), torch.randn(3, 1, 32, dtype=torch.float64)
lhs = (columns_constraint.forward(x) * v).sum()
rhs = (x * columns_constraint.adjoint(v)).sum()
closed_form = v.unsqueeze(-2).expand_as(x)
print(f"<Ax, v> = {lhs.item():.6f}, <x, A^T v> = {rhs.item():.6f}; "
      f"autograd adjoint == closed form: {torch.allclose(columns_constraint.adjoint(v), closed_form)}")

# %% [markdown]
# ## A nonlinear loss: mean intensity
#
# $L(x) = (\bar x - \mu)^2$ per sample, $\bar x$ the pixel mean: one number per digit, a
# global constraint. Losses are computed in `cd.linalg.upcast(x)` (float32 or wider) so that
# half-precision models keep their digits.

# %%
class MeanIntensity(cd.NonlinearConstraint):
    """The per-sample pixel mean must equal ``target`` (a ``(B,)`` tensor)."""

    def __init__(self, target: Tensor) -> None:
        self.target = target

    def loss(self, x: Tensor) -> Tensor:
        return (cd.linalg.upcast(x).mean(dim=(1, 2, 3)) - self.target.to(x.device)) ** 2


target = truth.mean(dim=(1, 2, 3)) + 0.15  # brighter (bolder) digits than the truth
mean_constraint = MeanIntensity(target)

# %% [markdown]
# ## Sampling with both, from the same noise
#
# The linear constraint uses the paper's schedule $\lambda_k$ from 0.5 to 0.1; the global loss
# a smaller one (every update has max-norm $\lambda_k$, however small the error is).

# %%
x_T = torch.randn(len(truth), *model.sample_shape, generator=torch.Generator().manual_seed(args.seed))
free = cd.ConstrainedSampler(model, steps=args.steps, inner_steps=0).sample(columns_constraint, x_T=x_T, progress=False)
fit_columns = cd.ConstrainedSampler(model, "inexact-newton", steps=args.steps, inner_steps=args.inner_steps).sample(
    columns_constraint, x_T=x_T, progress=False)
fit_mean = cd.ConstrainedSampler(model, "inexact-newton", steps=args.steps, inner_steps=args.inner_steps, step_scale=(0.1, 0.02)).sample(
    mean_constraint, x_T=x_T, progress=False)

free_mean = mean_constraint.loss(free.sample).sqrt()
print(f"column sums  ||y - A x||: unconstrained {free.final_residual.median().item():.2f}, "
      f"constrained {fit_columns.final_residual.median().item():.2f} (median over {len(truth)} digits)")
print(f"mean target  |mean - target|: unconstrained {free_mean.median().item():.3f}, "
      f"constrained {fit_mean.final_residual.sqrt().median().item():.3f}")

# %% [markdown]
# ## The figure
#
# The truth, the unconstrained sample, the sample whose column sums match the truth's (the
# digit's horizontal profile comes back) and the brighter sample of the mean-intensity loss.

# %%
path = save_columns(args.out / "custom_constraint.png",
                    {"truth": truth, "unconstrained": free.images, "column sums": fit_columns.images, "mean +0.15": fit_mean.images}, scale=3)
print(f"wrote {path}")
