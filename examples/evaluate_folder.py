# %% [markdown]
# # Evaluate methods on a folder of images
#
# A researcher's table — method × metric on an image set, with cost — is one call of the
# evaluation harness, `constrained-diffusion evaluate` on the command line or
# `cd.evaluation.Evaluation` in Python. Here the image set is a folder of PNG files
# written from the ten test digits that ship with the package (any folder of PNG/JPEG/WebP
# images works: they are centre-cropped and resized to the model's resolution), the model is
# the shipped MNIST DDPM, the task is box inpainting, and two methods share each image's
# observation and initial noise.
#
# Defaults are small (3 images, 5 steps); the same run from the command line, at full size:
#
# ```bash
# constrained-diffusion evaluate --model mnist-ddpm --data DIGITS_FOLDER --task box \
#     --method inexact-newton --method dps --steps 20 --out runs/eval-folder
# ```
#
# It writes the digit folder and the harness's run under `--work` (`records.jsonl` — one JSON
# object per image and method, appended as each batch finishes, so a rerun resumes —,
# `images/`, `summary.md`, `grid.png`, `pareto.svg`), and a copy of the grid as
# `evaluate_folder.png` to `--out`.

# %%
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from _common import out_argument, parse

import constrained_diffusion as cd
from constrained_diffusion.evaluation.harness import Evaluation
from constrained_diffusion.utils.images import save_png, to_uint8

parser = argparse.ArgumentParser(description="Evaluate two methods on a folder of digit images with the evaluation harness.")
parser.add_argument("--images", type=int, default=3, help="images to evaluate, 1-10 (default 3)")
parser.add_argument("--steps", type=int, default=5, help="denoising steps of every method (default 5)")
parser.add_argument("--methods", default="inexact-newton,dps", help="comma-separated recipe or solver names (default inexact-newton,dps)")
parser.add_argument("--work", type=Path, default=None,
                    help="folder for the digit images and the harness's run, kept and resumed (default: a fresh temporary folder)")
out_argument(parser)
args = parse(parser)
if not 1 <= args.images <= 10:
    parser.error(f"--images must be 1-10, got {args.images}")
work = args.work if args.work is not None else Path(tempfile.mkdtemp(prefix="evaluate_folder-"))

# %% [markdown]
# ## An image folder
#
# The harness reads any folder recursively; an image's id is its path relative to the
# folder, which is what the records, the output images and the seeds are keyed by (so results
# do not depend on the batch size or on the number of processes).

# %%
folder = work / "digits"
digits, labels = cd.data.demo_digits()
for i in range(args.images):
    save_png(folder / f"class{int(labels[i])}" / f"digit{i}.png", to_uint8(digits[i]))
print(f"wrote {args.images} PNG files under {folder}")

# %% [markdown]
# ## The run
#
# `Evaluation` takes the command's options by name. Its `out` folder is reused across runs:
# finished (image, method) records are skipped, so running this cell twice (or the script twice
# with the same `--work`) costs nothing the second time.

# %%
run_dir = work / "run"
evaluation = Evaluation(model="mnist-ddpm", data=str(folder), task="box", method=args.methods.split(","),
                        steps=args.steps, batch_size=args.images, out=run_dir, quiet=True)
summary = evaluation.run()
print((run_dir / "summary.md").read_text())

# %% [markdown]
# ## Reading the records
#
# Every line of `records.jsonl` is one (image, method) with its metrics and cost; the summary
# above is their mean with a 95% interval.

# %%
with open(run_dir / "records.jsonl") as f:
    records = [json.loads(line) for line in f]
for r in records:
    print(f"{r['image']:>20}  {r['method']:>15}  PSNR {r['psnr']:6.2f} dB  SSIM {r['ssim']:.3f}  NFE {r['nfe']}")
args.out.mkdir(parents=True, exist_ok=True)
shutil.copyfile(run_dir / "grid.png", args.out / "evaluate_folder.png")
print(f"wrote {args.out / 'evaluate_folder.png'}")
