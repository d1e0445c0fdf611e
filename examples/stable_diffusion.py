# %% [markdown]
# # Stable Diffusion: the paper's inpainting and ×8 super-resolution recipes
#
# The recipes `paper-inpainting` and `paper-sr8` reproduce the reference notebooks of
# Graikos et al. (NeurIPS 2025) on any `cd.StableDiffusionDenoiser`
# (docs: *Reproducing the paper*):
#
# - `paper-inpainting`: the error lives in latent space, $e = m \odot (E(y \odot m) - \hat z_0)$
#   with $m$ the 8×8-pooled mask; $K = 5$ inner steps, $\lambda$ from 0.5 to 0.1;
# - `paper-sr8`: $e = -\nabla_z \|y - A D(\hat z_0)\|$ through the VAE decoder only (never the
#   UNet), $A$ the ×8 box downsampling; $K = 10$, $\lambda = 0.1$.
#
# Both take 20 steps on the trailing grid with the one-step posterior noise, and output the
# last $\hat x_0$.
#
# **Model.** `--model` is a local diffusers folder or a Hub id already in the local cache
# (e.g. `--model stabilityai/stable-diffusion-2-1-base`; nothing is downloaded where there is
# no network). **Without `--model` a tiny randomly initialised pipeline is built on the fly**
# (16×16 latents, 32×32 pixels, random weights): it runs the very same code path
# (`save_pretrained` then `from_pretrained`), but its pictures are meaningless; the numbers only
# show that the constraint is enforced. The test images are the package's demo digits,
# tinted (or `--image PATH`, with Pillow).
#
# ```bash
# python examples/stable_diffusion.py                                   # tiny random pipeline, 4 steps, K = 2
# python examples/stable_diffusion.py --model stabilityai/stable-diffusion-2-1-base \
#     --image photo.png --steps 20 --inner-steps 0 --device cuda --dtype float16   # the paper's setting
# ```

# %%
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import colour_digits, out_argument, parse, save_columns, tiny_stable_diffusion

import constrained_diffusion as cd

parser = argparse.ArgumentParser(description="Stable Diffusion inpainting and x8 super-resolution with the paper's recipes.")
parser.add_argument("--model", default=None, help="diffusers folder or cached Hub id (default: a tiny random pipeline)")
parser.add_argument("--image", type=Path, default=None, help="an RGB image file (default: tinted demo digits)")
parser.add_argument("--images", type=int, default=2, help="number of demo images when no --image is given (default 2)")
parser.add_argument("--prompt", default="", help="prompt (default empty, as in the paper)")
parser.add_argument("--steps", type=int, default=4, help="denoising steps (default 4; the paper: 20)")
parser.add_argument("--inner-steps", type=int, default=2,
                    help="inner steps (default 2; 0 = the recipe's own: 5 for inpainting, 10 for x8 SR, as in the paper)")
parser.add_argument("--device", default="cpu", help="device (default cpu)")
parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="model dtype (default float32)")
parser.add_argument("--seed", type=int, default=0, help="seed of the noise (default 0)")
out_argument(parser)
args = parse(parser)
try:
    import diffusers  # noqa: F401
except ImportError:
    print("this example needs diffusers and transformers: pip install -e '.[diffusers]'")
    sys.exit(0)

# %% [markdown]
# ## The model

# %%
dtype = getattr(torch, args.dtype)
if args.model is None:
    folder = Path(tempfile.mkdtemp(prefix="tiny-sd-"))
    tiny_stable_diffusion(folder)
    print("NOTE: no --model given: using a TINY RANDOMLY INITIALISED Stable Diffusion pipeline built on the fly "
          f"({folder}); its images are meaningless, the residuals show the constraint at work.")
    model_path = str(folder)
else:
    model_path = args.model
model = cd.StableDiffusionDenoiser.from_pretrained(model_path, torch_dtype=dtype, device=args.device)
size = model.sample_shape[-1] * model.codec.factor
print(f"model: {model_path}, latents {tuple(model.sample_shape)}, pixels {size}x{size}, {args.dtype} on {args.device}")

# %% [markdown]
# ## The images
#
# `(N, 3, S, S)` in $[-1, 1]$ at the model's pixel size $S$.

# %%
if args.image is not None:
    import numpy as np
    from PIL import Image

    picture = Image.open(args.image).convert("RGB").resize((size, size), Image.BICUBIC)
    images = torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
else:
    images = colour_digits(args.images, size)
images = images.to(args.device)
x_T = torch.randn(len(images), *model.sample_shape, generator=torch.Generator().manual_seed(args.seed)).to(args.device, dtype)

# %% [markdown]
# ## Inpainting with `paper-inpainting`
#
# The right half is missing. `recipe.condition` binds the prompt at the recipe's guidance
# scale, `recipe.sampler` runs on a copy of the model with the trailing grid, and
# `recipe.constraint` turns the pixel-space `cd.Inpainting` into the latent one.

# %%
mask = torch.ones(len(images), 1, size, size, device=args.device)
mask[..., size // 2:] = 0
inner = {"inner_steps": args.inner_steps} if args.inner_steps > 0 else {}
recipe = cd.recipes.get("paper-inpainting", steps=args.steps, **inner)
conditioned = recipe.condition(model, prompt=args.prompt)
sampler = recipe.sampler(conditioned)
constraint = recipe.constraint(cd.Inpainting(images, mask), conditioned)
free = cd.ConstrainedSampler(sampler.denoiser, steps=args.steps, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
inpainted = sampler.sample(constraint, x_T=x_T, progress=False)


def known_error(x: torch.Tensor) -> torch.Tensor:
    """RMS error on the known pixels, per image."""
    return ((x.float().clamp(-1, 1) - images) ** 2 * mask).sum(dim=(1, 2, 3)).div(3 * mask.sum(dim=(1, 2, 3))).sqrt()


print(f"paper-inpainting: RMS error on the known pixels, unconstrained {known_error(free.images).median().item():.3f}, "
      f"constrained {known_error(inpainted.images).median().item():.3f} (median over {len(images)} images); "
      f"NFE {inpainted.nfe}, NBE {inpainted.nbe}, {inpainted.seconds:.1f} s")

# %% [markdown]
# ## ×8 super-resolution with `paper-sr8`
#
# The observation is the ×8 box-downsampled image, $y = A x$ (an $S/8 \times S/8$ image).

# %%
y = F.avg_pool2d(images, 8)
recipe = cd.recipes.get("paper-sr8", steps=args.steps, **inner)
conditioned = recipe.condition(model, prompt=args.prompt)
sampler = recipe.sampler(conditioned)
constraint = recipe.constraint(cd.SuperResolution(y, 8, kernel="box"), conditioned)
upscaled = sampler.sample(constraint, x_T=x_T, progress=False)


def low_res_error(x: torch.Tensor) -> torch.Tensor:
    """RMS of y - A x per image."""
    return (F.avg_pool2d(x.float().clamp(-1, 1), 8) - y).flatten(1).pow(2).mean(dim=1).sqrt()


print(f"paper-sr8: RMS of y - A x, unconstrained {low_res_error(free.images).median().item():.3f}, "
      f"constrained {low_res_error(upscaled.images).median().item():.3f}; NFE {upscaled.nfe}, NBE {upscaled.nbe} "
      f"(backwards through the VAE decoder only), {upscaled.seconds:.1f} s")

# %% [markdown]
# ## The figure

# %%
columns = {"truth": images, "observed (inpaint)": images * mask - (1 - mask), "inpainted": inpainted.images,
           "observed (x8)": F.interpolate(y, scale_factor=8, mode="nearest"), "super-resolved": upscaled.images,
           "unconstrained": free.images}
scale = max(1, 96 // size)
path = save_columns(args.out / "stable_diffusion.png", columns, scale=scale)
print(f"wrote {path}")
if args.model is None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)  # the tiny pipeline's temporary folder
