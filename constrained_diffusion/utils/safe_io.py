"""One safe writer for every file the package persists: temporary file, flush, ``fsync``, rename.

A reader (or a rerun after ``kill -9``) sees either the old file or the new one, never a file
cut short: `atomic_write` writes to a temporary file in the same folder (same file system),
flushes and ``fsync``\\ s it, then ``os.replace``\\ s it over the target (atomic on POSIX and
Windows) and ``fsync``\\ s the folder. A failure removes the temporary file and leaves the old
target as it was. Every writer below goes through it:

* `write_bytes`, `write_text`, `write_json`: bytes, text, JSON;
* `save_image`: a PIL image (format from the suffix);
* `save_figure`: a matplotlib figure (``savefig``);
* `save_torch`: a ``torch.save`` checkpoint; `save_safetensors`: a safetensors weight file.

An ``OSError`` of the target (its folder is a file, it is a folder, no permission, disk full) is
raised as `constrained_diffusion.errors.OutputError`, one line naming the path and the fault.

Examples:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "sub" / "summary.json"
    >>> write_json(path, {"psnr": 17.5})
    PosixPath('...summary.json')
    >>> path.read_text()
    '{\\n "psnr": 17.5\\n}'
    >>> sorted(p.name for p in path.parent.iterdir())  # no temporary file left behind
    ['summary.json']
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from constrained_diffusion.errors import OutputError, output_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()  # what open() would give a new file


def ensure_folder(path: str | os.PathLike[str], option: str | None = None) -> Path:
    """Create the folder ``path`` (and its parents); an `OutputError` naming it (and ``option``) if that fails.

    Raises:
        OutputError: ``path`` is a file, a path above it is a file, or it cannot be created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option + ': ' if option else ''}{path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, path, option) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"{option + ': ' if option else ''}cannot write in {path}: permission denied")
    return path


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path`` durably.

    Args:
        path: the target file; its folder is created.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).

    Raises:
        OutputError: the target cannot be written (the message names it and the fault).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"cannot write {path}: it is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise output_error(exc, path) from None
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise output_error(exc, path) from exc
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], value: Any, indent: int | None = 1, default: Callable[[Any], Any] | None = None) -> Path:
    """Write ``value`` as JSON to ``path`` atomically; returns the path."""
    return write_text(path, json.dumps(value, indent=indent, default=default))


def save_image(path: str | os.PathLike[str], image: Any, **options: Any) -> Path:
    """Save a PIL ``image`` to ``path`` atomically (the format from the suffix, e.g. ``.png``); returns the path."""
    from PIL import Image

    suffix = Path(path).suffix.lower()
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise ValueError(f"{path}: unknown image format {suffix!r}")
    with atomic_write(path, "wb") as f:
        image.save(f, format=fmt, **options)
    return Path(path)


def save_figure(path: str | os.PathLike[str], figure: Any, **options: Any) -> Path:
    """``figure.savefig`` to ``path`` atomically (the format from the suffix); returns the path."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format=fmt, **options)
    return Path(path)


def save_torch(path: str | os.PathLike[str], state: Any) -> Path:
    """``torch.save(state)`` to ``path`` atomically; returns the path."""
    import torch

    with atomic_write(path, "wb") as f:
        torch.save(state, f)
    return Path(path)


def save_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> Path:
    """A safetensors file of ``tensors`` (with ``metadata``) at ``path``, atomically; returns the path."""
    from safetensors.torch import save

    return write_bytes(path, save(dict(tensors), metadata=dict(metadata) if metadata is not None else None))


__all__ = ["OutputError", "atomic_write", "ensure_folder", "save_figure", "save_image", "save_safetensors", "save_torch",
           "write_bytes", "write_json", "write_text"]
