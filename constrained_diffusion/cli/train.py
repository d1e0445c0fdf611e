"""``constrained-diffusion train``: train the MNIST models (seeded, resumable, CPU or GPU).

``train ddpm|flow --out DIR`` trains a UNet on the 4,500 training digits and resumes from
``DIR/checkpoint.pt`` if it exists (run the same command again after an interruption);
``--max-minutes`` ends a piece cleanly; ``--export FILE`` writes the EMA weights as
safetensors. ``train classifier --export FILE`` trains the MNIST classifier.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from constrained_diffusion.cli.args import device_name, positive_int, summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the MNIST diffusion, flow or classifier model",
                       description=summary(__doc__))
    p.add_argument("model", choices=["ddpm", "flow", "classifier"], help="what to train")
    p.add_argument("--out", type=Path, default=None, help="run directory (checkpoint and log); required for ddpm/flow")
    p.add_argument("--steps", type=positive_int, default=None, help="total optimiser steps (ddpm/flow: 10000) or epochs (classifier: 30)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default 64 / 128)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes (with a checkpoint)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--export", type=Path, default=None, help="write the (EMA) weights to this safetensors file")
    p.add_argument("--export-only", action="store_true",
                   help="with --export: write the weights of the run's last checkpoint without training (safe while it trains)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from constrained_diffusion.data import mnist

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "classifier":
        from constrained_diffusion.training.classifier import train_classifier

        if args.export is None:
            raise ValueError("--export: train classifier needs the path of the weight file to write")
        train_classifier(args.export, epochs=args.steps or 30, batch_size=args.batch_size or 128,
                         seed=args.seed, device=args.device)
        return 0

    from constrained_diffusion.training.diffusion import TrainConfig, export_weights, train

    if args.out is None:
        raise ValueError("--out: train ddpm/flow needs a run directory")
    if args.export_only:
        if args.export is None:
            raise ValueError("--export-only needs --export FILE")
        print(f"wrote {export_weights(args.out, args.export)}")
        return 0
    fields = {"kind": args.model, "seed": args.seed}
    if args.steps:
        fields["steps"] = args.steps
    if args.batch_size:
        fields["batch_size"] = args.batch_size
    cfg = TrainConfig(**fields)
    images, _ = mnist("train")
    train(cfg, images, args.out, max_minutes=args.max_minutes, device=args.device)
    if args.export is not None:
        print(f"wrote {export_weights(args.out, args.export)}")
    return 0
