# %% [markdown]
# # Style guidance with the CLIP plugin, and a composite constraint (inpainting + style)
#
# The `clip-style` plugin (`pip install -e plugins/clip-style`) adds `cd_clip_style.CLIPStyle`,
# a nonlinear constraint: $L(x) = \|G(x) - G(x_\text{ref})\|_F$ with $G = F^\top F / N$ the
# Gram matrix of the $N$ patch tokens $F$ of a CLIP vision transformer block (block 3, as in
# the paper). Its error $e = -\nabla_x L(\hat x_0)$ is a backward through CLIP only, never
# through the diffusion network.
#
# Constraints add up: `cd.Inpainting(y, m) + style * w` is a `cd.Composite` whose error is
# $e_1 + w\, e_2$ and whose residual is the weighted sum of the residuals. Here, on the
# shipped MNIST DDPM: fill in the top half of test digits *and* pull them toward the style of
# a reference digit.
#
# **CLIP.** `--clip` is a local folder or a cached Hub id of a CLIP model (e.g.
# `--clip openai/clip-vit-base-patch16`). **Without `--clip` a tiny randomly initialised CLIP
# vision tower is built from a config** (4 blocks of width 32): it runs the same code, but its
# "style" is that of random features, so the pictures show the mechanics, not a real style.
#
# ```bash
# python examples/clip_style.py                                              # tiny random CLIP
# python examples/clip_style.py --clip openai/clip-vit-base-patch16 --digits 10 --steps 20 --inner-steps 5
# ```

# %%
from __future__ import annotations

import argparse

import torch
from _common import out_argument, parse, save_columns
from cd_clip_style import CLIPStyle
from torch import Tensor

import constrained_diffusion as cd

parser = argparse.ArgumentParser(description="CLIP style guidance and inpainting + style on the MNIST DDPM.")
parser.add_argument("--clip", default=None, help="CLIP folder or cached Hub id (default: a tiny random vision tower)")
parser.add_argument("--digits", type=int, default=2, help="number of test digits, 1-9 (default 2)")
parser.add_argument("--steps", type=int, default=5, help="DDIM steps (default 5)")
parser.add_argument("--inner-steps", type=int, default=2, help="constraint steps per DDIM step (default 2)")
parser.add_argument("--weight", type=float, default=0.5, help="weight of the style term in the composite (default 0.5)")
parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
out_argument(parser)
args = parse(parser)

# %% [markdown]
# ## CLIP and the style reference
#
# The reference is the demo set's "8", repeated to RGB; CLIP sees `(B, 3, H, W)` in $[-1, 1]$.

# %%
if args.clip is None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4,
                                            image_size=32, patch_size=8))
    print("NOTE: no --clip given: using a TINY RANDOMLY INITIALISED CLIP vision tower (its 'style' is meaningless).")
else:
    clip = args.clip
digits, labels = cd.data.demo_digits()
reference = digits[labels == 8][:1].expand(-1, 3, -1, -1)
style_rgb = CLIPStyle(reference, clip=clip, layer=3)


class GreyStyle(cd.NonlinearConstraint):
    """The CLIP style loss of a grey ``(B, 1, H, W)`` sample, repeated to RGB."""

    def __init__(self, style: CLIPStyle) -> None:
        self.style = style

    def loss(self, x: Tensor) -> Tensor:
        return self.style.loss(x.expand(-1, 3, -1, -1))


style = GreyStyle(style_rgb)

# %% [markdown]
# ## Style alone, and inpainting + style
#
# The composite's first term is the inpainting constraint of the known bottom half.

# %%
model = cd.models.load("mnist-ddpm")
keep = labels != 8
truth = digits[keep][: args.digits]
mask = torch.ones_like(truth)
mask[..., :16, :] = 0
inpainting = cd.Inpainting(truth, mask)
composite = inpainting + style * args.weight
print(f"composite: {type(composite).__name__}, terms {[type(c).__name__ for c in composite.constraints]}, weights {composite.weights}")

x_T = torch.randn(len(truth), *model.sample_shape, generator=torch.Generator().manual_seed(args.seed))
K = args.inner_steps
free = cd.ConstrainedSampler(model, steps=args.steps, inner_steps=0).sample(inpainting, x_T=x_T, progress=False)
styled = cd.ConstrainedSampler(model, "inexact-newton", steps=args.steps, inner_steps=K, step_scale=(0.2, 0.05)).sample(
    style, x_T=x_T, progress=False)
both = cd.ConstrainedSampler(model, "inexact-newton", steps=args.steps, inner_steps=K).sample(composite, x_T=x_T, progress=False)

for name, r in {"unconstrained": free, "style only": styled, "inpainting + style": both}.items():
    s = style.loss(r.sample).median().item()
    i = inpainting.residual(r.sample).median().item()
    print(f"{name:<20} style loss {s:.4f}   inpainting residual {i:.3f}   NFE {r.nfe}  NBE {r.nbe}")

# %% [markdown]
# ## The figure

# %%
columns = {"truth": truth, "observed": truth * mask - (1 - mask), "style ref": reference[:, :1].expand(len(truth), -1, -1, -1),
           "unconstrained": free.images, "style only": styled.images, "inpaint + style": both.images}
path = save_columns(args.out / "clip_style.png", columns, scale=3)
print(f"wrote {path}")
