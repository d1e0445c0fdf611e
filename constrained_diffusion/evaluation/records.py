"""The evaluation harness's record keeping: what identifies a record, where its files live, and merging.

A run writes one JSON record per (image, method) to ``records.jsonl`` (one process) or
``records.rank<r>.jsonl`` (rank ``r`` of several), keyed by `KEY_FIELDS`, and each record's
image to ``images/<label>/<settings>/<image id>.png`` (`image_file`). A record counts as done
only when the image it names decodes (`image_ok`); `check_outputs` drops the others so that the
run computes them again. After every rank is done, `merge_records` folds the rank files into
``records.jsonl``. The harness (`constrained_diffusion.evaluation.harness`) writes records, the
report (`constrained_diffusion.evaluation.report`) reads them; both import this module, never
each other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from constrained_diffusion.utils.jsonl_store import JsonlStore, lock_path
from constrained_diffusion.utils.paths import safe_name, under

KEY_FIELDS = ("image", "method", "settings")
"""What identifies a record: the image id, the method's label and the settings hash."""

RECORDS = "records.jsonl"
"""The merged records file under the output folder."""

RANK_RECORDS = "records.rank{rank}.jsonl"
"""The records file of one process of a multi-process run (merged into `RECORDS` at the end)."""


class Keyed(Protocol):
    """What `check_outputs` needs of a method: its label and settings hash (`constrained_diffusion.evaluation.methods.Method`)."""

    label: str
    settings: str


def settings_hash(parts: Mapping[str, Any]) -> str:
    """16 hex digits of the SHA-256 of ``parts`` as sorted JSON (non-JSON values as strings).

    Examples:
        >>> settings_hash({"a": 1, "b": 2}) == settings_hash({"b": 2, "a": 1})
        True
        >>> len(settings_hash({}))
        16
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def image_file(out: Path, label: str, image_id: str, settings: str | None = None) -> Path:
    """``out/images/<label>/<settings>/<image id>.png``, every part a `safe_name` (``settings=None``: the layout before 0.x, without it).

    An id's ``/`` keeps its sub-folders (ids of image folders are relative paths); an id that
    already ends in ``.png`` (a PNG of an image folder) keeps its one extension; a part that
    `safe_name` had to change (unicode, spaces) gets 8 hex digits of its SHA-256, so two ids
    never share a file.

    Raises:
        UsageError: the path would leave ``out`` (it cannot once the parts are safe names).

    Examples:
        >>> image_file(Path("out"), "inexact-newton", "digits/7", "abc").as_posix()
        'out/images/inexact-newton/abc/digits/7.png'
        >>> image_file(Path("out"), "dps", "chats/é.png", "abc").as_posix()
        'out/images/dps/abc/chats/_-4a99557e.png'
    """
    *folders, name = str(image_id).split("/")
    stem = name[:-4] if name.lower().endswith(".png") else name
    parts = [_id_part(p) for p in folders] + [_id_part(stem) + ".png"]
    return under(out, "images", safe_name(label), *([safe_name(settings)] if settings is not None else []), *parts,
                 option="--method")


def _id_part(text: str) -> str:
    """``text`` as a file name: itself when safe, else its `safe_name` and 8 hex digits of its SHA-256."""
    name = safe_name(text)
    return name if name == text else f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def record_file(out: Path, record: Mapping[str, Any]) -> Path:
    """The image file a record names: its ``file`` (relative to ``out``), or where records without one kept it."""
    if record.get("file"):
        return under(out, str(record["file"]), option="records.jsonl")
    return image_file(out, str(record["method"]), str(record["image"]))


def image_ok(path: Path) -> bool:
    """Whether ``path`` exists and is a whole image (PIL's ``verify``: the chunks and their checksums)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
    except Exception:  # missing, empty, cut short, not an image: all mean "compute it again"
        return False
    return True


def records_files(out: Path) -> list[Path]:
    """``records.jsonl`` and any per-rank files of an earlier or running multi-process run."""
    return [out / RECORDS, *sorted(out.glob("records.rank*.jsonl"))]


def records_store(out: Path, rank: int = 0, world: int = 1) -> JsonlStore:
    """The records file this process appends to: `RECORDS` alone, `RANK_RECORDS` of ``rank`` among several."""
    return JsonlStore(out / (RECORDS if world == 1 else RANK_RECORDS.format(rank=rank)), KEY_FIELDS)


def done_keys(out: Path) -> set[tuple]:
    """The keys recorded in any records file under ``out``."""
    keys: set[tuple] = set()
    for path in records_files(out):
        if path.exists():
            keys |= JsonlStore(path, KEY_FIELDS).done_keys()
    return keys


def check_outputs(out: Path, methods: Iterable[Keyed], ids: list[str]) -> int:
    """Drop the records of ``methods`` on ``ids`` whose image is missing or does not decode (`image_ok`); returns how many.

    A kill from before the writes were atomic, a full disk or a hand-deleted file leaves such a
    record; dropping it makes the run compute the image (and its record) again.
    """
    wanted = {(i, m.label, m.settings) for m in methods for i in ids}
    dropped = 0
    for path in records_files(out):
        if not path.exists():
            continue
        store = JsonlStore(path, KEY_FIELDS)
        bad = [store.key(r) for r in store if store.key(r) in wanted and not image_ok(record_file(out, r))]
        dropped += store.discard(bad) if bad else 0
    return dropped


def merge_records(out: Path) -> int:
    """Append the per-rank records missing from ``records.jsonl``, then remove the rank files; returns how many."""
    store = JsonlStore(out / RECORDS, KEY_FIELDS)
    added = 0
    for path in sorted(out.glob("records.rank*.jsonl")):
        for record in JsonlStore(path, KEY_FIELDS):
            added += store.add(record)
        path.unlink()
        lock_path(path).unlink(missing_ok=True)  # every rank is done (merge runs after the barrier): nobody waits on it
    return added


def run_records(out: Path, methods: Iterable[Keyed], ids: Iterable[str]) -> list[dict[str, Any]]:
    """The records of ``records.jsonl`` made by ``methods`` (label and settings) on ``ids``, in file order."""
    wanted = {(m.label, m.settings) for m in methods}
    idset = set(ids)
    return [r for r in JsonlStore(out / RECORDS, KEY_FIELDS) if (r["method"], r["settings"]) in wanted and r["image"] in idset]
