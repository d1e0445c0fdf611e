"""``constrained-diffusion tune-study``: every method tuned with the same budget on validation digits, scored on test digits.

For each model x task x method that runs on the task: a ``tune`` study on class-stratified
``mnist-validation`` digits brought to ``--trials`` complete trials (pruned and failed ones do not
count; resumable; several processes on one ``--storage`` share the work), then every method with
its best setting on class-stratified ``mnist-test`` digits at equal steps, at equal network
evaluations (NFE + NBE) and at equal time, the table (``OUT/table.md``, and the ``--block`` of
``--write-docs``), the verdict generated from it (``OUT/verdict.md``), the history, importance
and Pareto figures, and with ``--write-choosing PAGE`` the "Choosing a method" page's block.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constrained_diffusion.cli.args import device_name, documented_command, int_at_least, positive_int, summary, write_block
from constrained_diffusion.cli.vocabulary import add_quiet, progress_log

BLOCK = "TUNING-TABLE"
CHOOSING = "CHOOSING"
"""The block ``--write-choosing PAGE`` rewrites."""
OPTIONS = ("--models", "--tasks", "--methods", "--trials", "--limit", "--batch-size", "--steps", "--test-limit", "--test-batch-size",
           "--max-steps", "--max-finished-factor", "--no-stratify", "--reference", "--seed", "--storage", "--out", "--device", "--block")
"""What the command written with the table repeats (``--block`` only when it is not `BLOCK`)."""


def command_line(args: argparse.Namespace) -> str:
    """The command written with the table (add ``--write-docs PAGE`` to regenerate it)."""
    return documented_command("tune-study", args, OPTIONS, omit={"--block": BLOCK})


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``tune-study`` and its options on the sub-command parsers ``sub``."""
    from constrained_diffusion.tuning.study import StudyConfig

    d = StudyConfig.model_fields
    p = sub.add_parser("tune-study", help="the fair comparison: tune every method equally, score on held-out digits; "
                                          "writes OUT/table.md, OUT/results.json, OUT/figures/ (OUT default runs/tuning)",
                       description=summary(__doc__))
    p.add_argument("--models", nargs="+", default=None, help=f"default {' '.join(d['models'].default_factory())}")
    p.add_argument("--tasks", nargs="+", default=None, help=f"default {' '.join(d['tasks'].default_factory())}")
    p.add_argument("--methods", nargs="+", default=None, help=f"default {' '.join(d['methods'].default_factory())}")
    p.add_argument("--trials", type=positive_int, default=None,
                   help=f"complete trials per study; pruned and failed ones do not count (default {d['trials'].default})")
    p.add_argument("--max-finished-factor", type=positive_int, default=None,
                   help=f"a study stops after this many x --trials finished trials (default {d['max_finished_factor'].default})")
    p.add_argument("--limit", type=positive_int, default=None, help=f"validation images per trial, class-stratified (default {d['limit'].default})")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"validation images per batch; the pruner looks after each (default {d['batch_size'].default})")
    p.add_argument("--steps", type=positive_int, default=None, help=f"denoising steps in tuning and at equal steps (default {d['steps'].default})")
    p.add_argument("--test-limit", type=int_at_least(2), default=None,
                   help=f"test images per method, class-stratified (default {d['test_limit'].default})")
    p.add_argument("--test-batch-size", type=positive_int, default=None, help=f"test images per batch (default {d['test_batch_size'].default})")
    p.add_argument("--no-stratify", dest="no_stratify", action="store_true", default=False,
                   help="the first N digits by id (class order) instead of class-stratified subsets")
    p.add_argument("--reference", default=None, help="the method the paired differences are taken against (default inexact-newton)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help=f"most steps a method gets at equal NFE + NBE or equal time (default {d['max_steps'].default})")
    p.add_argument("--phase", choices=["all", "tune", "score", "report"], default=None,
                   help="tune, score, all (default), or report: the table, verdict, figures and pages again from OUT/results.json")
    p.add_argument("--seed", type=int, default=None, help="run seed (default 0)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///runs/tuning/study.db)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/tuning)")
    p.add_argument("--device", type=device_name, default=None, help="cpu or cuda (default: cuda where available)")
    p.add_argument("--write-docs", type=Path, default=None, help="put the table in the --block block of this markdown file")
    p.add_argument("--block", default=BLOCK, help=f"marker block name (default {BLOCK})")
    p.add_argument("--write-choosing", type=Path, default=None, metavar="PAGE",
                   help=f"put the 'Choosing a method' block ({CHOOSING}: scale, command, verdict, Pareto figure, tables) in PAGE, "
                        "the figure in PAGE's folder/figures/choosing/pareto.png")
    p.add_argument("--write-tuned", type=Path, default=None, metavar="DIR",
                   help="also write DIR/<model>-<task>.yaml: each method's best setting, as the demo reads it "
                        "(constrained_diffusion/recipes/tuned/ holds the shipped ones)")
    add_quiet(p)
    p.set_defaults(run=run, documented=command_line)


def run(args: argparse.Namespace) -> int:
    """Run ``tune-study`` with the parsed ``args``; returns the exit status."""
    import torch

    from constrained_diffusion.cli.args import default_device, describe_device
    from constrained_diffusion.tuning.study import TuningStudy

    options = {k: getattr(args, k) for k in ("models", "tasks", "methods", "trials", "limit", "batch_size", "steps", "test_limit",
                                              "test_batch_size", "max_steps", "max_finished_factor", "reference", "phase", "seed",
                                              "storage", "out") if getattr(args, k) is not None}
    study = TuningStudy(**options, stratify=not args.no_stratify, device=args.device or default_device())
    results = study.run(log=progress_log(args))
    if not results:
        return 0
    out = Path(study.config.out)
    print(f"wrote {out / 'table.md'}, {out / 'results.json'}, {out / 'figures'}")
    if args.write_tuned is not None:
        from constrained_diffusion.recipes.tuned import write_tuned

        args.device = study.config.device
        print("wrote " + ", ".join(str(p) for p in write_tuned(results, args.write_tuned, command=command_line(args))))
    if args.write_docs is not None:
        args.device = study.config.device
        machine = f"torch {torch.__version__}, {describe_device(study.config.device)}"
        write_block(args.write_docs, args.block, f"```\n{command_line(args)}\n```\n\n{machine}.\n\n"
                    + (out / "table.md").read_text().strip())
    if args.write_choosing is not None:
        write_choosing(args, results, out)
    return 0


def full_command(args: argparse.Namespace) -> str:
    """The full study's command: every default (both models, three tasks, every method, 30 complete trials), on a GPU, same page."""
    parts = ["OMP_NUM_THREADS=1 constrained-diffusion tune-study", "--storage sqlite:///runs/choosing/study.db", "--out runs/choosing",
             "--device cuda"]
    return " ".join([*parts, f"--write-choosing {args.write_choosing}"])


def write_choosing(args: argparse.Namespace, results: dict, out: Path) -> None:
    """The ``CHOOSING`` block of ``--write-choosing PAGE`` and its figure (``PAGE's folder/figures/choosing/pareto.png``)."""
    from constrained_diffusion.tuning.report import choosing_block
    from constrained_diffusion.utils.safe_io import write_bytes

    page = Path(args.write_choosing)
    source = out / "figures" / "pareto.png"
    figure = None
    if source.exists():
        write_bytes(page.parent / "figures" / "choosing" / "pareto.png", source.read_bytes())
        figure = "figures/choosing/pareto.png"
    command = command_line(args).replace(" --block " + BLOCK, "") + f" --write-choosing {page}"
    write_block(page, CHOOSING, choosing_block(results, command, full_command(args), figure))
