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
import time
from pathlib import Path

import torch

from constrained_diffusion.cli.args import describe_device, device_name, format_table, positive_int, replace_block, summary


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model-card", help="measure a shipped MNIST model for its model card", description=summary(__doc__))
    p.add_argument("model", choices=["ddpm", "flow", "classifier"])
    p.add_argument("--weights", type=Path, default=None, help="a weight file instead of the shipped one")
    p.add_argument("--samples", type=positive_int, default=1000, help="unconditional samples (default 1000)")
    p.add_argument("--steps", type=positive_int, default=50, help="sampling steps (default 50)")
    p.add_argument("--batch-size", type=positive_int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where to sample: cpu or cuda (default cuda when available)")
    p.add_argument("--grid", type=Path, default=None, help="write a 10x10 grid of samples to this PNG")
    p.add_argument("--write-docs", type=Path, default=None, help="replace the DDPM-CARD / FLOW-CARD / CLASSIFIER-CARD block")
    p.set_defaults(run=run)


def _classifier_card(args: argparse.Namespace) -> str:
    from constrained_diffusion.data import mnist
    from constrained_diffusion.models.pretrained import pretrained_path
    from constrained_diffusion.models.weights import load_weights, read_metadata

    path = args.weights or pretrained_path("mnist_classifier.safetensors")
    clf = load_weights(path)[0]
    images, labels = mnist("test")
    with torch.no_grad():
        pred = clf(images).argmax(dim=1)
    per_digit = [float((pred[labels == d] == d).float().mean()) for d in range(10)]
    params = sum(p.numel() for p in clf.parameters())
    meta = read_metadata(path)
    table = format_table(["digit", *map(str, range(10))], [["accuracy", *(f"{a:.2f}" for a in per_digit)]])
    return (f"- parameters: {params:,}\n- test accuracy (500 digits): {float((pred == labels).float().mean()):.4f}\n"
            + (f"- epochs: {meta['epochs']}\n" if "epochs" in meta else "") + f"\n{table}")


def _diffusion_card(args: argparse.Namespace) -> str:
    from constrained_diffusion.data import mnist
    from constrained_diffusion.denoisers.mnist import MNISTDenoiser
    from constrained_diffusion.metrics.quality import sample_quality
    from constrained_diffusion.models.pretrained import mnist_classifier
    from constrained_diffusion.sampling.engine import ConstrainedSampler
    from constrained_diffusion.utils.images import make_grid, save_png, to_uint8

    device = torch.device(args.device)
    model = (MNISTDenoiser.from_file(args.weights, device) if args.weights
             else MNISTDenoiser.pretrained(args.model, device))
    if model.kind != args.model:
        raise ValueError(f"--weights holds a {model.kind!r} model, not {args.model!r}")
    sampler = ConstrainedSampler(model, steps=args.steps, inner_steps=0)
    start = time.perf_counter()
    chunks = []
    for i in range(0, args.samples, args.batch_size):
        n = min(args.batch_size, args.samples - i)
        gens = [torch.Generator().manual_seed(args.seed * 1_000_003 + i + j) for j in range(n)]
        chunks.append(sampler.sample(None, generator=gens, progress=False).sample.clamp(-1, 1).cpu())
    samples = torch.cat(chunks)
    seconds = time.perf_counter() - start
    clf = mnist_classifier()
    test, _ = mnist("test")
    train, _ = mnist("train")
    quality = sample_quality(clf, samples, test)
    floor = sample_quality(clf, train[torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))[:1000]], test)
    if args.grid is not None:
        save_png(args.grid, to_uint8(make_grid(samples[:100], nrow=10)))
    meta = model.metadata
    params = sum(p.numel() for p in model.network.parameters())
    sampler_name = "DDIM (eta = 0)" if args.model == "ddpm" else "Euler"
    return (f"- parameters: {params:,}\n- training steps: {meta.get('train_steps', '?')} (batch {meta.get('batch_size', '?')}), "
            f"final training loss (mean of the last log interval): {meta.get('final_loss', '?')}\n"
            f"- samples: {args.samples} unconditional, {sampler_name}, {args.steps} steps, seed {args.seed} "
            f"({seconds:.0f} s on {describe_device(str(device))})\n\n"
            + format_table(["", "confident fraction (p >= 0.9)", "Fréchet distance to the 500 test digits"],
                           [["model samples", f"{quality['confident_fraction']:.3f}", f"{quality['frechet_distance']:.2f}"],
                            ["1,000 real training digits (reference)", f"{floor['confident_fraction']:.3f}",
                             f"{floor['frechet_distance']:.2f}"]]))


def run(args: argparse.Namespace) -> int:
    card = _classifier_card(args) if args.model == "classifier" else _diffusion_card(args)
    command = f"constrained-diffusion model-card {args.model}" + (
        f" --samples {args.samples} --steps {args.steps} --seed {args.seed} --device {args.device}"
        if args.model != "classifier" else "")
    if args.grid is not None and args.model != "classifier":
        command += f" --grid {args.grid}"
    block = f"```\n{command}\n```\n\n{card}"
    if args.write_docs is not None and args.grid is not None and args.model != "classifier":
        import os

        relative = os.path.relpath(args.grid, args.write_docs.parent)
        block += f"\n\n![The first 100 of the samples]({relative})"
    print(block)
    if args.write_docs is not None:
        replace_block(args.write_docs, f"{args.model.upper()}-CARD", block)
        print(f"updated {args.write_docs}")
    return 0
