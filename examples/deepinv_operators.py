# %% [markdown]
# # deepinv's operators as constraints: deblurring and super-resolving MNIST digits
#
# [deepinv](https://deepinv.github.io) ships the imaging forward operators; the `deepinv`
# plugin (`pip install -e plugins/deepinv`) turns any of them into a constraint of this
# library: `cd_deepinv.PhysicsConstraint(physics, y)`. A `LinearPhysics` becomes a
# `cd.LinearConstraint` whose forward is `physics.A` and whose adjoint is `physics.A_adjoint`,
# so the inexact-Newton sampler fits `A x̂0 = y` with one extra denoiser forward per inner step.
#
# Here: a few test digits (bundled with the library, in `[-1, 1]`) are blurred with a Gaussian
# of σ = 1.5 px (`BlurFFT`) and downsampled ×4 with a bicubic anti-aliasing filter
# (`Downsampling`); the shipped MNIST DDPM restores them, and the figure shows
# observation | result | truth. Nothing is downloaded.
#
# ```bash
# python examples/deepinv_operators.py                          # figure in examples/output/
# python examples/deepinv_operators.py --write-docs docs/plugins.md --block DEEPINV-EXAMPLE
# ```

# %%
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import deepinv
import torch
from cd_deepinv import PhysicsConstraint, observe

import constrained_diffusion as cd
from constrained_diffusion.metrics import psnr

parser = argparse.ArgumentParser(description="Deblur and super-resolve MNIST test digits through deepinv's operators.")
parser.add_argument("--digits", type=int, default=4, help="number of test digits (default 4)")
parser.add_argument("--steps", type=int, default=20, help="DDIM steps (default 20)")
parser.add_argument("--inner-steps", type=int, default=5, help="inexact-Newton inner steps per DDIM step (default 5)")
parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
parser.add_argument("--out", type=Path, default=Path("examples/output"), help="folder for the figure (default examples/output)")
parser.add_argument("--write-docs", type=Path, default=None, help="write the results table into this markdown page")
parser.add_argument("--block", default="DEEPINV-EXAMPLE", help="name of the <!-- NAME:START --> block (default DEEPINV-EXAMPLE)")
args, _ = parser.parse_known_args()  # parse_known_args: the cells also run in a notebook kernel
torch.manual_seed(args.seed)

# %% [markdown]
# ## The model, the digits and two deepinv operators
#
# The digits come from `cd.data.mnist("held-out")` (50 per class); one of every class in turn.
# `observe(physics, x)` is the noiseless measurement `physics.A(x)` of the digits in the
# library's `[-1, 1]` range (the default `physics_range="[-1,1]"`; deepinv's own `[0, 1]`
# convention is `physics_range="[0,1]"`, the same constraint for a linear operator).

# %%
model = cd.models.load("mnist-ddpm")
images, labels = cd.data.mnist("held-out")
index = torch.cat([(labels == k).nonzero()[0] for k in range(10)])[: args.digits]
truth = images[index]

operators = {
    "deblur (Gaussian σ=1.5 px)": deepinv.physics.BlurFFT(
        img_size=(1, 32, 32), filter=deepinv.physics.functional.gaussian_blur(sigma=(1.5, 1.5))),
    "×4 super-resolution (bicubic)": deepinv.physics.Downsampling(img_size=(1, 32, 32), factor=4, filter="bicubic"),
}

# %% [markdown]
# ## Sampling: unconstrained and constrained from the same noise
#
# The residual `‖y − A x‖` of the constrained sample is compared with that of an
# unconstrained sample drawn from the same initial noise; the table gives the median and
# [min, max] over the digits, and the seconds of both runs together.

# %%
x_T = torch.randn(len(truth), *model.sample_shape, generator=torch.Generator().manual_seed(args.seed))
rows, results = [], {}
for task, physics in operators.items():
    constraint = PhysicsConstraint(physics, observe(physics, truth))
    start = time.perf_counter()
    free = cd.ConstrainedSampler(model, steps=args.steps, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    fit = cd.ConstrainedSampler(model, "inexact-newton", steps=args.steps, inner_steps=args.inner_steps).sample(
        constraint, x_T=x_T, progress=False)
    seconds = time.perf_counter() - start
    results[task] = (constraint, fit.sample)
    cut = free.final_residual / fit.final_residual
    rows.append((task, free.final_residual, fit.final_residual, cut, psnr(free.sample, truth), psnr(fit.sample, truth), fit.nfe, seconds))


def spread(v: torch.Tensor, digits: int) -> str:
    """``median [min, max]`` over the digits (torch's median: the lower middle value for an even count)."""
    return f"{v.median().item():.{digits}f} [{v.min().item():.{digits}f}, {v.max().item():.{digits}f}]"


header = ("| task | residual ‖y − A x‖, unconstrained | residual, constrained | cut (unconstrained / constrained) | "
          "PSNR dB, unconstrained | PSNR dB, constrained | NFE (batched calls) | seconds |")
table = [header, "|" + "---|" * 8]
for task, r_free, r_fit, cut, p_free, p_fit, nfe, sec in rows:
    table.append(f"| {task} | {spread(r_free, 2)} | {spread(r_fit, 3)} | {spread(cut, 0)}× | {spread(p_free, 1)} | "
                 f"{spread(p_fit, 1)} | {nfe} | {sec:.1f} |")
print("\n".join(table))

# %% [markdown]
# ## The figure: observation | result | truth
#
# The ×4 observation is 8 × 8; it is shown upsampled (nearest) to the digit's size.

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

n, k = len(truth), len(results)
fig, axes = plt.subplots(n, 3 * k, figsize=(1.5 * 3 * k, 1.5 * n + 0.4), squeeze=False)
for t, (task, (constraint, sample)) in enumerate(results.items()):
    observation = constraint.y_physics
    if observation.shape[-1] != truth.shape[-1]:
        observation = torch.nn.functional.interpolate(observation, size=truth.shape[-2:], mode="nearest")
    for i in range(n):
        for j, (image, title) in enumerate([(observation[i], "observation"), (sample[i], "result"), (truth[i], "truth")]):
            ax = axes[i, 3 * t + j]
            ax.imshow(image[0].clamp(-1, 1).numpy(), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(f"{task}\n{title}" if j == 1 else f"\n{title}", fontsize=7)
fig.tight_layout()
args.out.mkdir(parents=True, exist_ok=True)
figure = args.out / "deepinv_operators.png"
fig.savefig(figure, dpi=120)
print(f"wrote {figure}")

# %% [markdown]
# ## Writing the table into the docs
#
# With `--write-docs PAGE` the table above replaces the page's `DEEPINV-EXAMPLE` block,
# preceded by the command that produced it.

# %%
if args.write_docs is not None:
    from constrained_diffusion.cli.args import write_block

    options = [f"--digits {args.digits}" if args.digits != 4 else "", f"--steps {args.steps}" if args.steps != 20 else "",
               f"--inner-steps {args.inner_steps}" if args.inner_steps != 5 else "", f"--seed {args.seed}" if args.seed else ""]
    command = " ".join(["python examples/deepinv_operators.py", *filter(None, options),
                        "--write-docs", shlex.quote(str(args.write_docs)), "--block", args.block])
    note = (f"{len(truth)} test digits (one per class), {args.steps} DDIM steps, {args.inner_steps} inner steps; "
            f"seconds on a 2-core CPU shared with other jobs, torch {torch.__version__}, deepinv {deepinv.__version__}.")
    write_block(args.write_docs, args.block, f"Produced by `{command}`\n\n{note}\n\n" + "\n".join(table))
    sys.stdout.flush()
