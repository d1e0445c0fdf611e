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

A run can also start from exported weights (``init_from``, e.g. the shipped ones): the network
and its EMA are loaded from the file and the step count continues from its ``train_steps``;
the optimiser state and the random stream start afresh.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from constrained_diffusion.denoisers.schedules import VPSchedule
from constrained_diffusion.errors import is_out_of_memory, out_of_memory
from constrained_diffusion.models.pretrained import weights_digest
from constrained_diffusion.models.unet import UNet, UNetConfig
from constrained_diffusion.models.weights import load_weights, save_weights
from constrained_diffusion.training.checkpoint import (
    TrainArgumentError,
    load_checkpoint,
    run_lock,
    save_checkpoint,
)
from constrained_diffusion.training.ema import EMA
from constrained_diffusion.utils.jsonl_store import JsonlStore

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
    """The learning rate of step ``step``: linear warm-up, then constant."""
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr


@dataclass
class RunState:
    """Everything a checkpoint holds: the network, its EMA, the optimiser and the generator.

    Attributes:
        cfg: the run's configuration.
        model: the network being trained.
        ema: the exponential moving average of its weights.
        opt: the optimiser.
        g: the CPU generator of every random draw.
        step: optimiser steps taken so far.
        loss: the mean loss of the last log interval.
        init: ``{"path", "digest"}`` of the weight file the run started from, or ``None``.
        resumed: whether the state was read from a checkpoint.
    """

    cfg: TrainConfig
    model: UNet
    ema: EMA
    opt: torch.optim.Optimizer
    g: torch.Generator
    step: int = 0
    loss: float = float("nan")
    init: dict[str, str] | None = None
    resumed: bool = False

    def checkpoint_state(self) -> dict[str, Any]:
        """The state to save: tensors, numbers and strings only."""
        state: dict[str, Any] = {"step": self.step, "loss": self.loss, "config": self.cfg.model_dump_json(),
                                 "model": self.model.state_dict(), "ema": self.ema.model.state_dict(),
                                 "optimizer": self.opt.state_dict(), "generator": self.g.get_state()}
        if self.init is not None:
            state["init_from"] = dict(self.init)
        return state


def prepare_run(cfg: TrainConfig, checkpoint: str | Path, init_from: str | Path | None = None,
                device: str | torch.device = "cpu") -> RunState:
    """Build a run's state before its first step: resumed, started from weights, or fresh.

    Args:
        cfg: the run's configuration.
        checkpoint: the run's checkpoint file; if it exists, the run resumes from it.
        init_from: a UNet weight file (``export_weights``'s, or a shipped one) to start from
            when there is no checkpoint yet. With a checkpoint it must be the file that run
            started from (then the checkpoint wins: rerunning the same command resumes).
        device: where the network lives.

    Returns:
        The state; the network is freshly initialised from ``cfg.seed`` when neither applies.

    Raises:
        ValueError: the checkpoint holds a run with a different configuration.
        TrainArgumentError: ``init_from`` is missing, does not fit ``cfg``, or differs from the
            weights the checkpoint's run started from; or ``cfg.steps`` does not exceed its steps.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = UNet(cfg.unet).to(torch.device(device))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    run = RunState(cfg, model, EMA(model, cfg.ema_decay), opt, torch.Generator(device="cpu").manual_seed(cfg.seed))
    init = _identify(Path(init_from)) if init_from is not None else None
    if Path(checkpoint).exists():
        _resume(run, Path(checkpoint), init)
    elif init is not None:
        _load_init(run, Path(init["path"]))
        run.init = init
        if run.step >= cfg.steps:
            raise TrainArgumentError("steps", f"{init['path']} was trained for {run.step} steps, at least the "
                                              f"{cfg.steps} asked for: ask for more to train it further")
    return run


def _identify(path: Path) -> dict[str, str]:
    """``{"path", "digest"}`` of a weight file to start from."""
    if not path.is_file():
        raise TrainArgumentError("init_from", f"no weight file at {path}")
    return {"path": str(path), "digest": weights_digest(path)}


def _resume(run: RunState, path: Path, init: dict[str, str] | None) -> None:
    """Load the checkpoint at ``path`` into ``run`` (its configuration and start must match)."""
    state = load_checkpoint(path)
    stored = TrainConfig.model_validate_json(state["config"])
    if stored.model_dump(exclude={"steps"}) != run.cfg.model_dump(exclude={"steps"}):
        raise ValueError(f"{path.parent} holds a run with a different configuration: {stored.model_dump_json()}")
    stored_init = state.get("init_from")
    if init is not None and (stored_init or {}).get("digest") != init["digest"]:
        origin = f"started from {stored_init['path']}" if stored_init else "trained from scratch"
        raise TrainArgumentError("init_from", f"{path} already holds a run at step {int(state['step'])} ({origin}); "
                                              "drop the flag to resume it, or train in another run directory")
    run.model.load_state_dict(state["model"])
    run.ema.model.load_state_dict(state["ema"])
    run.opt.load_state_dict(state["optimizer"])
    run.g.set_state(state["generator"])
    run.step, run.loss, run.init, run.resumed = int(state["step"]), float(state["loss"]), stored_init, True


def _load_init(run: RunState, path: Path) -> None:
    """Load a UNet weight file into the network and its EMA; the step continues from its ``train_steps``."""
    network, meta = load_weights(path)
    if not isinstance(network, UNet):
        raise TrainArgumentError("init_from", f"{path} does not hold UNet weights")
    if meta.get("kind") != run.cfg.kind:
        raise TrainArgumentError("init_from", f"{path} holds a {meta.get('kind')!r} model, this run trains {run.cfg.kind!r}")
    if network.config != run.cfg.unet:
        raise TrainArgumentError("init_from", f"{path} has the architecture {network.config.model_dump_json()}, "
                                              f"this run {run.cfg.unet.model_dump_json()}")
    run.model.load_state_dict(network.state_dict())
    run.ema.model.load_state_dict(network.state_dict())
    run.step, run.loss = int(meta.get("train_steps", "0")), float(meta.get("final_loss", "nan"))


def train(cfg: TrainConfig, data: Tensor, out_dir: str | Path, max_minutes: float | None = None,
          device: str | torch.device = "cpu", log: Callable[[str], None] = print,
          init_from: str | Path | None = None, log_path: str | Path | None = None) -> dict[str, float]:
    """Train (or resume) until ``cfg.steps`` or ``max_minutes``; checkpoint on the way and at the end.

    Args:
        cfg: the run's configuration.
        data: training images ``(N, C, H, W)`` in ``[-1, 1]``.
        out_dir: holds ``checkpoint.pt`` (and by default ``log.jsonl``); an existing run there
            is resumed.
        max_minutes: stop (with a checkpoint) after this much wall-clock time.
        device: where to train.
        log: receives one line per log interval.
        init_from: a weight file to start from when ``out_dir`` holds no checkpoint yet
            (see `prepare_run`).
        log_path: where to append the JSONL log (default ``out_dir/log.jsonl``).

    Returns:
        ``{"step": ..., "loss": ...}`` at the end of this piece.

    Raises:
        ValueError: ``out_dir`` holds a run with a different configuration.
        TrainArgumentError: see `prepare_run`; or ``log_path`` already has records past the
            start of a run that has no checkpoint to resume (it would be cut back).
        RunInUseError: another live process is training in ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_file = Path(log_path) if log_path is not None else out / LOG
    with run_lock(out), _stop_signals() as stop:
        run = prepare_run(cfg, out / CHECKPOINT, init_from, device)
        _cut_log(log_file, run)
        if run.resumed:
            log(f"resumed from step {run.step}")
        elif run.init is not None:
            log(f"starting from {run.init['path']} at step {run.step}")
        return _loop(run, data.to(torch.device(device)), out / CHECKPOINT, log_file, max_minutes, log, stop)


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


def _loop(run: RunState, data: Tensor, ckpt_path: Path, log_path: Path, max_minutes: float | None,
          log: Callable[[str], None], stop: list[int]) -> dict[str, float]:
    """The training loop from ``run.step`` to ``run.cfg.steps`` (or until time is up or a signal)."""
    cfg, model, opt = run.cfg, run.model, run.opt
    abar = VPSchedule.linear().alphas_cumprod.float()
    start, window, window_n = time.perf_counter(), 0.0, 0
    model.train()
    while run.step < cfg.steps:
        idx = torch.randint(0, data.shape[0], (cfg.batch_size,), generator=run.g)
        for group in opt.param_groups:
            group["lr"] = _lr_at(run.step, cfg)
        try:
            loss = diffusion_loss(model, data[idx.to(data.device)], cfg.kind, run.g, abar)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"training loss is {loss.item()} at step {run.step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
        except RuntimeError as exc:  # the CPU allocator's or CUDA's out of memory: name the step and the batch size
            if is_out_of_memory(exc):
                raise out_of_memory(exc, f"training step {run.step + 1} (resume from the checkpoint at step "
                                         f"{run.step - run.step % cfg.checkpoint_every})", cfg.batch_size) from exc
            raise
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        run.ema.update(model)
        run.step += 1
        window, window_n = window + loss.item(), window_n + 1
        if run.step % cfg.log_every == 0 or run.step == cfg.steps:
            run.loss = window / window_n
            _append_record(log_path, run, time.perf_counter() - start, log)
            window, window_n = 0.0, 0
        if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
            save_checkpoint(ckpt_path, run.checkpoint_state())
        out_of_time = max_minutes is not None and time.perf_counter() - start > 60 * max_minutes
        if out_of_time or stop:
            save_checkpoint(ckpt_path, run.checkpoint_state())
            reason = f"after {max_minutes} minutes" if out_of_time else f"on signal {stop[0]}"
            log(f"stopping {reason} at step {run.step} (checkpoint written); rerun the same command to resume")
            break
    return {"step": float(run.step), "loss": run.loss}


def _append_record(path: Path, run: RunState, seconds: float, log: Callable[[str], None]) -> None:
    """Append one ``{"step", "loss", "lr", "seconds"}`` line to the log and echo it."""
    record = {"step": run.step, "loss": round(run.loss, 6), "lr": _lr_at(run.step - 1, run.cfg),
              "seconds": round(seconds, 1)}
    JsonlStore(path, key_fields=("step",)).add(record)  # one whole line, locked and fsynced; a torn last line is cut first
    log(json.dumps(record))


def _cut_log(path: Path, run: RunState) -> None:
    """Drop log records after ``run.step`` (written after the last checkpoint of a crashed run).

    Raises:
        TrainArgumentError: the log has records past the start of a run without a checkpoint,
            so they belong to another run (cutting them would lose them).
    """
    if not path.exists():
        return
    try:
        store = JsonlStore(path, key_fields=("step",))  # a torn last line (a kill while logging) is ignored
    except ValueError as exc:  # damage in the middle: name the file and the line
        raise TrainArgumentError("log_path", str(exc)) from None
    steps = [r.get("step") for r in store]
    if not all(isinstance(s, int) for s in steps):
        raise TrainArgumentError("log_path", f"{path} holds records without an integer 'step': not a training log")
    late = [s for s in steps if s > run.step]
    if not late:
        return  # a torn last line is cut by the next append
    if not run.resumed:
        raise TrainArgumentError("log_path", f"{path} already has records up to step {max(late)}, but this run starts at "
                                             f"step {run.step} with no checkpoint to resume: log elsewhere or delete it")
    store.discard([(s,) for s in late])  # rewrites the file atomically: whole lines only


def export_weights(out_dir: str | Path, path: str | Path, dtype: torch.dtype | None = torch.float16) -> Path:
    """Write the run's EMA weights to a safetensors file with the training facts in its metadata.

    Args:
        out_dir: the run directory (holding ``checkpoint.pt``).
        path: the weight file to write.
        dtype: the floating-point type to store (``None``: as trained, float32).

    Returns:
        ``path``.

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
    if state.get("init_from"):
        meta["init_from"] = f"{Path(state['init_from']['path']).name} {state['init_from']['digest']}"
    return save_weights(path, model, meta, dtype=dtype)
