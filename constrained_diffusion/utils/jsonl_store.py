"""A resumable JSON-lines file of records, each identified by a key, safe for several processes.

The long-running commands (``evaluate``, ``compare``, ``adaptive``, ``analyze eigvec``) append
one record per finished unit of work (a batch, a digit, a time) and skip the keys already on
disk when they are run again, so an interrupted run resumes with nothing lost or computed twice.

* Each `JsonlStore.append` holds an inter-process lock (``filelock`` on ``<file>.lock`` next to
  the file) while it re-reads what other processes appended, checks the key, and writes the
  whole line in one ``write`` call, flushed and ``fsync``\\ ed. Two processes appending to one
  store therefore never lose, interleave or duplicate a record.
* A killed writer can leave a torn last line (a prefix of a record). Reading ignores it; the
  next append truncates it first (under the lock), so the file stays one valid record per line.
* A reader takes no lock; it can only ever see a torn *last* line (a write in progress), which
  it ignores. Damage in the middle of the file is re-checked under the lock before it is an error.
* A key is written at most once: appending a key that is already there raises.
* The key of a record is the tuple of its ``key_fields``; a field a record lacks reads as its
  entry in ``defaults`` (so records written before a field existed keep their meaning).

Examples:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "runs.jsonl"
    >>> store = JsonlStore(path, key_fields=("task", "digit"))
    >>> store.append({"task": "box", "digit": 0, "psnr": 17.0})
    >>> ("box", 0) in store, ("box", 1) in store
    (True, False)
    >>> len(JsonlStore(path, key_fields=("task", "digit")))  # a rerun sees the record
    1
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

Key = tuple[Hashable, ...]

LOCK_TIMEOUT = 300.0
"""Seconds an append waits for another process's append before it gives up (an append takes milliseconds)."""


def lock_path(path: str | Path) -> Path:
    """The lock file of the store at ``path``: ``<path>.lock`` in the same folder."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


class JsonlStore:
    """Records of a JSON-lines file, indexed by key; appends are locked, durable and never duplicate a key.

    Args:
        path: the file (created, with its folder, on the first append).
        key_fields: the fields whose values identify a record.
        defaults: the value of a key field that a record does not have (default ``None``).

    Raises:
        ValueError: a line other than the last one is not a JSON object (the file is damaged
            beyond what a kill can do), naming the file and the line; or ``path`` is a folder.
    """

    def __init__(self, path: str | Path, key_fields: Sequence[str], defaults: Mapping[str, Any] | None = None) -> None:
        if not key_fields:
            raise ValueError("key_fields must name at least one field")
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self.defaults = dict(defaults or {})
        self._lock = FileLock(str(lock_path(self.path)), timeout=LOCK_TIMEOUT)
        self._reset()
        self._refresh()
        if self._needs_newline:
            self._complete_last_line()

    def _complete_last_line(self) -> None:
        """Under the lock, add the newline a kill left off the last (complete) record; a read-only file stays as it is."""
        try:
            with self._lock:
                self._reset()
                self._refresh()  # under the lock no append is half-written: the record really ends there
                if not self._needs_newline:
                    return
                fd = os.open(self.path, os.O_RDWR)
                try:
                    os.ftruncate(fd, self._valid_end)
                    os.lseek(fd, self._valid_end, os.SEEK_SET)
                    os.write(fd, b"\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self._reset()
                self._refresh()
        except (OSError, Timeout):
            pass  # a reader without write access: the next append adds the newline

    # --- reading ---------------------------------------------------------------------------
    def _reset(self) -> None:
        self._records: list[dict[str, Any]] = []
        self._index: dict[Key, dict[str, Any]] = {}
        self._clean_end = 0  # bytes up to (and with) the last newline
        self._valid_end = 0  # bytes up to the end of the last complete record
        self._needs_newline = False  # the last record is complete but its newline is missing
        self._lines = 0  # newline-terminated lines read
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file read

    def _refresh(self) -> None:
        """Read what was appended since the last read (all of it when the file was replaced or cut)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._reset()
            return
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a folder, not a records file")
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._identity or stat.st_size < self._valid_end:
            self._reset()  # a new or rewritten file: read it all
        try:
            self._scan(identity)
        except _Damaged as damage:
            if not self._recheck_under_lock(identity):
                raise ValueError(f"{self.path}, line {damage.line}: not a JSON object; "
                                 "only the last line can be torn by a kill, so the file needs repair") from None

    def _recheck_under_lock(self, identity: tuple[int, int]) -> bool:
        """Read again under the lock (a writer may have been cutting a torn line); whether it is now clean."""
        try:
            with self._lock:
                self._reset()
                self._scan(identity)
        except (_Damaged, OSError, Timeout):
            return False
        return True

    def _scan(self, identity: tuple[int, int]) -> None:
        """Parse the bytes after ``_clean_end``: records, the offset after the last one, a torn tail."""
        with self.path.open("rb") as f:
            f.seek(self._clean_end)
            data = f.read()
        self._identity = identity
        *lines, tail = data.split(b"\n")  # ``tail``: what follows the last newline
        offset, number = self._clean_end, self._lines
        self._needs_newline = False
        for raw in lines:
            offset += len(raw) + 1
            number += 1
            record = _parse(raw)
            if record is None and raw.strip():
                raise _Damaged(number)
            if record is not None:
                self._add(record)
            self._valid_end = self._clean_end = offset
            self._lines = number
        record = _parse(tail)
        if record is not None:  # complete, but the kill came before its newline
            self._add(record)
            self._valid_end, self._needs_newline = offset + len(tail), True
        # anything else in ``tail`` is a torn record: ignored here, truncated by the next append

    def _add(self, record: dict[str, Any]) -> None:
        key = self.key(record)
        if key not in self._index:  # files written before the store could repeat a key: the first wins
            self._index[key] = record
            self._records.append(record)

    def key(self, record: Mapping[str, Any]) -> Key:
        """The key of ``record``: its ``key_fields`` values, ``defaults`` for missing ones."""
        return tuple(record.get(f, self.defaults.get(f)) for f in self.key_fields)

    def __contains__(self, key: object) -> bool:
        """``key`` (a tuple of ``key_fields`` values, or a record) is already stored."""
        if isinstance(key, Mapping):
            key = self.key(key)
        return key in self._index

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._records))

    def get(self, key: Key) -> dict[str, Any] | None:
        """The record stored under ``key``, or ``None``."""
        return self._index.get(tuple(key))

    def done_keys(self) -> set[Key]:
        """The keys of every stored record."""
        return set(self._index)

    def records(self, **match: Any) -> list[dict[str, Any]]:
        """Stored records (in file order) whose fields equal ``match`` (``defaults`` for missing ones)."""
        return [r for r in self._records if all(r.get(f, self.defaults.get(f)) == v for f, v in match.items())]

    def reload(self) -> None:
        """Read the records other processes appended since this store last read the file."""
        self._refresh()

    # --- writing ---------------------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` as one line under the store's lock, flushed and fsynced; truncates a torn last line first.

        Raises:
            ValueError: a record with the same key is already stored (by this or another process).
            TypeError: the record is not JSON-serialisable.
            OSError: the file cannot be written (the message names it).
        """
        record = dict(record)
        line = (json.dumps(record) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._lock:
                self._refresh()  # under the lock: everything every other process has appended
                key = self.key(record)
                if key in self._index:
                    raise ValueError(f"{self.path} already holds a record with key {dict(zip(self.key_fields, key))}")
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    os.ftruncate(fd, self._valid_end)
                    os.lseek(fd, self._valid_end, os.SEEK_SET)
                    data = (b"\n" if self._needs_newline else b"") + line
                    if os.write(fd, data) != len(data):
                        raise OSError(f"{self.path}: short write (disk full?)")
                    os.fsync(fd)
                    stat = os.fstat(fd)
                finally:
                    os.close(fd)
                self._valid_end = self._clean_end = self._valid_end + len(data)
                self._lines += 1 + (1 if self._needs_newline else 0)
                self._needs_newline = False
                self._identity = (stat.st_dev, stat.st_ino)
                self._add(record)
        except Timeout:
            raise OSError(f"{lock_path(self.path)}: another process has held the store's lock for {LOCK_TIMEOUT:.0f} s") from None

    def add(self, record: Mapping[str, Any]) -> bool:
        """`append` ``record`` unless its key is already stored (by this or another process); whether it was written."""
        try:
            self.append(record)
        except ValueError:
            if self.key(record) in self._index:
                return False
            raise
        return True

    def discard(self, keys: Collection[Key]) -> int:
        """Remove the records under ``keys`` (every line of each), under the lock; returns how many lines went.

        The other lines are kept byte for byte (a torn last line is dropped) and the file is
        replaced atomically, so a reader sees the old file or the new one. Used when an output a
        record names is missing or damaged, so that the record is computed again.
        """
        from constrained_diffusion.utils.safe_io import write_bytes

        wanted = {tuple(k) for k in keys}
        if not wanted or not self.path.exists():
            return 0
        try:
            with self._lock:
                lines = self.path.read_bytes().split(b"\n")
                kept, dropped = [], 0
                for raw in lines:
                    record = _parse(raw)
                    if record is None:
                        continue
                    if self.key(record) in wanted:
                        dropped += 1
                    else:
                        kept.append(raw + b"\n")
                if dropped:
                    write_bytes(self.path, b"".join(kept))
                self._reset()
                self._refresh()
        except Timeout:
            raise OSError(f"{lock_path(self.path)}: another process has held the store's lock for {LOCK_TIMEOUT:.0f} s") from None
        return dropped


class _Damaged(Exception):
    """A line other than the last one is not a JSON object."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The JSON object on one line, or ``None`` (blank, torn or not an object)."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
