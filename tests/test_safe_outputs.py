"""Issue 22: every persistent output is safe under reruns, kills, other processes and crafted names.

Each test here failed before the fix: a rerun with other settings overwrote the first run's
images and summary, a zero-byte PNG left by a kill stopped every later rerun, a torn log line
blocked resuming a training run, names built from user strings wrote outside ``--out``, and
unwritable output paths or an out-of-memory batch ended in a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from constrained_diffusion.cli.main import main


def _records(out: Path) -> list[dict]:
    path = out / "records.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _evaluate(out: Path, *extra: str, steps: int = 1, limit: int = 2, batch: int = 2) -> list[str]:
    return ["evaluate", "--model", "mnist-ddpm", "--data", "mnist-test", "--task", "box", "--method", "inexact-newton",
            "--steps", str(steps), "--set", "inner_steps=1", "--limit", str(limit), "--batch-size", str(batch),
            "--out", str(out), "--quiet", *extra]


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# --- outputs keyed by the settings that produced them --------------------------------------------------
def test_a_rerun_with_other_settings_leaves_the_first_runs_images_and_summary_intact(tmp_path):
    out = tmp_path / "out"
    assert main(_evaluate(out, steps=1)) == 0
    first = _files(out)
    first_summary = json.loads((out / "summary.json").read_text())
    assert main(_evaluate(out, steps=2)) == 0
    after = _files(out)
    kept = {name: data for name, data in first.items() if name.startswith(("images/", "reports/"))}
    assert kept and all(after[name] == data for name, data in kept.items())  # nothing of the first run overwritten
    recs = _records(out)
    assert len(recs) == 4 and len({r["file"] for r in recs}) == 4  # every record has its own image
    for r in recs:
        assert (out / r["file"]).is_file() and r["settings"] in r["file"]
    # the first run's report, under its own key, still reads the first run's records
    report = out / first_summary["report"]
    assert json.loads((report / "summary.json").read_text()) == first_summary
    second = json.loads((out / "summary.json").read_text())
    assert second["report"] != first_summary["report"] and (out / second["report"] / "grid.png").is_file()
    steps = {r["settings"]: r["steps"] for r in recs}
    assert [steps[row["settings"]] for row in first_summary["methods"]] == [1]
    assert [steps[row["settings"]] for row in second["methods"]] == [2]


def test_the_batch_size_is_part_of_the_settings(tmp_path):
    out = tmp_path / "out"
    assert main(_evaluate(out, batch=2)) == 0
    assert main(_evaluate(out, batch=1)) == 0  # not mixed with the batch-2 records: computed and kept apart
    recs = _records(out)
    assert len(recs) == 4 and len({r["settings"] for r in recs}) == 2
    assert {r["batch_size"] for r in recs} == {1, 2}


# --- a resumed run checks the outputs its records name ---------------------------------------------------
@pytest.mark.parametrize("damage", ["zero-byte", "cut short", "missing"])
def test_a_damaged_image_left_by_a_kill_is_recomputed_on_resume(tmp_path, damage):
    out = tmp_path / "out"
    assert main(_evaluate(out)) == 0
    recs = _records(out)
    victim = out / recs[0]["file"]
    good = victim.read_bytes()
    if damage == "zero-byte":
        victim.write_bytes(b"")
    elif damage == "cut short":
        victim.write_bytes(good[: len(good) // 2])
    else:
        victim.unlink()
    assert main(_evaluate(out)) == 0  # before: PIL.UnidentifiedImageError on every rerun
    after = _records(out)
    assert sorted(r["image"] for r in after) == sorted(r["image"] for r in recs)  # each record once
    from constrained_diffusion.evaluation.harness import image_ok

    assert image_ok(victim) and victim.stat().st_size > 0  # computed again
    assert after[0] == recs[1] and after[1]["image"] == recs[0]["image"]  # the sound record kept as it was, the other redone
    assert after[1]["psnr"] == pytest.approx(recs[0]["psnr"], abs=1.0)  # the same seed: alone in its batch, about the same


# --- every output path stays under --out -----------------------------------------------------------------
def _inside(out: Path, root: Path) -> None:
    """Nothing was written under ``root`` except inside ``out``."""
    outside = [p for p in root.rglob("*") if p.is_file() and out not in p.parents and p.parent != root]
    assert outside == [], outside


def test_a_method_label_of_dots_stays_under_out(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mnist-ddpm\ndata: mnist-test\ntask: box\nsteps: 1\nlimit: 1\nbatch_size: 1\nquiet: true\n"
                   "method:\n  - {name: inexact-newton, label: '..', set: {inner_steps: 0}}\n"
                   "  - {name: inexact-newton, label: '../../escaped', set: {inner_steps: 0}}\n")
    out = tmp_path / "a" / "b" / "out"
    assert main(["evaluate", "--config", str(cfg), "--out", str(out)]) == 0
    for r in _records(out):
        assert (out / r["file"]).resolve().is_relative_to(out / "images")
    assert not (tmp_path / "a" / "escaped").exists() and not list((tmp_path / "a" / "b").glob("*.png"))
    _inside(out, tmp_path)


def test_an_evaluate_run_name_that_climbs_out_stays_under_out(tmp_path):
    cfg = tmp_path / "c.yaml"
    base = "model: mnist-ddpm\ndata: mnist-test\ntask: box\nsteps: 1\nlimit: 1\nbatch_size: 1\nquiet: true\nmethod: identity\n"
    cfg.write_text(f"name: ../../../x\n{base}---\nname: /abs/y\n{base}")
    out = tmp_path / "a" / "b" / "out"
    assert main(["evaluate", "--config", str(cfg), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".._.._.._x", "_abs_y"]
    _inside(out, tmp_path)


def test_safe_name_and_under():
    from constrained_diffusion.evaluation.harness import safe_name as old_import
    from constrained_diffusion.utils.paths import safe_name, under

    assert old_import is safe_name  # the harness's name still works
    for text in ["..", ".", "", "../x", "/abs/path/m.safetensors", "a/b\\c", "C:\\models\\m", "日本語", "x" * 400, "~/m", "a\x00b"]:
        name = safe_name(text)
        assert name and "/" not in name and "\\" not in name and name not in (".", "..") and len(name) <= 120
        assert under("out", name).parent == Path("out")
    assert safe_name("x" * 400) != safe_name("x" * 399 + "y")  # long names stay distinct
    for bad in ["../x", "/etc/passwd", "a/../../x"]:
        with pytest.raises(ValueError, match="--models: .* would write outside"):
            under("out", bad, option="--models")
    assert under("out", "a/../b") == Path("out/a/../b")  # climbing back inside is fine


def test_tune_study_with_a_model_path_writes_under_out(tmp_path):
    from constrained_diffusion.tuning.study import TuningStudy

    model_dir = tmp_path / "models"
    model_dir.mkdir()
    out = tmp_path / "out"
    study = TuningStudy(models=[str(model_dir / "m.safetensors")], tasks=["box"], methods=["inexact-newton", "dps"],
                        out=out, storage=f"sqlite:///{tmp_path / 's.db'}")
    for path in [study.score_folder(str(model_dir / "m.safetensors"), "box"), *study.figure_files(str(model_dir / "m.safetensors"), "box")]:
        assert out in path.parents, path
    assert list(model_dir.iterdir()) == []
