"""``constrained-diffusion tune``: a resumable Optuna search over a method's declared hyper-parameters.

Each trial runs the method on the same ``--limit`` images of ``--data`` with the same noise and
scores ``--metric``; the study lives in ``--storage`` (SQLite by default), so rerunning the
command continues it and several processes may share it. ``--out-config FILE`` writes the best
trial as a config that ``evaluate --config FILE`` runs. See the docs page "Tuning and fair
comparisons".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constrained_diffusion.cli.args import device_name, positive_int, summary


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def spaces_epilog() -> str:
    """Every registered method's search space, one line each (the ``--help`` epilog)."""
    from constrained_diffusion.recipes import names
    from constrained_diffusion.solvers import registry
    from constrained_diffusion.tuning.space import method_space

    lines = ["search spaces (declared with each recipe and solver; --set KEY=VALUE fixes a key):"]
    for name in [*names(), *(n for n in registry.names() if n not in names())]:
        lines.append(f"  {name}: {method_space(name).describe()}")
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tune`` and its options on the sub-command parsers ``sub``."""
    p = sub.add_parser("tune", help="tune a method's hyper-parameters with Optuna (resumable, shareable study)",
                       description=summary(__doc__), epilog=spaces_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="mnist-ddpm, mnist-flow, a diffusers folder or a Hub id")
    p.add_argument("--data", required=True, help="the tuning images: mnist-validation (or its class-stratified subset mnist-validation:stratified-N), "
                                                 "an image folder or file")
    p.add_argument("--task", required=True, help="box, top-half, random-box, free-form, sr4, sr8, style, or a registered constraint")
    p.add_argument("--method", required=True, help="a recipe or solver name")
    p.add_argument("--trials", required=True, type=positive_int, help="trials this run adds to the study")
    p.add_argument("--limit", type=positive_int, default=16, help="images per trial (default 16)")
    p.add_argument("--steps", type=positive_int, default=None, help="denoising steps (default: the recipe's)")
    p.add_argument("--metric", default="psnr", help="psnr (default), ssim or lpips")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///tune.db)")
    p.add_argument("--study", default=None, help="study name (default: model/data/task/method/metric/steps/images)")
    p.add_argument("--timeout", type=_positive_float, default=None, help="stop adding trials after this many seconds")
    p.add_argument("--out-config", type=Path, default=None, help="write the best trial as an evaluate --config YAML file")
    p.add_argument("--eval-data", default=None, help="the set that config scores (default: mnist-validation -> mnist-test)")
    p.add_argument("--figures", type=Path, default=None, help="write history.png and importance.png of the study here")
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per batch (default 8)")
    p.add_argument("--set", action="extend", nargs="+", default=None, metavar="KEY=VALUE",
                   help="fix a method option (taken out of the search space); task.KEY=VALUE a task option")
    p.add_argument("--noise-std", type=float, default=0.0, help="measurement noise sigma on the [-1, 1] scale")
    p.add_argument("--prompt", default=None, help="one caption for every image of a text-conditioned model")
    p.add_argument("--style-image", type=Path, default=None, help="reference image of the style task")
    p.add_argument("--seed", type=int, default=0, help="run seed: the images' noise and the sampler's draws")
    p.add_argument("--device", type=device_name, default=None, help="cpu or cuda (default: cuda where available)")
    p.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16")
    p.add_argument("--no-prune", action="store_true", help="run every trial on all its images (no median pruning)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary print")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``tune`` with the parsed ``args``; returns the exit status."""
    from constrained_diffusion.cli.args import default_device
    from constrained_diffusion.recipes.overrides import split_set
    from constrained_diffusion.tuning.tuner import DEFAULT_STORAGE, Tuner

    common, per, task = split_set(args.set or [])
    fixed = {**common, **{f"{label}:{k}": v for label, kv in per.items() for k, v in kv.items()},
             **{f"task.{k}": v for k, v in task.items()}}
    tuner = Tuner(model=args.model, data=args.data, task=args.task, method=args.method, trials=args.trials, limit=args.limit,
                  steps=args.steps, metric=args.metric, storage=args.storage or DEFAULT_STORAGE, study=args.study,
                  timeout=args.timeout, out_config=args.out_config, eval_data=args.eval_data, batch_size=args.batch_size,
                  set=fixed, noise_std=args.noise_std, prompt=args.prompt, style_image=args.style_image, seed=args.seed,
                  device=args.device or default_device(), dtype=args.dtype, prune=not args.no_prune, quiet=args.quiet)
    summary_ = tuner.run(log=print)
    if args.out_config is not None and summary_["best"] is not None:
        print(f"wrote {args.out_config} (run it with: constrained-diffusion evaluate --config {args.out_config})")
    if args.figures is not None:
        from constrained_diffusion.tuning.figures import history_figure, importance_figure

        study = tuner.open()
        written = [history_figure(study, args.figures / "history.png", study.study_name),
                   importance_figure(study, args.figures / "importance.png", study.study_name)]
        print("wrote " + ", ".join(str(p) for p in written if p is not None))
    return 0
