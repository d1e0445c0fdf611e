"""Peak memory of a block of code: CUDA allocator statistics, or sampled resident memory on CPU.

On CUDA the figure is ``torch.cuda.max_memory_allocated`` above the level at entry. On Linux
CPUs a background thread samples the process's resident set size (``/proc/self/statm``) every
``interval`` seconds and reports the peak above the level at entry; elsewhere it is NaN.

glibc keeps freed memory resident and reuses it, so a second block in the same process would
read close to zero although it needs as much memory as the first. On entry the CPU path calls
``malloc_trim(0)`` (where glibc provides it), which hands freed pages back to the kernel, so
every block starts from the same footing and consecutive rows of a table are comparable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
from types import TracebackType

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _malloc_trim() -> None:
    """Return freed heap pages to the kernel (glibc only; a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    try:
        trim = getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:  # pragma: no cover - no loadable C library
        return
    if trim is not None:
        trim(0)


def _rss_bytes() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - not Linux
        return float("nan")


class PeakMemory:
    """``with PeakMemory(device) as peak: ...`` then ``peak.megabytes``."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.002) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.megabytes = float("nan")
        self._stop = threading.Event()
        self._peak = 0.0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _malloc_trim()
            self._base = _rss_bytes()
            self._peak = self._base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.megabytes = (peak - self._base) / 2**20
