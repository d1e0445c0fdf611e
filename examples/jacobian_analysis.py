# %% [markdown]
# # The denoiser's Jacobian: J e against J⁻¹ e, and its spectra
#
# The inner loop wants the Newton direction $J^{-1} e$ with $J = \partial \hat x_0 / \partial x_t$,
# and takes $J e$ (inexact Newton) or $J^\top e$ (gradient descent) instead. On the shipped
# MNIST DDPM the whole $1024 \times 1024$ Jacobian fits in memory, so the three directions can
# be compared exactly for a single-pixel error $e$; and the largest eigenvalues of $J$, of its
# symmetric part $(J + J^\top)/2$ and of its antisymmetric part $(J - J^\top)/2$ can be
# estimated matrix-free by Arnoldi iterations on finite-difference products, as
# `constrained-diffusion analyze spectra` does for any model.
#
# Defaults are small (one time for the directions, two times and 10 Arnoldi steps for the
# spectra); the analysis page's run is
#
# ```bash
# python examples/jacobian_analysis.py --times 900 700 500 300 --iterations 30
# ```
#
# It writes `jacobian_analysis_directions.png` (top: $e$, $Je$, $J^{+}e$, $J^\top e$, each scaled to
# max 1; bottom: $\hat x_0$ before and after one step of max-norm 0.5 along each) and
# `jacobian_analysis_spectra.png` to `--out`.

# %%
from __future__ import annotations

import argparse

import torch
from _common import out_argument, parse

import constrained_diffusion as cd
from constrained_diffusion.analysis.directions import directions_grid, pixel_directions
from constrained_diffusion.analysis.spectra import Spectra, spectra_figure, spectra_table
from constrained_diffusion.cli.demo import label_columns
from constrained_diffusion.utils.images import save_png, to_uint8

parser = argparse.ArgumentParser(description="J e, J^+ e and J^T e for a one-pixel error, and the spectra of J, on the MNIST DDPM.")
parser.add_argument("--digit", type=int, default=3, help="which of the ten shipped test digits, 0-9 (default 3)")
parser.add_argument("--t", type=int, default=500, help="time of the direction comparison, 0-999 (default 500)")
parser.add_argument("--pixel", type=int, nargs=2, default=(16, 16), metavar=("ROW", "COL"), help="the error's pixel (default 16 16)")
parser.add_argument("--times", type=int, nargs="+", default=[700, 300], help="times of the spectra (default 700 300)")
parser.add_argument("--iterations", type=int, default=10, help="Arnoldi steps per operator (default 10)")
out_argument(parser)
args = parse(parser)
if not 0 <= args.digit <= 9:
    parser.error(f"--digit must be 0-9, got {args.digit}")

# %% [markdown]
# ## Three directions for one pixel
#
# `pixel_directions` noises the digit to time $t$, forms the dense $J$ (one forward-mode
# product per pixel), and compares $Je$, the pseudo-inverse Newton direction $J^{+}e$ and
# $J^\top e$. Their cosines say how far the cheap directions are from Newton's; the step along
# each shows what it does to $\hat x_0$ at the pixel and around it.

# %%
model = cd.models.load("mnist-ddpm")
digits, labels = cd.data.demo_digits()
x0 = digits[args.digit: args.digit + 1]
result = pixel_directions(model, x0, args.t, tuple(args.pixel))
newton = result.directions["J+e"]
row, col = args.pixel
where = row * model.sample_shape[-1] + col
print(f"digit {int(labels[args.digit])}, t = {args.t}, error at pixel {tuple(args.pixel)}")
print("direction | cosine with J+e | change of x0_hat at the pixel after the step")
for name, d in result.directions.items():
    cosine = float(torch.nn.functional.cosine_similarity(d, newton, dim=0))
    change = float(result.x0_after[name].flatten()[where] - result.x0_before.flatten()[where])
    print(f"{name:>9} | {cosine:15.3f} | {change:+.3f}")
grid = directions_grid(result, model.sample_shape)  # 4 columns of 4 x 32 pixels
labelled = label_columns(to_uint8(grid), ["e (top) / x0 before", "J e", "J+ e (Newton)", "JT e"], cell_width=4 * 32)
path = save_png(args.out / "jacobian_analysis_directions.png", labelled)
print(f"wrote {path}")

# %% [markdown]
# ## The spectra, matrix-free
#
# `Spectra` runs one Arnoldi iteration per operator and time, with finite-difference
# products $Jv \approx (\hat x_0(x_t + h v) - \hat x_0(x_t)) / h$ and backpropagated $J^\top v$.
# The same class runs on a Stable Diffusion folder or Hub id
# (`constrained-diffusion analyze spectra --model PATH`); `dense=True` also computes the exact
# eigenvalues from the dense Jacobian, which is affordable only for small models like this one.

# %%
spectra = Spectra(times=args.times, iterations=[args.iterations])
records = spectra.run(model, x0, model_name="mnist-ddpm", state_name=f"demo digit {args.digit}")
print(spectra_table(records))
path = spectra_figure(records, args.out / "jacobian_analysis_spectra.png", title="MNIST DDPM")
print(f"wrote {path}")
