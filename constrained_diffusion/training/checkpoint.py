"""Atomic, unpickle-free checkpoints of a training run.

A checkpoint is written to a temporary file and renamed over the old one, so a crash while
saving leaves the previous checkpoint intact. It is read with ``torch.load(weights_only=True)``,
which restores tensors, numbers, strings and containers and refuses arbitrary objects.

Checkpoints are not part of the repository: by default a run lives in
``$CONSTRAINED_DIFFUSION_HOME/runs/<name>``, with ``CONSTRAINED_DIFFUSION_HOME`` defaulting to
``~/.cache/constrained_diffusion`` (see `default_run_dir`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from constrained_diffusion.utils.safe_io import save_torch, write_text

HOME_ENV = "CONSTRAINED_DIFFUSION_HOME"
RUN_LOCK = ".run.lock"
"""The file that ``run_lock`` locks (it stays in the run directory, empty)."""


def runs_home() -> Path:
    """The folder that holds the training runs: ``$CONSTRAINED_DIFFUSION_HOME/runs``.

    ``CONSTRAINED_DIFFUSION_HOME`` defaults to ``~/.cache/constrained_diffusion``, outside any
    checkout, so checkpoints never end up in git.
    """
    home = os.environ.get(HOME_ENV)
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "constrained_diffusion"
    return base / "runs"


def default_run_dir(name: str) -> Path:
    """The default run directory of a model, e.g. ``default_run_dir("mnist-ddpm")``."""
    return runs_home() / name


class TrainArgumentError(ValueError):
    """A bad argument to a training function; ``argument`` names the parameter at fault.

    The command line maps ``argument`` to its flag (``init_from`` to ``--init-from``), so the
    error names what to change.
    """

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (`constrained_diffusion.utils.safe_io`: temporary file, fsync, rename).

    Args:
        path: the checkpoint file; its folder is created.
        state: tensors, numbers, strings and containers of them.
    """
    save_torch(path, state)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint` (``weights_only=True``: no unpickling of code).

    Args:
        path: the checkpoint file.

    Returns:
        The saved state, on the CPU.
    """
    return torch.load(Path(path), map_location="cpu", weights_only=True)


class RunInUseError(RuntimeError):
    """Another live process is training in the same run directory."""


def _alive(pid: int) -> bool:
    """Whether a process with id ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def run_lock(directory: str | Path) -> Iterator[None]:
    """Hold the run ``directory`` while training: one process at a time, atomically.

    The lock is an operating-system file lock (``filelock``) on ``directory/.run.lock``: of two
    processes that start together exactly one gets it, and the kernel releases it when its
    holder dies, even by ``kill -9``. The holder writes its pid to ``directory/LOCK`` (removed
    on exit) so that the refusal can name it; a ``LOCK`` naming a live process that is not
    ours (an older version's lock) is also refused, one left by a process that died is taken over.

    Raises:
        RunInUseError: another live process holds the run.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pid_file = directory / "LOCK"
    lock = FileLock(str(directory / RUN_LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunInUseError(f"{directory} is in use by a running training process (pid {_read_pid(pid_file) or 'unknown'})") from None
    try:
        pid = _read_pid(pid_file)
        if pid and pid != os.getpid() and _alive(pid):
            raise RunInUseError(f"{directory} is in use by a running training process (pid {pid})")
        write_text(pid_file, str(os.getpid()))
        try:
            yield
        finally:
            pid_file.unlink(missing_ok=True)
    finally:
        lock.release()  # the lock file stays: removing it would let a third process lock a new file beside a waiter


def _read_pid(path: Path) -> int:
    """The pid in ``path``, 0 if it is missing or not a number."""
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
