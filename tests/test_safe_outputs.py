"""Issue 22: every persistent output is safe under reruns, kills, other processes and crafted names.

Each test here failed before the fix: a rerun with other settings overwrote the first run's
images and summary, a zero-byte PNG left by a kill stopped every later rerun, a torn log line
blocked resuming a training run, names built from user strings wrote outside ``--out``, and
unwritable output paths or an out-of-memory batch ended in a traceback.
"""

from __future__ import annotations

import json
import os
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
    from constrained_diffusion.evaluation.records import image_ok

    assert second["report"] != first_summary["report"] and image_ok(out / second["report"] / "grid.png")  # a whole PNG
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
    pngs = [p for p in out.rglob("*.png") if "reports" not in p.parts and p.parent != out]
    assert len(pngs) == 3 and all((out / "images") in p.parents for p in pngs)  # 1 observation, 2 outputs; before: label ".." wrote to out/
    assert not (tmp_path / "a" / "escaped").exists() and not list((tmp_path / "a" / "b").glob("*.png"))
    _inside(out, tmp_path)
    for r in _records(out):
        assert (out / r["file"]).resolve().is_relative_to(out / "images")


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


# --- a torn training log line does not block resuming -----------------------------------------------------
def test_a_torn_log_line_left_by_a_kill_does_not_block_resuming_and_damage_names_the_file(tmp_path):
    from constrained_diffusion.models import UNetConfig
    from constrained_diffusion.training import TrainConfig, train
    from constrained_diffusion.training.checkpoint import TrainArgumentError

    tiny = UNetConfig(base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,), sample_size=16)
    data = torch_rand()
    cfg = TrainConfig(unet=tiny, steps=2, batch_size=2, log_every=1, checkpoint_every=2, warmup=0)
    train(cfg, data, tmp_path, log=lambda _: None)
    log = tmp_path / "log.jsonl"
    log.write_bytes(log.read_bytes() + b'{"step": 3, "lo')  # killed while writing step 3's line
    train(cfg.model_copy(update={"steps": 3}), data, tmp_path, log=lambda _: None)  # before: "Expecting ',' delimiter"
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3]
    log.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')  # damage a kill cannot do
    with pytest.raises(TrainArgumentError, match=r"log\.jsonl, line 2"):
        train(cfg.model_copy(update={"steps": 4}), data, tmp_path, log=lambda _: None)


def torch_rand():
    import torch

    return torch.rand(8, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


# --- one-line errors for the environment's faults -------------------------------------------------------
def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("case", ["a file", "/dev/null", "under a file", "records.jsonl a folder"])
def test_an_output_path_that_cannot_be_written_is_one_line_naming_it(tmp_path, capsys, case):
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = {"a file": afile, "/dev/null": Path("/dev/null"), "under a file": afile / "sub" / "out",
           "records.jsonl a folder": tmp_path / "out"}[case]
    if case == "records.jsonl a folder":
        (out / "records.jsonl").mkdir(parents=True)
    assert main(_evaluate(out)) == 2
    line = _one_error_line(capsys)
    named = str(out / "records.jsonl") if case == "records.jsonl a folder" else str(out)
    assert line.startswith("constrained-diffusion evaluate: error:") and named in line, line


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root may write anywhere")
def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(_evaluate(locked / "out")) == 2
    assert str(locked / "out") in _one_error_line(capsys)


_CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 9663676416 bytes."


def test_out_of_memory_in_evaluate_names_the_batch_and_suggests_a_smaller_batch_size(tmp_path, capsys, monkeypatch):
    import constrained_diffusion.evaluation.harness as harness

    def oom(*args, **kwargs):
        raise RuntimeError(_CPU_OOM)

    monkeypatch.setattr(harness, "sample_batch", oom)
    assert main(_evaluate(tmp_path / "out", batch=2)) == 2
    line = _one_error_line(capsys)
    assert "out of memory on images 00000..00001" in line and "--batch-size 1" in line, line


def test_out_of_memory_in_train_names_the_step(tmp_path, capsys, monkeypatch):
    import constrained_diffusion.training.diffusion as diffusion

    def oom(*args, **kwargs):
        raise RuntimeError(_CPU_OOM)

    monkeypatch.setattr(diffusion, "diffusion_loss", oom)
    assert main(["train", "ddpm", "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "8"]) == 2
    line = _one_error_line(capsys)
    assert "out of memory on training step 1" in line and "--batch-size 4" in line, line


def test_out_of_memory_on_the_cpu_is_a_failed_trial_in_tune(tmp_path, monkeypatch):
    import constrained_diffusion.tuning.tuner as tuner_module
    from constrained_diffusion.tuning.tuner import Tuner

    def oom(*args, **kwargs):
        raise RuntimeError(_CPU_OOM)

    monkeypatch.setattr(tuner_module, "sample_batch", oom)  # where tune looks it up (evaluation.batch.sample_batch)
    tuner = Tuner(model="mnist-ddpm", data="mnist-validation", task="box", method="inexact-newton", trials=2, limit=2,
                  steps=1, storage=f"sqlite:///{tmp_path / 'db.sqlite'}", quiet=True)
    tuner.run(log=lambda _: None)
    study = tuner.open()
    assert [t.state.name for t in study.trials] == ["FAIL", "FAIL"]
    assert all("out of memory" in t.user_attrs["error"].lower() or "allocat" in t.user_attrs["error"] for t in study.trials)


def test_a_type_error_from_a_bug_keeps_its_traceback(monkeypatch):
    import constrained_diffusion.cli.evaluate as evaluate

    def bug(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(evaluate, "run", bug)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["evaluate", "--model", "m", "--data", "d", "--task", "box", "--method", "dps", "--out", "o"])


def test_out_of_memory_anywhere_else_is_one_line_and_other_runtime_errors_keep_their_traceback(capsys, monkeypatch):
    import constrained_diffusion.cli.sample as sample

    monkeypatch.setattr(sample, "run", lambda args: (_ for _ in ()).throw(RuntimeError(_CPU_OOM)))
    assert main(["sample", "--model", "gaussian", "--task", "box"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("constrained-diffusion sample: error: out of memory") and "--batch" in line, line
    monkeypatch.setattr(sample, "run", lambda args: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["sample", "--model", "gaussian", "--task", "box"])


def test_image_files_keep_one_extension_and_unicode_ids_stay_distinct(tmp_path):
    from constrained_diffusion.evaluation.records import image_file

    png = image_file(tmp_path, "dps", "cats/cat.png", "abc")
    assert png.name == "cat.png" and png.parent == tmp_path / "images" / "dps" / "abc" / "cats"
    assert image_file(tmp_path, "dps", "cat.jpg", "abc").name == "cat.jpg.png"
    a, b = image_file(tmp_path, "dps", "é.png", "abc"), image_file(tmp_path, "dps", "è.png", "abc")
    assert a != b and a.name.endswith(".png") and not a.name.endswith(".png.png")
    assert a.parent == b.parent == tmp_path / "images" / "dps" / "abc"
