"""A resumable JSON-lines file of records, each identified by a key.

The long-running commands (``evaluate``, ``adaptive``, ``analyze eigvec``) append one record
per finished unit of work (a batch, a digit, a time) and skip the keys already on disk when
they are run again, so an interrupted run resumes with nothing lost or computed twice.

* Each `JsonlStore.append` writes one line, flushes it and ``fsync``s it before returning.
* A killed writer can leave a torn last line (a prefix of a record). Reading ignores it; the
  next append truncates it first, so the file stays one valid record per line.
* A key is written at most once: appending a key that is already there raises.
* The key of a record is the tuple of its ``key_fields``; a field a record lacks reads as its
  entry in ``defaults`` (so records written before a field existed keep their meaning).

Example:
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
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

Key = tuple[Hashable, ...]


class JsonlStore:
    """Records of a JSON-lines file, indexed by key; appends are durable and never duplicate a key.

    Args:
        path: the file (created, with its folder, on the first append).
        key_fields: the fields whose values identify a record.
        defaults: the value of a key field that a record does not have (default ``None``).

    Raises:
        ValueError: a line other than the last one is not a JSON object (the file is damaged
            beyond what a kill can do), naming the file and the line.
    """

    def __init__(self, path: str | Path, key_fields: Sequence[str], defaults: Mapping[str, Any] | None = None) -> None:
        if not key_fields:
            raise ValueError("key_fields must name at least one field")
        self.path = Path(path)
        self.key_fields = tuple(key_fields)
        self.defaults = dict(defaults or {})
        self._records: list[dict[str, Any]] = []
        self._index: dict[Key, dict[str, Any]] = {}
        self._valid_end = 0  # bytes up to the end of the last complete record
        self._needs_newline = False  # the last record is complete but its newline is missing
        self._size = 0
        self._scan()

    # --- reading ---------------------------------------------------------------------------
    def _scan(self) -> None:
        """(Re)read the file: every record, the offset after the last one, and a torn tail."""
        self._records, self._index = [], {}
        self._valid_end, self._needs_newline, self._size = 0, False, 0
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        self._size = len(data)
        *lines, tail = data.split(b"\n")  # ``tail``: what follows the last newline
        offset = 0
        for number, raw in enumerate(lines, start=1):
            offset += len(raw) + 1
            record = _parse(raw)
            if record is None and raw.strip():
                raise ValueError(f"{self.path}, line {number}: not a JSON object; "
                                 "only the last line can be torn by a kill, so the file needs repair")
            if record is not None:
                self._add(record)
            self._valid_end = offset
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

    # --- writing ---------------------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` as one line, flushed and fsynced; truncates a torn last line first.

        Raises:
            ValueError: a record with the same key is already stored.
            TypeError: the record is not JSON-serialisable.
        """
        record = dict(record)
        line = (json.dumps(record) + "\n").encode()
        if (self.path.stat().st_size if self.path.exists() else 0) != self._size:
            self._scan()  # someone else wrote to (or removed) the file since it was read
        key = self.key(record)
        if key in self._index:
            raise ValueError(f"{self.path} already holds a record with key {dict(zip(self.key_fields, key))}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("r+b" if self.path.exists() else "wb") as f:
            f.truncate(self._valid_end)
            f.seek(self._valid_end)
            f.write((b"\n" if self._needs_newline else b"") + line)
            f.flush()
            os.fsync(f.fileno())
            self._valid_end = self._size = f.tell()
        self._needs_newline = False
        self._add(record)


def _parse(raw: bytes) -> dict[str, Any] | None:
    """The JSON object on one line, or ``None`` (blank, torn or not an object)."""
    if not raw.strip():
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
