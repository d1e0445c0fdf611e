"""``constrained-diffusion model-card``: the measured numbers of a shipped MNIST model.

For ``ddpm`` / ``flow``: parameters, training steps and final loss (from the weight file),
``--samples`` unconditional samples (DDIM / Euler, ``--steps`` steps, seeded) judged by the
shipped classifier: the fraction labelled with confidence >= 0.9 and the Fréchet distance of
their penultimate features to the 500 test digits, next to the same distance for 1,000
real training digits (the floor a perfect model would reach); plus a grid of samples. For
``classifier``: parameters and test accuracy, overall and per digit.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from constrained_diffusion.cli.args import (
    describe_device,
    documented_command,
    format_table,
    positive_int,
    summary,
    write_block,
)
from constrained_diffusion.cli.vocabulary import AUTO, device_or_auto


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``model-card`` and its options on the sub-command parsers ``sub``."""
    p = sub.add_parser("model-card", help="measure a shipped MNIST model for its model card; "
                                          "prints the numbers (--write-docs PAGE: into the card)", description=summary(__doc__))
    p.add_argument("model", choices=["ddpm", "flow", "classifier"], help="the shipped model measured")
    p.add_argument("--weights", type=Path, default=None, help="a weight file instead of the shipped one")
    p.add_argument("--samples", type=positive_int, default=1000, help="unconditional samples (default 1000)")
    p.add_argument("--steps", type=positive_int, default=50, help="sampling steps (default 50)")
    p.add_argument("--batch-size", type=positive_int, default=250, help="samples per batch (default 250)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--device", type=device_or_auto, default=AUTO,
                   help="where to sample: cpu or cuda (default cuda when available)")
    p.add_argument("--grid", type=Path, default=None, help="write a 10x10 grid of samples to this PNG")
    p.add_argument("--write-docs", type=Path, default=None, help="replace the DDPM-CARD / FLOW-CARD / CLASSIFIER-CARD block")
    p.set_defaults(run=run, documented=command_line)


def _classifier_card(args: argparse.Namespace) -> str:
    from constrained_diffusion.data import mnist
    from constrained_diffusion.evaluation.model_card import classifier_card
    from constrained_diffusion.models import MNISTClassifier, load, weights_path
    from constrained_diffusion.models.weights import read_metadata

    source = args.weights or "mnist-classifier"
    classifier = load(source)
    if not isinstance(classifier, MNISTClassifier):
        raise ValueError(f"--weights holds a {type(classifier).__name__}, not the MNIST classifier")
    images, labels = mnist("held-out")
    card = classifier_card(classifier, images, labels)
    meta = read_metadata(weights_path(source))  # type: ignore[arg-type]
    table = format_table(["digit", *map(str, range(10))], [["accuracy", *(f"{a:.2f}" for a in card.per_digit)]])
    return (f"- parameters: {card.parameters:,}\n- test accuracy (500 digits): {card.accuracy:.4f}\n"
            + (f"- epochs: {meta['epochs']}\n" if "epochs" in meta else "") + f"\n{table}")


def _diffusion_card(args: argparse.Namespace) -> str:
    from constrained_diffusion.denoisers import MNISTDenoiser
    from constrained_diffusion.evaluation.model_card import diffusion_card
    from constrained_diffusion.models import load
    from constrained_diffusion.utils.images import make_grid, save_png, to_uint8

    model = load(args.weights or args.model, args.device)
    if not isinstance(model, MNISTDenoiser) or model.kind != args.model:
        raise ValueError(f"--weights holds a {getattr(model, 'kind', type(model).__name__)!r} model, not {args.model!r}")
    card = diffusion_card(model, load("mnist-classifier"), args.samples, args.steps, args.batch_size, args.seed)
    if args.grid is not None:
        save_png(args.grid, to_uint8(make_grid(card.samples[:100], nrow=10)))
    meta = model.metadata
    sampler_name = "DDIM (eta = 0)" if args.model == "ddpm" else "Euler"
    return (f"- parameters: {card.parameters:,}\n- training steps: {meta.get('train_steps', '?')} "
            f"(batch {meta.get('batch_size', '?')}), "
            f"final training loss (mean of the last log interval): {meta.get('final_loss', '?')}\n"
            f"- samples: {args.samples} unconditional, {sampler_name}, {args.steps} steps, seed {args.seed} "
            f"({card.seconds:.0f} s on {describe_device(args.device)})\n\n"
            + format_table(["", "confident fraction (p >= 0.9)", "Fréchet distance to the 500 test digits"],
                           [["model samples", f"{card.quality['confident_fraction']:.3f}",
                             f"{card.quality['frechet_distance']:.2f}"],
                            ["1,000 real training digits (reference)", f"{card.floor['confident_fraction']:.3f}",
                             f"{card.floor['frechet_distance']:.2f}"]]))


def command_line(args: argparse.Namespace) -> str:
    """The command written with the card (it regenerates the block); the sampling options only for ddpm / flow."""
    sampling = ["--samples", "--steps", "--seed", "--device", "--grid"] if args.model != "classifier" else []
    return documented_command("model-card", args, ["model", "--weights", *sampling])


def run(args: argparse.Namespace) -> int:
    """Run ``model-card`` with the parsed ``args``; returns the exit status."""
    diffusion = args.model != "classifier"
    card = _diffusion_card(args) if diffusion else _classifier_card(args)
    block = f"```\n{command_line(args)}\n```\n\n{card}"
    if args.write_docs is not None and args.grid is not None and diffusion:
        block += f"\n\n![The first 100 of the samples]({os.path.relpath(args.grid, args.write_docs.parent)})"
    print(block)
    if args.write_docs is not None:
        write_block(args.write_docs, f"{args.model.upper()}-CARD", block)
    return 0
