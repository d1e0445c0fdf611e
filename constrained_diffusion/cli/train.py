"""``constrained-diffusion train``: train the MNIST models (seeded, resumable, CPU or GPU).

``train ddpm|flow`` trains a UNet on the 4,500 training digits in a run directory outside the
repository (``--out``; default ``$CONSTRAINED_DIFFUSION_HOME/runs/mnist-<model>``, the home
defaulting to ``~/.cache/constrained_diffusion``) and resumes from its ``checkpoint.pt`` if it
exists (run the same command again after an interruption); ``--init-from shipped`` starts from
the shipped weights; ``--log`` puts the JSONL log elsewhere; ``--max-minutes`` ends a piece
cleanly; ``--export FILE`` writes the EMA weights as safetensors. ``train classifier --export
FILE`` trains the MNIST classifier.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constrained_diffusion.cli.args import positive_int, summary
from constrained_diffusion.cli.vocabulary import AUTO, device_or_auto

#: The flag of each parameter a `TrainArgumentError` can name.
FLAGS = {"init_from": "--init-from", "log_path": "--log", "out_dir": "--out", "steps": "--steps"}
SHIPPED = "shipped"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``train`` and its flags."""
    p = sub.add_parser("train", help="train the MNIST diffusion, flow or classifier model; writes checkpoints, a log and the weights under --out",
                       description=summary(__doc__))
    p.add_argument("model", choices=["ddpm", "flow", "classifier"], help="what to train")
    p.add_argument("--out", type=Path, default=None,
                   help="run directory (checkpoint, and log unless --log); default "
                        "$CONSTRAINED_DIFFUSION_HOME/runs/mnist-MODEL (home: ~/.cache/constrained_diffusion)")
    p.add_argument("--log", type=Path, default=None, help="JSONL log of the run (default OUT/log.jsonl)")
    p.add_argument("--init-from", default=None, metavar="SOURCE",
                   help="'shipped' (the package's weights of this model) or a .safetensors file to start from; "
                        "a run already in --out resumes only if it started from the same weights")
    p.add_argument("--steps", type=positive_int, default=None, help="total optimiser steps (ddpm/flow: 10000) or epochs (classifier: 30)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default 64 / 128)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this many minutes (with a checkpoint)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for torch")
    p.add_argument("--device", type=device_or_auto, default=AUTO, help="cpu or cuda[:N] (default: cuda if available)")
    p.add_argument("--export", type=Path, default=None, help="write the (EMA) weights to this safetensors file")
    p.add_argument("--export-only", action="store_true",
                   help="with --export: write the weights of the run's last checkpoint without training (safe while it trains)")
    p.set_defaults(run=run)


def init_path(source: str | None, model: str) -> Path | None:
    """The weight file ``--init-from SOURCE`` names for ``model``.

    Args:
        source: ``"shipped"``, the path of a ``.safetensors`` file, or ``None``.
        model: ``ddpm``, ``flow`` or ``classifier``.

    Returns:
        The file, or ``None`` without ``--init-from``.

    Raises:
        ValueError: ``source`` is neither ``shipped`` nor a path.
        FileNotFoundError: the file does not exist.
    """
    if source is None:
        return None
    if source == SHIPPED:
        from constrained_diffusion.models.pretrained import pretrained_path

        try:
            return pretrained_path(f"mnist_{model}.safetensors")
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"--init-from: {exc}") from exc
    path = Path(source).expanduser()
    if path.suffix != ".safetensors" and not path.exists() and Path(source).name == source:
        raise ValueError(f"--init-from: unknown source {source!r}; expected 'shipped' or the path of a .safetensors weight file")
    if not path.is_file():
        raise FileNotFoundError(f"--init-from: no weight file at {path}")
    return path


def run(args: argparse.Namespace) -> int:
    """Train (or export) as the flags say; returns the exit status."""
    from constrained_diffusion.training.checkpoint import TrainArgumentError

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        init = init_path(args.init_from, args.model)
        if args.model == "classifier":
            return _run_classifier(args, init)
        return _run_unet(args, init)
    except TrainArgumentError as exc:
        raise ValueError(f"{FLAGS.get(exc.argument, exc.argument)}: {exc.message}") from exc


def _run_classifier(args: argparse.Namespace, init: Path | None) -> int:
    """``train classifier``: train and write ``--export``."""
    from constrained_diffusion.training.classifier import train_classifier

    if args.export is None:
        raise ValueError("--export: train classifier needs the path of the weight file to write")
    train_classifier(args.export, epochs=args.steps or 30, batch_size=args.batch_size or 128,
                     seed=args.seed, device=args.device, init_from=init)
    return 0


def _run_unet(args: argparse.Namespace, init: Path | None) -> int:
    """``train ddpm|flow``: train (resuming or from ``init``) and/or export the EMA weights."""
    from constrained_diffusion.data import mnist
    from constrained_diffusion.training.checkpoint import default_run_dir
    from constrained_diffusion.training.diffusion import TrainConfig, train

    out = args.out if args.out is not None else default_run_dir(f"mnist-{args.model}")
    if args.export_only:
        if args.export is None:
            raise ValueError("--export-only needs --export FILE")
        print(f"wrote {_export(out, args.export)}")
        return 0
    fields = {"kind": args.model, "seed": args.seed}
    if args.steps:
        fields["steps"] = args.steps
    if args.batch_size:
        fields["batch_size"] = args.batch_size
    cfg = TrainConfig(**fields)
    images, _ = mnist("train")
    print(f"run directory: {out}")
    train(cfg, images, out, max_minutes=args.max_minutes, device=args.device, init_from=init, log_path=args.log)
    if args.export is not None:
        print(f"wrote {_export(out, args.export)}")
    return 0


def _export(out: Path, path: Path) -> Path:
    """Export the run's EMA weights, naming ``--out`` when the run directory holds no checkpoint."""
    from constrained_diffusion.training.diffusion import export_weights

    try:
        return export_weights(out, path)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"--out: {exc}") from exc
