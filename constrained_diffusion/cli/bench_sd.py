"""``constrained-diffusion bench-sd``: solver cost on the full Stable Diffusion 1.x UNet.

The UNet is built from Stable Diffusion 1.5's configuration with random weights (859.5M
parameters; no download: a forward's arithmetic does not depend on the weights) and wrapped as
an epsilon-prediction denoiser with a fixed random text conditioning ``(1, 77, 768)``. For
plain inference and each solver it runs one denoising step with ``--inner-steps`` constraint
iterations on a latent inpainting problem and reports seconds per inner step
(``(run - one forward) / inner steps``) and the peak memory above the model's own footprint.
Each measurement runs in a fresh process, so the peaks do not bleed into one another, and
times the second of two identical runs, so first-call costs (cuDNN's kernel selection) stay
out; on CUDA the peak is the allocator's, on CPU the sampled resident set size. A solver that
cannot run on this model or dtype is reported as a failed row.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
from pathlib import Path
from typing import Any

import torch

from constrained_diffusion.cli.args import describe_device, device_name, format_table, positive_int, replace_block, summary

SD15_UNET: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768, "attention_head_dim": 8,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench-sd", help="seconds per inner step and peak memory on the full SD 1.x UNet", description=summary(__doc__))
    p.add_argument("--size", type=positive_int, default=64, help="latent side (default 64, i.e. 512x512 images)")
    p.add_argument("--inner-steps", type=positive_int, default=2, help="constraint iterations timed (default 2)")
    p.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--write-docs", type=Path, default=None, help="replace the --block block of this markdown file")
    p.add_argument("--block", default="SD-BENCH-TABLE", help="name of the marker block --write-docs replaces (default SD-BENCH-TABLE)")
    p.set_defaults(run=run)


class ConditionedUNet(torch.nn.Module):
    """A ``UNet2DConditionModel`` with a fixed text conditioning: ``f(x, t) -> eps_hat``."""

    def __init__(self, unet: torch.nn.Module, cond: torch.Tensor) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("cond", cond)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=self.cond.expand(x.shape[0], -1, -1)).sample


def _measure(name: str, size: int, inner: int, device: str, dtype_name: str, config: dict[str, Any]) -> dict[str, float]:
    """Runs in a fresh process: build, warm up, then time and measure one step."""
    from diffusers import UNet2DConditionModel

    from constrained_diffusion.constraints.inpainting import Inpainting
    from constrained_diffusion.denoisers.network import NetworkDenoiser
    from constrained_diffusion.denoisers.schedules import VPSchedule
    from constrained_diffusion.metrics.memory import PeakMemory
    from constrained_diffusion.sampling.engine import ConstrainedSampler

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config)
    cond = torch.randn(1, 77, config["cross_attention_dim"], generator=torch.Generator().manual_seed(1))
    net = ConditionedUNet(unet, cond).to(device, dtype).eval().requires_grad_(False)
    model = NetworkDenoiser(net, VPSchedule.scaled_linear(spacing="leading", offset=1), (4, size, size), prediction="epsilon")
    g = torch.Generator().manual_seed(2)
    x_T = torch.randn(1, 4, size, size, generator=g).to(device, dtype)
    y = torch.randn(1, 4, size, size, generator=g).to(device, dtype)
    mask = torch.zeros(1, 1, size, size, device=device, dtype=dtype)
    mask[..., : size // 2] = 1
    constraint = Inpainting(y, mask)
    with torch.no_grad():
        model(x_T, model.timesteps(1)[0])  # warm-up
    k = 0 if name == "plain" else inner
    sampler = ConstrainedSampler(model, "inexact-newton" if name == "plain" else name, steps=1, inner_steps=k)
    sampler.sample(constraint, x_T=x_T, progress=False)  # warm-up: first-call kernel selection, allocator growth
    with PeakMemory(device) as peak:
        result = sampler.sample(constraint, x_T=x_T, progress=False)
    return {"seconds": result.seconds, "nfe": result.nfe, "nbe": result.nbe, "peak_mb": peak.megabytes,
            "params": float(sum(p.numel() for p in unet.parameters()))}


def run(args: argparse.Namespace) -> int:
    from constrained_diffusion.solvers import registry

    ctx = mp.get_context("spawn")
    names = ["plain", *registry.names()]
    results: dict[str, dict[str, float]] = {}
    failures: dict[str, str] = {}
    for name in names:
        with ctx.Pool(1) as pool:
            try:
                results[name] = pool.apply(_measure, (name, args.size, args.inner_steps, args.device, args.dtype,
                                                      getattr(args, "unet_config", SD15_UNET)))
            except Exception as exc:  # a solver this model or dtype cannot run is reported, not fatal
                if name == "plain":
                    raise
                failures[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:100]
        print(f"{name}: {results.get(name, failures.get(name))}", flush=True)
    forward = results["plain"]["seconds"]  # one step with no inner steps: one forward
    rows = [["plain inference (one forward)", "-", f"{forward:.2f}", f"{results['plain']['peak_mb']:.0f}", "1.00"]]
    for name in names[1:]:
        if name in failures:
            rows.append([name, "-", f"failed ({failures[name]})", "-", "-"])
            continue
        r = results[name]
        per_inner = (r["seconds"] - forward) / args.inner_steps
        rows.append([name, f"{(r['nfe'] - 1) / args.inner_steps:g} F + {r['nbe'] / args.inner_steps:g} B",
                     f"{per_inner:.2f}", f"{r['peak_mb']:.0f}", f"{r['peak_mb'] / results['plain']['peak_mb']:.2f}"])
    setup = (f"{'SD 1.5 UNet' if getattr(args, 'unet_config', SD15_UNET) is SD15_UNET else 'UNet'}, {results['plain']['params'] / 1e6:.1f}M parameters (random weights), batch 1, latent "
             f"4x{args.size}x{args.size}, {args.dtype}, {args.device}, torch {torch.__version__}, "
             f"{describe_device(args.device)}; one process per row")
    table = format_table(["", "passes per inner step", "seconds (per inner step)", "peak MB above the model",
                          "peak vs plain"], rows)
    print(setup)
    print(table)
    if args.write_docs is not None:
        command = (f"constrained-diffusion bench-sd --size {args.size} --inner-steps {args.inner_steps} "
                   f"--device {args.device} --dtype {args.dtype}"
                   + (f" --block {args.block}" if args.block != "SD-BENCH-TABLE" else ""))
        replace_block(args.write_docs, args.block, f"```\n{command}\n```\n\n{setup}\n\n{table}")
        print(f"updated {args.write_docs}")
    return 0


__all__ = ["SD15_UNET", "add_parser", "run"]
