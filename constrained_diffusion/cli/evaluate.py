"""``constrained-diffusion evaluate``: the MNIST real-data comparison of solvers.

For each shipped model (ddpm, flow), task (box: top half missing; free-form strokes; x4
super-resolution) and solver, on the 500 test digits: PSNR, SSIM, label accuracy (the shipped
classifier on the result against the true label), final residual, NFE, seconds per sample and
peak memory, with the same steps for every solver and again at equal wall-clock time. Results
go to a JSON-lines file batch by batch; rerunning the command resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from constrained_diffusion.cli.args import describe_device, device_name, format_table, positive_int, replace_block, summary
from constrained_diffusion.solvers import registry


def add_parser(sub: argparse._SubParsersAction) -> None:
    from constrained_diffusion.evaluation.tasks import TASKS

    p = sub.add_parser("evaluate", help="PSNR/SSIM/label accuracy/cost table of the solvers on MNIST",
                       description=summary(__doc__))
    p.add_argument("--model", choices=["mnist"], default="mnist", help="model family (mnist)")
    p.add_argument("--variants", nargs="+", choices=["ddpm", "flow"], default=["ddpm", "flow"], help="which shipped models")
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    p.add_argument("--solvers", nargs="+", choices=registry.names(), default=["inexact-newton", "gradient-descent", "exact-jvp", "exact-newton"])
    p.add_argument("--steps", type=positive_int, default=20)
    p.add_argument("--inner-steps", type=positive_int, default=5)
    p.add_argument("--limit", type=positive_int, default=500, help="number of test digits (default all 500)")
    p.add_argument("--batch-size", type=positive_int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where to sample: cpu or cuda (default cuda when available)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--emulate-tf32", action="store_true",
                           help="round every convolution's input and weight to TF32, as cuDNN does on a GPU by default")
    precision.add_argument("--no-tf32", action="store_true",
                           help="on CUDA, run float32 convolutions and matrix products in full float32 (TF32 off)")
    p.add_argument("--no-equal-time", action="store_true", help="skip the equal wall-clock rows")
    p.add_argument("--out", type=Path, default=Path("results/mnist-evaluation.jsonl"), help="JSON-lines results (resumed)")
    p.add_argument("--write-docs", type=Path, default=None, help="replace the --block block of this markdown file")
    p.add_argument("--block", default="EVAL-TABLE", help="name of the marker block --write-docs replaces (default EVAL-TABLE)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from constrained_diffusion.data import mnist
    from constrained_diffusion.denoisers.mnist import MNISTDenoiser
    from constrained_diffusion.evaluation import Settings, evaluate, summarise
    from constrained_diffusion.models.pretrained import mnist_classifier, pretrained_path, weights_digest
    from constrained_diffusion.utils.precision import emulate_tf32, tf32_disabled

    device = torch.device(args.device)
    models = {name: MNISTDenoiser.pretrained(name, device=device) for name in args.variants}
    images, labels = mnist("test")
    settings = Settings(steps=args.steps, inner_steps=args.inner_steps, batch_size=args.batch_size,
                        limit=args.limit, seed=args.seed, device=str(device),
                        precision="tf32-emulated" if args.emulate_tf32 else "no-tf32" if args.no_tf32 else "float32")
    digests = {name: weights_digest(pretrained_path(f"mnist_{name}.safetensors")) for name in args.variants}
    with contextlib.ExitStack() as stack:
        if args.emulate_tf32:
            for model in models.values():
                stack.enter_context(emulate_tf32(model.network))
        if args.no_tf32:
            stack.enter_context(tf32_disabled())
        records = evaluate(models, mnist_classifier(), images, labels, args.tasks, args.solvers, args.out, settings,
                           equal_time=not args.no_equal_time, weights=digests)
    order = lambda seq, v: seq.index(v) if v in seq else len(seq)  # noqa: E731
    rows = sorted(summarise(records), key=lambda r: (order(args.variants, r["model"]), order(args.tasks, r["task"]),
                                                      order(["equal-steps", "equal-time"], r["budget"]),
                                                      order(args.solvers, r["solver"])))
    table = format_table(
        ["model", "task", "solver", "budget", "steps x inner", "PSNR", "SSIM", "label acc.", "residual", "NFE", "NBE",
         "s / sample", "peak MB"],
        [[r["model"], r["task"], r["solver"], r["budget"], f"{r['steps']} x {r['inner_steps']}", f"{r['psnr']:.2f}",
          f"{r['ssim']:.3f}", f"{r['label_accuracy']:.3f}", f"{r['residual']:.4f}", str(r["nfe"]), str(r["nbe"]),
          f"{r['seconds_per_sample']:.3f}", f"{r['peak_mb']:.0f}"] for r in rows])
    print(table)
    if args.write_docs is not None:
        command = (f"constrained-diffusion evaluate --variants {' '.join(args.variants)} --tasks {' '.join(args.tasks)} "
                   f"--solvers {' '.join(args.solvers)} --steps {args.steps} --inner-steps {args.inner_steps} "
                   f"--limit {args.limit} --batch-size {args.batch_size} --seed {args.seed} --device {device}"
                   + (" --emulate-tf32" if args.emulate_tf32 else "") + (" --no-tf32" if args.no_tf32 else "")
                   + (" --no-equal-time" if args.no_equal_time else "") + f" --out {args.out}")
        machine = f"torch {torch.__version__}, {describe_device(str(device))}"
        weights = ", ".join(f"{name} {digest}" for name, digest in digests.items())
        replace_block(args.write_docs, args.block,
                      f"```\n{command}\n```\n\n{machine}; weights {weights}; {len(records)} batch records.\n\n{table}")
        print(f"updated {args.write_docs}")
    return 0
