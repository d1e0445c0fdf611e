"""Train a diffusion (DDPM, epsilon) or rectified-flow (velocity) UNet; checkpoint and resume.

Objectives, with ``x0`` a training image and ``eps ~ N(0, I)``:

* ``"ddpm"`` (Ho et al., 2020): ``t ~ U{0..T-1}``, ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``,
  loss ``||eps_hat(x_t, t) - eps||^2`` with DDPM's linear betas ``1e-4 .. 2e-2``, ``T = 1000``.
* ``"flow"`` (Liu et al., 2023): ``s ~ U(0, 1)``, ``x_s = (1 - s) x0 + s eps``, loss
  ``||v_hat(x_s, 1000 s) - (eps - x0)||^2``.

Every random draw (batch indices, times, noise) comes from one seeded generator whose state is
checkpointed, so a run interrupted and resumed gives the same weights as an uninterrupted one.
The log (``log.jsonl``) is cut back to the checkpoint on resume: nothing lost, nothing twice.
SIGTERM or SIGINT (Ctrl-C) ends the run after the current step with a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from constrained_diffusion.denoisers.schedules import VPSchedule
from constrained_diffusion.models.unet import UNet, UNetConfig
from constrained_diffusion.models.weights import save_weights
from constrained_diffusion.training.checkpoint import load_checkpoint, run_lock, save_checkpoint
from constrained_diffusion.training.ema import EMA

Kind = Literal["ddpm", "flow"]
CHECKPOINT, LOG = "checkpoint.pt", "log.jsonl"


class TrainConfig(BaseModel):
    """A training run; stored in its checkpoint, which a resumed run must match."""

    model_config = ConfigDict(extra="forbid")
    kind: Kind = "ddpm"
    unet: UNetConfig = Field(default_factory=lambda: UNetConfig(base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1))
    steps: int = Field(10_000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(4e-4, gt=0)
    warmup: int = Field(200, ge=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    log_every: int = Field(50, ge=1)
    checkpoint_every: int = Field(250, ge=1)


def diffusion_loss(model: UNet, x0: Tensor, kind: Kind, g: torch.Generator, abar: Tensor) -> Tensor:
    """One Monte-Carlo estimate of the training objective on the batch ``x0`` ``(B, C, H, W)``.

    The draws come from ``g`` on its own device and are then moved to ``x0``'s, so a CPU
    generator drives a GPU run and the random stream does not depend on where training runs.
    """
    B = x0.shape[0]
    eps = torch.randn(x0.shape, generator=g, device=g.device).to(x0.device)
    if kind == "ddpm":
        t = torch.randint(0, abar.numel(), (B,), generator=g, device=g.device).to(x0.device)
        a = abar.to(x0.device)[t].view(B, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        return (model(x_t, t) - eps).pow(2).mean()
    s = torch.rand(B, generator=g, device=g.device).to(x0.device)
    x_s = (1 - s.view(B, 1, 1, 1)) * x0 + s.view(B, 1, 1, 1) * eps
    return (model(x_s, 1000.0 * s) - (eps - x0)).pow(2).mean()


def _lr_at(step: int, cfg: TrainConfig) -> float:
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr


def train(cfg: TrainConfig, data: Tensor, out_dir: str | Path, max_minutes: float | None = None,
          device: str | torch.device = "cpu", log: Callable[[str], None] = print) -> dict[str, float]:
    """Train (or resume) until ``cfg.steps`` or ``max_minutes``; checkpoint on the way and at the end.

    Args:
        cfg: the run's configuration.
        data: training images ``(N, C, H, W)`` in ``[-1, 1]``.
        out_dir: holds ``checkpoint.pt`` and ``log.jsonl``; an existing run there is resumed.
        max_minutes: stop (with a checkpoint) after this much wall-clock time.
        device: where to train.
        log: receives one line per log interval.

    Returns:
        ``{"step": ..., "loss": ...}`` at the end of this piece.

    Raises:
        ValueError: ``out_dir`` holds a run with a different configuration.
        RunInUseError: another live process is training in ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out), _stop_signals() as stop:
        return _train(cfg, data, out, max_minutes, torch.device(device), log, stop)


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """Collect SIGTERM/SIGINT instead of dying, so the loop can checkpoint and stop cleanly."""
    requested: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {sig: signal.signal(sig, lambda signum, _frame: requested.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train(cfg: TrainConfig, data: Tensor, out: Path, max_minutes: float | None, device: torch.device,
           log: Callable[[str], None], stop: list[int]) -> dict[str, float]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = UNet(cfg.unet).to(device)
    ema = EMA(model, cfg.ema_decay)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    step, last_loss = 0, float("nan")
    ckpt_path, log_path = out / CHECKPOINT, out / LOG
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        stored = TrainConfig.model_validate_json(state["config"])
        if stored.model_dump(exclude={"steps"}) != cfg.model_dump(exclude={"steps"}):
            raise ValueError(f"{out} holds a run with a different configuration: {stored.model_dump_json()}")
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        opt.load_state_dict(state["optimizer"])
        g.set_state(state["generator"])
        step, last_loss = int(state["step"]), float(state["loss"])
        log(f"resumed from step {step}")
    _truncate_log(log_path, step)

    abar = VPSchedule.linear().alphas_cumprod.float()
    data = data.to(device)
    start, window, window_n = time.perf_counter(), 0.0, 0

    def checkpoint() -> None:
        save_checkpoint(ckpt_path, {"step": step, "loss": last_loss, "config": cfg.model_dump_json(),
                                    "model": model.state_dict(), "ema": ema.model.state_dict(),
                                    "optimizer": opt.state_dict(), "generator": g.get_state()})

    model.train()
    while step < cfg.steps:
        idx = torch.randint(0, data.shape[0], (cfg.batch_size,), generator=g)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        loss = diffusion_loss(model, data[idx.to(device)], cfg.kind, g, abar)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss is {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema.update(model)
        step += 1
        window += loss.item()
        window_n += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            last_loss = window / window_n
            record = {"step": step, "loss": round(last_loss, 6), "lr": _lr_at(step - 1, cfg),
                      "seconds": round(time.perf_counter() - start, 1)}
            with log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            log(json.dumps(record))
            window, window_n = 0.0, 0
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()
        out_of_time = max_minutes is not None and time.perf_counter() - start > 60 * max_minutes
        if out_of_time or stop:
            checkpoint()
            reason = f"after {max_minutes} minutes" if out_of_time else f"on signal {stop[0]}"
            log(f"stopping {reason} at step {step} (checkpoint written); rerun the same command to resume")
            break
    return {"step": float(step), "loss": last_loss}


def _truncate_log(path: Path, step: int) -> None:
    """Drop log records after ``step`` (written after the last checkpoint of a crashed run)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    kept = [ln for ln in lines if json.loads(ln)["step"] <= step]
    if len(kept) != len(lines):
        path.write_text("".join(ln + "\n" for ln in kept))


def export_weights(out_dir: str | Path, path: str | Path, dtype: torch.dtype | None = torch.float16) -> Path:
    """Write the run's EMA weights to a safetensors file with the training facts in its metadata.

    Raises:
        FileNotFoundError: ``out_dir`` holds no checkpoint yet.
    """
    ckpt = Path(out_dir) / CHECKPOINT
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint in {out_dir} yet (one is written every checkpoint_every steps)")
    state = load_checkpoint(ckpt)
    cfg = TrainConfig.model_validate_json(state["config"])
    model = UNet(cfg.unet)
    model.load_state_dict(state["ema"])
    meta = {"kind": cfg.kind, "train_steps": str(int(state["step"])), "final_loss": f"{float(state['loss']):.6f}",
            "batch_size": str(cfg.batch_size), "ema_decay": str(cfg.ema_decay), "train_config": cfg.model_dump_json()}
    return save_weights(path, model, meta, dtype=dtype)
