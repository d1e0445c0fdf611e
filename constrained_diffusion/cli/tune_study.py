"""``constrained-diffusion tune-study``: every method tuned with the same budget on validation digits, scored on test digits.

For each model x task x method: a ``tune`` study on ``mnist-validation`` brought to ``--trials``
finished trials (resumable; several processes on one ``--storage`` share the work), then every
method with its best setting on ``mnist-test`` at equal steps and at equal time, the table
(``OUT/table.md``, and the ``--block`` of ``--write-docs``) and the history and importance figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constrained_diffusion.cli.args import device_name, documented_command, positive_int, summary, write_block

BLOCK = "TUNING-TABLE"
OPTIONS = ("--models", "--tasks", "--methods", "--trials", "--limit", "--batch-size", "--steps", "--test-limit", "--max-steps", "--seed",
           "--storage", "--out", "--device", "--block")
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
    p.add_argument("--trials", type=positive_int, default=None, help="finished trials per study (default 30)")
    p.add_argument("--limit", type=positive_int, default=None, help="validation images per trial (default 8)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="validation images per batch; the pruner looks after each (default 4)")
    p.add_argument("--steps", type=positive_int, default=None, help="denoising steps in tuning and at equal steps (default 10)")
    p.add_argument("--test-limit", type=int, default=None, help="test images per method (default 32)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="most steps a method gets at equal time (default 200)")
    p.add_argument("--phase", choices=["all", "tune", "score"], default=None, help="tune, score, or all (default)")
    p.add_argument("--seed", type=int, default=None, help="run seed (default 0)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///runs/tuning/study.db)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/tuning)")
    p.add_argument("--device", type=device_name, default=None, help="cpu or cuda (default: cuda where available)")
    p.add_argument("--write-docs", type=Path, default=None, help="put the table in the --block block of this markdown file")
    p.add_argument("--block", default=BLOCK, help=f"marker block name (default {BLOCK})")
    p.add_argument("--write-tuned", type=Path, default=None, metavar="DIR",
                   help="also write DIR/<model>-<task>.yaml: each method's best setting, as the demo reads it "
                        "(constrained_diffusion/recipes/tuned/ holds the shipped ones)")
    p.set_defaults(run=run, documented=command_line)


def run(args: argparse.Namespace) -> int:
    """Run ``tune-study`` with the parsed ``args``; returns the exit status."""
    import torch

    from constrained_diffusion.cli.args import default_device, describe_device
    from constrained_diffusion.tuning.study import TuningStudy

    options = {k: getattr(args, k) for k in ("models", "tasks", "methods", "trials", "limit", "batch_size", "steps", "test_limit", "max_steps",
                                              "phase", "seed", "storage", "out") if getattr(args, k) is not None}
    study = TuningStudy(**options, device=args.device or default_device())
    results = study.run(log=print)
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
    return 0
