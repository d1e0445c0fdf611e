# %% [markdown]
# # SD3 / Flux in bfloat16: the precision-aware finite difference
#
# The inexact-Newton direction is a forward difference,
# $J e \approx (\hat x_0(x_t + h' e) - \hat x_0(x_t)) / h'$ with $h' = h / \|e\|_\infty$. Its
# error has two parts: truncation $\sim h\,|D''|$ and rounding $\sim \varepsilon\,|\hat x_0| / h$,
# $\varepsilon$ the unit roundoff of the arithmetic (float32 $2^{-24}$, bfloat16 $2^{-8}$). The
# best $h$ grows like $\sqrt{\varepsilon}$: the paper's $h = 0.005$ is right in float32 and
# mostly measures rounding in bfloat16. `cd.InexactNewton()` (with `h=None`) therefore picks
# `cd.linalg.finite_difference.default_h(dtype)` from the model's dtype (Concepts: *Finite
# differences and precision*).
#
# This example loads an SD3 or Flux model in bfloat16 and compares, at a few times of the
# grid, the direction cosine $\cos(d_h, J e)$ of the finite difference with $h = 0.005$ and
# with the default step against the forward-mode JVP $J e$ of the same model
# (`cd.ExactJVP`'s kernel), then samples an inpainting with both steps.
#
# **Model.** `--model` is a local diffusers folder or a cached Hub id of an SD3 or Flux
# pipeline. **Without `--model` a tiny randomly initialised pipeline is built from a config**
# (`--family sd3` or `flux`; random weights, meaningless pictures, fixed random prompt
# embeddings); the numbers then describe that tiny network, not the real models.
#
# ```bash
# python examples/flow_bfloat16.py                        # tiny random SD3, bfloat16, CPU
# python examples/flow_bfloat16.py --family flux
# python examples/flow_bfloat16.py --model stabilityai/stable-diffusion-3-medium-diffusers --device cuda
# ```

# %%
from __future__ import annotations

import argparse
import sys

import torch
from _common import colour_digits, out_argument, parse, save_columns

import constrained_diffusion as cd
from constrained_diffusion.linalg.finite_difference import H_PAPER, default_h, fd_jvp, resolve_h
from constrained_diffusion.solvers.exact_jvp import forward_jvp

parser = argparse.ArgumentParser(description="SD3 / Flux in bfloat16: h = 0.005 against the precision-aware step.")
parser.add_argument("--model", default=None, help="SD3 or Flux diffusers folder or cached Hub id (default: a tiny random one)")
parser.add_argument("--family", choices=["sd3", "flux"], default="sd3", help="tiny pipeline without --model (default sd3)")
parser.add_argument("--prompt", default="", help="prompt for --model (default empty)")
parser.add_argument("--steps", type=int, default=6, help="sampling steps (default 6; full: 28)")
parser.add_argument("--inner-steps", type=int, default=2, help="inner steps (default 2; full: 5)")
parser.add_argument("--device", default="cpu", help="device (default cpu)")
parser.add_argument("--seed", type=int, default=0, help="seed (default 0)")
out_argument(parser)
args = parse(parser)
try:
    import diffusers  # noqa: F401
except ImportError:
    print("this example needs diffusers and transformers: pip install -e '.[diffusers]'")
    sys.exit(0)

# %% [markdown]
# ## The model in bfloat16

# %%
dtype = torch.bfloat16
if args.model is None:
    from constrained_diffusion.analysis.fd_precision import tiny_denoiser

    model = tiny_denoiser(args.family, dtype)
    print(f"NOTE: no --model given: using a TINY RANDOMLY INITIALISED {args.family.upper()} pipeline built from a config, "
          "in bfloat16; its images are meaningless.")
else:
    model = cd.models.load(args.model, device=args.device, dtype=dtype).condition(prompt=args.prompt)
print(f"{type(model).__name__}: latents {tuple(model.sample_shape)}, {model.dtype}")
print(f"default_h: float32 {default_h(torch.float32)}, bfloat16 {default_h(torch.bfloat16):.4f} (state scale 1)")

# %% [markdown]
# ## Direction cosines
#
# At three times of the grid, a random state $x_t$ and error $e$ (batch of 2): the worst
# cosine over the batch between the finite difference and the JVP.

# %%
g = torch.Generator().manual_seed(args.seed)
x = torch.randn(2, *model.sample_shape, generator=g).to(args.device, dtype)
e = torch.randn(2, *model.sample_shape, generator=g).to(args.device)
grid = model.grid(10)
auto_h = float(resolve_h(None, x, dtype).max())
print(f"{'time':>8} {'cos, h = 0.005':>16} {f'cos, h = {auto_h:.3f} (default)':>26}")
cosines = []
for i in (0, 4, 8):
    t = grid.times[i]
    _, jvp = forward_jvp(model, x, t, e)
    f = lambda z, t=t: model(z, t)  # noqa: E731
    row = [torch.nn.functional.cosine_similarity(fd_jvp(f, x, e, h, dtype=dtype).double().flatten(1),
                                                 jvp.double().flatten(1)).min().item() for h in (H_PAPER, None)]
    cosines.append(row)
    print(f"{float(t):>8.3f} {row[0]:>16.4f} {row[1]:>26.4f}")

# %% [markdown]
# ## Sampling an inpainting with both steps
#
# Latent inpainting (`cd.latent_inpainting`: the masked image encoded, the mask pooled to the
# latent grid), left half known, from the same noise.

# %%
size = model.sample_shape[-1] * model.codec.factor
image = colour_digits(1, size).to(args.device)
mask = torch.ones(1, 1, size, size, device=args.device)
mask[..., size // 2:] = 0
constraint = cd.latent_inpainting(model, image, mask)
x_T = torch.randn(1, *model.sample_shape, generator=torch.Generator().manual_seed(args.seed)).to(args.device, dtype)
runs = {"unconstrained": cd.ConstrainedSampler(model, steps=args.steps, inner_steps=0)}
for label, h in (("h = 0.005", H_PAPER), ("default h", None)):
    runs[label] = cd.ConstrainedSampler(model, cd.InexactNewton(h=h), steps=args.steps, inner_steps=args.inner_steps)
results = {name: s.sample(constraint, x_T=x_T, progress=False) for name, s in runs.items()}
for name, r in results.items():
    print(f"{name:<14} latent residual {r.final_residual.item():.4f}  NFE {r.nfe}")

# %% [markdown]
# ## The figure

# %%
columns = {"truth": image, "observed": image * mask - (1 - mask), **{name: r.images.float() for name, r in results.items()}}
path = save_columns(args.out / "flow_bfloat16.png", columns, scale=max(1, 96 // size))
print(f"wrote {path}")
