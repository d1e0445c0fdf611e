# %% [markdown]
# # Tune, then evaluate
#
# A comparison of training-free methods is fair only when every method gets the same tuning
# budget on images it is not scored on. This example tunes two methods — inexact Newton and
# gradient descent in the paper's loop — with an Optuna study each on the MNIST validation
# digits (`mnist-validation`), then scores both best settings on the test digits
# (`mnist-test`, the other half of the held-out digits) with the evaluation harness.
#
# Defaults are small (4 trials of 2 images, 3 steps); the same from the command line, at the
# size of the docs' study:
#
# ```bash
# constrained-diffusion tune --model mnist-ddpm --data mnist-validation --task box \
#     --method inexact-newton --trials 30 --limit 4 --batch-size 2 --steps 10 \
#     --storage sqlite:///runs/tune.db --out-config runs/in-best.yaml --figures runs/in-figures
# constrained-diffusion evaluate --config runs/in-best.yaml --limit 64
# ```
#
# The study lives in an SQLite file under `--work`: run the script again with the same
# `--work` and each study continues where it stopped (`--trials` more trials). It writes
# `tune_and_evaluate.png` (the optimisation history of both studies) to `--out`.

# %%
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import out_argument, parse

from constrained_diffusion.evaluation.harness import Evaluation
from constrained_diffusion.tuning import method_space
from constrained_diffusion.tuning.figures import history_panel
from constrained_diffusion.tuning.tuner import Tuner

parser = argparse.ArgumentParser(description="Tune two methods on MNIST validation digits, score them on test digits.")
parser.add_argument("--trials", type=int, default=4, help="trials added to each study (default 4)")
parser.add_argument("--images", type=int, default=2, help="validation images per trial (default 2)")
parser.add_argument("--test-images", type=int, default=2, help="test images scored per method (default 2)")
parser.add_argument("--steps", type=int, default=3, help="denoising steps (default 3)")
parser.add_argument("--work", type=Path, default=None, help="folder of the study and the runs, kept and resumed (default: temporary)")
out_argument(parser)
args = parse(parser)
work = args.work if args.work is not None else Path(tempfile.mkdtemp(prefix="tune_and_evaluate-"))
storage = f"sqlite:///{work / 'tune.db'}"
methods = ["inexact-newton", "gradient-descent"]

# %% [markdown]
# ## What is tuned
#
# Each method declares its search space next to its definition: the recipe the step sizes
# and inner steps of the paper's loop, the solver its own options (inexact Newton's
# finite-difference step `h`). `--set KEY=VALUE` on the command line (`set=` here) fixes a key
# and takes it out of the space.

# %%
for name in methods:
    print(f"{name}: {method_space(name).describe()}")

# %% [markdown]
# ## One study per method
#
# Every trial runs on the same validation digits with the same initial noise, so trials differ
# only in their setting. Trial `n`'s random draws are seeded by the run seed and `n`: both
# studies start from the same settings of their shared keys, and a rerun gives the same trials.

# %%
studies, configs = {}, {}
for name in methods:
    tuner = Tuner(model="mnist-ddpm", data="mnist-validation", task="box", method=name, trials=args.trials,
                  limit=args.images, batch_size=args.images, steps=args.steps, storage=storage,
                  out_config=work / f"{name}.yaml", quiet=True)
    summary = tuner.run()
    best = summary["best"]
    print(f"{name}: {summary['trials']} trials, best PSNR {best['value']:.2f} dB with {best['overrides']} "
          f"(NFE {best['nfe']:.0f} per image)")
    studies[name], configs[name] = tuner.open(), work / f"{name}.yaml"

# %% [markdown]
# ## Scored on the test digits
#
# `--out-config` wrote each best trial as a config for `evaluate --config`; here the harness
# runs both best settings side by side on test digits, which no trial saw.

# %%
import yaml  # noqa: E402

specs = [yaml.safe_load(configs[name].read_text())["method"][0] for name in methods]
run = Evaluation(model="mnist-ddpm", data="mnist-test", task="box", method=specs, steps=args.steps, limit=args.test_images,
                 batch_size=args.test_images, out=work / "scored", quiet=True)
run.run()
print((work / "scored" / "summary.md").read_text())

# %% [markdown]
# ## The optimisation history
#
# Dots are complete trials, the line is the best so far (pruned and failed trials are not
# drawn; the study keeps them).

# %%
args.out.mkdir(parents=True, exist_ok=True)
path = history_panel(studies, args.out / "tune_and_evaluate.png", f"box inpainting, {args.images} validation digits per trial")
print(f"wrote {path}")
