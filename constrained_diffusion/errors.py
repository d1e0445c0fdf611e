"""The exceptions the package raises for what a user can fix (the command line prints them as one line).

* `UsageError`: a bad argument, option or input file; a ``ValueError``, so library callers that
  catch ``ValueError`` keep working.
* `OutputError`: an output path that cannot be written (it exists as a file where a folder is
  needed, it is a folder where a file is needed, it is not writable, the disk is full); an
  ``OSError`` whose message names the path and what is wrong.
* `OutOfMemoryError`: a batch did not fit in memory; the message names the batch and suggests a
  smaller ``--batch-size``.

The command line (``constrained_diffusion.cli.main``) turns these, pydantic's
``ValidationError`` and other ``ValueError``\\ s into one line on stderr and exit status 2. Any
other exception (a ``TypeError`` from a bug, say) keeps its traceback.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class UsageError(ValueError):
    """A bad argument, option or input that the user can fix; the message names it."""


class OutputError(OSError):
    """An output path that cannot be written; the message names the path and what is wrong."""

    def __str__(self) -> str:  # OSError's default adds "[Errno n]"; keep the message as written
        return str(self.args[0]) if self.args else "cannot write the output"


class OutOfMemoryError(RuntimeError):
    """A batch did not fit in memory; the message names the batch and suggests a smaller ``--batch-size``."""


_REASONS = {
    errno.ENOTDIR: "a path above it is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EEXIST: "it exists and is not a folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.ENAMETOOLONG: "the name is too long",
}


def output_error(exc: OSError, path: str | os.PathLike[str], option: str | None = None) -> OutputError:
    """An `OutputError` for ``exc`` raised while writing ``path``: one line naming the path (and ``option``).

    Examples:
        >>> import errno
        >>> str(output_error(NotADirectoryError(errno.ENOTDIR, "Not a directory"), "/etc/hosts/out", "--out"))
        '--out: cannot write /etc/hosts/out: a path above it is a file, not a folder'
    """
    if isinstance(exc, OutputError):
        return exc
    reason = _REASONS.get(exc.errno or -1) or exc.strerror or str(exc)
    where = exc.filename if exc.filename is not None and Path(exc.filename) != Path(path) and exc.errno != errno.ENOTDIR else None
    text = f"cannot write {path}" + (f" ({where})" if where else "") + f": {reason}"
    error = OutputError(f"{option}: {text}" if option else text)
    error.errno, error.filename = exc.errno, str(path)
    return error


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: CUDA's ``OutOfMemoryError`` or the CPU allocator's ``RuntimeError``.

    Examples:
        >>> is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
        True
        >>> is_out_of_memory(RuntimeError("shape mismatch"))
        False
    """
    if isinstance(exc, (MemoryError, OutOfMemoryError)):
        return True
    if type(exc).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError (and torch.OutOfMemoryError)
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(s in text for s in ("out of memory", "can't allocate memory", "defaultcpuallocator", "failed to allocate"))
    return False


def out_of_memory(exc: BaseException | None, batch: str, batch_size: int | None = None) -> OutOfMemoryError:
    """An `OutOfMemoryError` naming ``batch`` (e.g. ``"images 0..63 of method dps"``) and suggesting a smaller batch size.

    The allocator's own text (sizes, addresses) is left out: it is long and says nothing the user can act on.

    Examples:
        >>> str(out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory"), "images 0-3", 4))
        'out of memory on images 0-3 (batch size 4); try a smaller --batch-size, e.g. --batch-size 2'
    """
    hint = f"; try a smaller --batch-size, e.g. --batch-size {max(1, batch_size // 2)}" if batch_size and batch_size > 1 else (
        "; --batch-size is already 1: use a smaller model, a lower resolution or another device" if batch_size == 1 else
        "; try a smaller --batch-size")
    size = f" (batch size {batch_size})" if batch_size else ""
    return OutOfMemoryError(f"out of memory on {batch}{size}{hint}")
