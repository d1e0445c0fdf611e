"""The resumable JSON-lines store: durable appends, a torn last line after a kill, no duplicate keys."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from constrained_diffusion.utils.jsonl_store import JsonlStore

_records = st.lists(
    st.fixed_dictionaries({"id": st.integers(0, 8), "task": st.sampled_from(["box", "sr4"]),
                           "value": st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=6)}),
    max_size=12)


def _run(path: Path, records: list[dict]) -> JsonlStore:
    """What a resumable job does: skip the finished keys, append the rest one at a time."""
    store = JsonlStore(path, key_fields=("task", "id"))
    for r in records:
        if r not in store:
            store.append(r)
    return store


def _unique(records: list[dict]) -> list[dict]:
    seen, out = set(), []
    for r in records:
        if (r["task"], r["id"]) not in seen:
            seen.add((r["task"], r["id"]))
            out.append(r)
    return out


@given(records=_records, cut=st.floats(0.0, 1.0))
@example(records=[{"id": 0, "task": "box", "value": 0.0}], cut=0.984375)  # cut just before the last newline
def test_a_kill_at_any_byte_keeps_every_complete_record_once_and_a_rerun_adds_the_rest(records, cut):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.jsonl"
        _run(path, records)
        full = path.read_bytes() if path.exists() else b""
        assert [json.loads(line) for line in full.decode().splitlines()] == _unique(records)
        offset = int(cut * len(full))
        path.write_bytes(full[:offset])  # kill -9 while writing: the file ends anywhere
        complete = [json.loads(line) for line in full[:offset].decode().split("\n")
                    if line and _is_json(line)]
        assert JsonlStore(path, key_fields=("task", "id")).records() == complete
        store = _run(path, records)  # the rerun
        assert store.records() == _unique(records)
        assert path.read_bytes() == full  # every line valid, each key once, same order


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def test_torn_last_line_is_ignored_then_overwritten(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 0, "v": 1}\n{"id": 1, "v": 2}\n{"id": 2, "v"')
    store = JsonlStore(path, key_fields=("id",))
    assert [r["id"] for r in store] == [0, 1] and (2,) not in store and (1,) in store
    assert path.read_text().endswith('"v"')  # reading alone does not touch the file
    store.append({"id": 2, "v": 3})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"id": 0, "v": 1}, {"id": 1, "v": 2}, {"id": 2, "v": 3}]


def test_complete_last_record_without_newline_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 0}\n{"id": 1}')
    store = JsonlStore(path, key_fields=("id",))
    assert len(store) == 2
    store.append({"id": 2})
    assert path.read_text() == '{"id": 0}\n{"id": 1}\n{"id": 2}\n'


def test_duplicate_key_is_refused_and_defaults_fill_missing_fields(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 0, "device": "cuda"}\n{"id": 0}\n')  # an old record without a device
    store = JsonlStore(path, key_fields=("id", "device"), defaults={"device": "cpu"})
    assert store.done_keys() == {(0, "cuda"), (0, "cpu")}
    assert store.records(device="cpu") == [{"id": 0}]
    assert store.get((0, "cpu")) == {"id": 0} and store.get((1, "cpu")) is None
    with pytest.raises(ValueError, match="already holds"):
        store.append({"id": 0, "device": "cpu"})
    assert len(path.read_text().splitlines()) == 2


def test_damage_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"id": 0}\n{"id": 1\n{"id": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        JsonlStore(path, key_fields=("id",))


def test_sees_records_another_writer_appended(tmp_path):
    path = tmp_path / "r.jsonl"
    first = JsonlStore(path, key_fields=("id",))
    first.append({"id": 0})
    JsonlStore(path, key_fields=("id",)).append({"id": 1})
    with pytest.raises(ValueError, match="already holds"):
        first.append({"id": 1})
    first.append({"id": 2})
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [0, 1, 2]


def test_a_file_removed_behind_the_store_is_started_afresh(tmp_path):
    path = tmp_path / "r.jsonl"
    store = JsonlStore(path, key_fields=("id",))
    store.append({"id": 0})
    path.unlink()
    store.append({"id": 1})
    assert path.read_text() == '{"id": 1}\n' and (0,) not in store


def test_fsync_after_every_append(tmp_path, monkeypatch):
    import constrained_diffusion.utils.jsonl_store as module

    synced: list[int] = []
    monkeypatch.setattr(module.os, "fsync", lambda fd: synced.append(fd))
    store = JsonlStore(tmp_path / "r.jsonl", key_fields=("id",))
    store.append({"id": 0})
    store.append({"id": 1})
    assert len(synced) == 2


@pytest.mark.parametrize("name", ["adaptive-study.jsonl", "eigvec.jsonl", "mnist-evaluation-h100.jsonl",
                                  "mnist-evaluation-cpu-check.jsonl", "newton-eval.jsonl"])
def test_the_shipped_run_files_stay_readable(name):
    from constrained_diffusion.analysis.experiment import KEY_FIELDS as EIGVEC_KEY
    from constrained_diffusion.evaluation.adaptive import study_store
    compare_key = ("setting", "model", "weights", "task", "solver", "budget", "start")  # compare's records before 0.2

    path = Path(__file__).resolve().parents[1] / "runs" / name
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    store = (study_store(path) if name.startswith("adaptive") else JsonlStore(path, EIGVEC_KEY) if name.startswith("eigvec")
             else JsonlStore(path, compare_key, defaults=dict.fromkeys(compare_key, "")))
    assert len(store) == len(path.read_text().splitlines())  # every record, each under its own key


_WRITER = """
import sys
from constrained_diffusion.utils.jsonl_store import JsonlStore
path, writer, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = JsonlStore(path, key_fields=("writer", "i"))
print("ready", flush=True)
sys.stdin.readline()  # start together
for i in range(n):
    store.append({"writer": writer, "i": i, "pad": "x" * (i % 97)})
"""


def _two_writers(path: Path, n: int) -> int:
    """Two processes append ``n`` records each to one store while this one reads it; returns the reads that saw damage."""
    import subprocess
    import sys

    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), w, str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for w in ("a", "b")]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    damaged = 0
    while any(p.poll() is None for p in procs):  # a reader never sees a torn middle line
        try:
            JsonlStore(path, key_fields=("writer", "i"))
        except ValueError:
            damaged += 1
    for p in procs:
        assert p.wait(timeout=120) == 0
    return damaged


def _check_two_writers(path: Path, n: int) -> None:
    damaged = _two_writers(path, n)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"", "the file ends with a complete line"
    records = [json.loads(line) for line in lines[:-1]]  # every line is one whole record
    assert len(records) == 2 * n
    assert {(r["writer"], r["i"]) for r in records} == {(w, i) for w in "ab" for i in range(n)}
    assert [r["i"] for r in records if r["writer"] == "a"] == list(range(n))  # each writer's order kept
    assert len(JsonlStore(path, key_fields=("writer", "i"))) == 2 * n
    assert damaged == 0


def test_two_processes_appending_2000_records_each_keep_all_4000(tmp_path):
    _check_two_writers(tmp_path / "shared.jsonl", 2000)


def test_add_skips_a_key_another_process_wrote_and_discard_removes_records(tmp_path):
    path = tmp_path / "r.jsonl"
    mine, other = JsonlStore(path, key_fields=("id",)), JsonlStore(path, key_fields=("id",))
    assert mine.add({"id": 0, "v": "a"}) is True
    assert other.add({"id": 0, "v": "b"}) is False  # already there: nothing written twice
    assert other.add({"id": 1}) is True
    path.write_bytes(path.read_bytes() + b'{"id": 2, "v"')  # a torn last line
    assert mine.discard([(0,)]) == 1
    assert path.read_text() == '{"id": 1}\n' and (0,) not in mine and (1,) in mine
    assert mine.add({"id": 0, "v": "c"}) is True  # computed again
    assert [json.loads(line) for line in path.read_text().splitlines()] == [{"id": 1}, {"id": 0, "v": "c"}]
