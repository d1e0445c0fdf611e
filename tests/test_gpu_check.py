"""``scripts/gpu_check.sh --tiny``: the GPU run's dry run on the CPU, so the GPU call cannot fail on a typo.

One test runs the whole script (every part in its own process, tiny networks) with the CUDA
tests' cap forced below a process start, so that part is killed and recorded as timed out and
the parts after it still run; the others check the pieces in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from constrained_diffusion.benchmarks import gpu_suite
from constrained_diffusion.cli.bench_sd_suite import parse_caps, render_part, render_report
from constrained_diffusion.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The tiny suite, end to end through the shell script, with a docs page to write."""
    out = tmp_path_factory.mktemp("gpu") / "out"
    page = out.parent / "benchmarks.md"
    page.write_text("before\n<!-- GPU-SUITE:START -->\nold\n<!-- GPU-SUITE:END -->\nafter\n")
    start = time.monotonic()
    proc = subprocess.run([str(SCRIPT), str(out), "--tiny", "--cap", "cuda-tests=0.05", "--write-docs", str(page)],
                          env={**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    print(f"tiny dry run: {time.monotonic() - start:.1f} s wall")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, page, proc.stdout


def test_every_part_writes_its_json_and_markdown(dry_run):
    out, _, _ = dry_run
    for part in gpu_suite.PARTS:
        data = json.loads((out / f"{part.name}.json").read_text())
        assert data["part"] == part.name and (out / f"{part.name}.md").read_text().startswith(f"#### {part.name}")
    statuses = {p.name: json.loads((out / f"{p.name}.json").read_text())["status"] for p in gpu_suite.PARTS}
    assert statuses == {"cuda-tests": "timed out", "sd15-batch1": "done", "step-memory": "done", "sd15-batch4": "done"}


def test_a_part_over_its_cap_is_timed_out_and_the_next_still_runs(dry_run):
    out, _, stdout = dry_run
    cuda = json.loads((out / "cuda-tests.json").read_text())
    assert cuda["status"] == "timed out" and "cap of 0.05 s" in cuda["reason"] and cuda["cap_s"] == 0.05
    assert stdout.index("== cuda-tests: timed out") < stdout.index("== sd15-batch1: done")


def test_the_rows_measure_whole_samples(dry_run):
    out, _, _ = dry_run
    rows = json.loads((out / "sd15-batch1.json").read_text())["rows"]
    done = {(r["mode"], r["method"]): r for r in rows if r["seconds"]}
    assert set(done) == {("eager", "plain"), ("eager", "paper-inpainting"), ("compiled", "plain"), ("compiled", "paper-inpainting"),
                         ("eager", "gradient-descent"), ("eager", "exact-jvp")}
    # tiny: 1 step of 1 inner step; inexact Newton 1 + 2 forwards, gradient descent 1 + 1 forwards and 1 backward
    assert (done["eager", "plain"]["nfe"], done["eager", "paper-inpainting"]["nfe"]) == (1, 3)
    assert (done["eager", "gradient-descent"]["nfe"], done["eager", "gradient-descent"]["nbe"]) == (2, 1)
    assert all(len(r["seconds"]) == gpu_suite.TINY.runs and r["min_s"] <= r["median_s"] for r in done.values())
    skipped = [r for r in rows if r["skipped"]]
    assert {(r["mode"], r["method"]) for r in skipped} == {("compiled", "gradient-descent"), ("compiled", "exact-jvp")}
    step = json.loads((out / "step-memory.json").read_text())["rows"]
    assert {(r["arch"], r["name"]) for r in step if r["seconds"]} == {(a, n) for a in ("sd15", "sd3") for n in gpu_suite.STEP_ROWS}
    assert all("per_inner_step_s" in r for r in step if r["name"] != "plain")


def test_the_report_evaluates_the_four_targets_and_fills_the_docs_block(dry_run):
    out, page, _ = dry_run
    summary = json.loads((out / "summary.json").read_text())
    assert [t["name"] for t in summary["targets"]] == ["speed", "overhead", "inexact Newton vs gradient descent", "no host sync"]
    assert summary["targets"][3]["verdict"] == "not measured"
    assert all(t["verdict"] in ("met", "not met") for t in summary["targets"][:3])
    report = (out / "report.md").read_text()
    assert "Tiny CPU dry run" in report and "scripts/gpu_check.sh out/gpu --tiny" in report
    text = page.read_text()
    assert text.startswith("before\n<!-- GPU-SUITE:START -->\n```\nscripts/gpu_check.sh") and text.endswith("<!-- GPU-SUITE:END -->\nafter\n")
    assert "old" not in text and (out / "docs_block.md").read_text() == report


def test_a_second_run_keeps_finished_parts_and_report_only_rebuilds(dry_run, capsys):
    out, _, _ = dry_run
    before = (out / "step-memory.json").read_text()
    assert main(["bench-sd", "--suite", "gpu", "--out", str(out), "--tiny", "--parts", "step-memory"]) == 0
    assert "== step-memory: kept" in capsys.readouterr().out and (out / "step-memory.json").read_text() == before
    (out / "report.md").unlink()
    assert main(["bench-sd", "--report-only", "--out", str(out)]) == 0  # the folder says it holds a tiny run
    assert "scripts/gpu_check.sh out/gpu --tiny" in (out / "report.md").read_text()
    # a GPU run into a folder that holds a tiny one is refused instead of mixing the two
    assert main(["bench-sd", "--suite", "gpu", "--out", str(out), "--parts", "step-memory"]) == 2


def test_the_cuda_tests_part_skips_without_cuda(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_suite.torch.cuda, "is_available", lambda: False)
    data = gpu_suite.run_part("cuda-tests", tmp_path, tiny=True)
    assert data["status"] == "skipped" and "no CUDA device" in data["reason"]
    assert json.loads((tmp_path / "cuda-tests.json").read_text())["status"] == "skipped"
    assert "skipped" in render_part(data)


def test_junit_cases_are_read(tmp_path):
    xml = tmp_path / "j.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="tests.test_sync_free" name="test_no_cuda_synchronisation[a]"/>'
                   '<testcase classname="t" name="b"><failure message="boom&#10;more">x</failure></testcase>'
                   '<testcase classname="t" name="c"><skipped message="needs CUDA"/></testcase></testsuite></testsuites>')
    assert gpu_suite.junit_cases(xml) == [
        {"test": "tests.test_sync_free::test_no_cuda_synchronisation[a]", "outcome": "passed", "message": ""},
        {"test": "t::b", "outcome": "failed", "message": "boom"},
        {"test": "t::c", "outcome": "skipped", "message": "needs CUDA"}]
    assert gpu_suite.junit_cases(tmp_path / "missing.xml") == []


def _e2e(mode: str, method: str, median: float, nfe: int) -> dict:
    return {"mode": mode, "method": method, "batch": 1, "seconds": [median], "min_s": median, "median_s": median, "nfe": nfe,
            "failure": None, "skipped": None}


def _step(arch: str, name: str, per_inner: float | None, peak: float) -> dict:
    row = {"arch": arch, "name": name, "seconds": [1.0], "median_s": 1.0, "peak_mb": peak, "failure": None, "skipped": None}
    if per_inner is not None:
        row["per_inner_step_s"] = per_inner
    return row


def test_the_targets_are_judged_from_the_numbers():
    parts = {
        "cuda-tests": {"status": "done", "rows": [{"test": "t::test_no_cuda_synchronisation_inside_the_loop[x]", "outcome": "passed"},
                                                  {"test": "t::test_no_cuda_synchronisation_inside_the_loop[y]", "outcome": "failed"}]},
        "sd15-batch1": {"device": "NVIDIA H100 80GB HBM3", "rows": [_e2e("compiled", "paper-inpainting", 2.4, 220),
                                                                    _e2e("eager", "paper-inpainting", 8.0, 220)],
                        "extra": {"forward_s": {"eager": 0.035, "compiled": 0.010}}},
        "step-memory": {"rows": [_step(a, "plain", None, 100.0) for a in ("sd15", "sd3")]
                        + [_step("sd15", "inexact-newton", 0.06, 105.0), _step("sd15", "gradient-descent", 0.10, 800.0),
                           _step("sd3", "inexact-newton", 0.06, 120.0), _step("sd3", "gradient-descent", 0.12, 900.0)]},
    }
    speed, overhead, versus, sync = gpu_suite.evaluate_targets(parts)
    assert speed.verdict == "met" and "2.400 s" in speed.evidence and "H100" in speed.evidence
    # eager 8.0 <= 1.1 * 220 * 0.035 = 8.47; compiled 2.4 > 1.1 * 220 * 0.010 = 2.42? no: 2.4 <= 2.42
    assert overhead.verdict == "met" and "ratio 1.039" in overhead.evidence
    assert versus.verdict == "not met" and "sd3" in versus.evidence and "1.20x" in versus.evidence  # SD3's memory
    assert sync.verdict == "not met" and "1 of 2" in sync.evidence
    parts["sd15-batch1"]["rows"][0]["median_s"] = 3.0
    assert gpu_suite.evaluate_targets(parts)[0].verdict == "not met"
    nothing = gpu_suite.evaluate_targets({})
    assert [t.verdict for t in nothing] == ["not measured"] * 4
    assert "| speed: " in render_report({p.name: None for p in gpu_suite.PARTS}, nothing)


@pytest.mark.parametrize("values, message", [(["gpu=3"], "unknown part"), (["sd15-batch1=x"], "number > 0"),
                                             (["sd15-batch1=-1"], "number > 0")])
def test_bad_caps_name_the_option(values, message):
    with pytest.raises(ValueError, match=message):
        parse_caps(values)
    assert parse_caps(["sd15-batch1=12.5"]) == {"sd15-batch1": 12.5}


def test_suite_options_need_an_output_folder(capsys):
    assert main(["bench-sd", "--suite", "gpu"]) == 2
    assert "--out DIR" in capsys.readouterr().err
    assert main(["bench-sd", "--parts", "step-memory", "--device", "cpu"]) == 2


def test_the_script_prints_its_usage_without_a_folder():
    proc = subprocess.run([str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and "usage: scripts/gpu_check.sh OUT_DIR" in proc.stderr


def test_the_estimates_fit_the_budget():
    """Caps total at most 7 minutes (a rerun fits a 15-minute lease with its start-up); estimates under caps."""
    assert sum(p.cap_s for p in gpu_suite.PARTS) <= 420
    assert all(p.estimate_s < p.cap_s for p in gpu_suite.PARTS)
    assert [p.name for p in gpu_suite.PARTS][:2] == ["cuda-tests", "sd15-batch1"]


def test_rows_that_would_not_fit_are_skipped_and_failures_recorded(tmp_path, monkeypatch):
    """The part's deadline check (estimated seconds from the measured forward time) and a failing method, without networks."""
    from types import SimpleNamespace

    monkeypatch.setattr(gpu_suite, "build_denoiser", lambda *args, **kwargs: object())
    monkeypatch.setattr(gpu_suite, "forward_time", lambda *args: 0.5)

    def method_run(method, den, steps, batch, precision_aware, inner_steps):  # noqa: ANN001, ANN202
        if method == "gradient-descent":
            raise RuntimeError("no kernel\nsecond line")
        return lambda: None

    monkeypatch.setattr(gpu_suite, "method_run", method_run)
    monkeypatch.setattr(gpu_suite, "time_runs", lambda run, device, runs, warmup=None: ([2.0, 1.0, 3.0], SimpleNamespace(nfe=20, nbe=0), 7.0))
    settings = gpu_suite.replace(gpu_suite.GPU, device="cpu")  # the GPU settings (not tiny), run without a GPU
    record = gpu_suite.PartRecord(tmp_path, gpu_suite.PARTS[1], settings, gpu_suite.time.monotonic() + 300)
    gpu_suite.sd15_part(record, settings, 1)
    rows = {(r["mode"], r["method"]): r for r in json.loads((tmp_path / "sd15-batch1.json").read_text())["rows"]}
    # estimates: forward 0.5 s x 20 steps x forward-equivalents x 3.1 runs (x 0.4 compiled, + 90 s for each new compiled graph)
    assert rows["eager", "plain"]["median_s"] == 2.0 and rows["eager", "plain"]["min_s"] == 1.0  # the first row always runs
    assert "estimated 341 s" in rows["eager", "paper-inpainting"]["skipped"]
    assert rows["compiled", "paper-inpainting"]["estimate_s"] == pytest.approx(226.4) and rows["compiled", "paper-inpainting"]["seconds"]
    assert rows["compiled", "plain"]["seconds"]  # 12.4 s: the forward graph exists
    assert "not enough time left" in rows["eager", "gradient-descent"]["skipped"] and rows["eager", "exact-jvp"]["skipped"]
    assert rows["compiled", "gradient-descent"]["failure"] == "RuntimeError: no kernel"  # 288 s fits, then fails
    assert "estimated 350 s" in rows["compiled", "exact-jvp"]["skipped"]
    assert record.data["status"] == "done"
    text = render_part(record.data)
    assert "skipped (not enough time left" in text and "failed (RuntimeError: no kernel)" in text


def test_stopping_the_suite_stops_its_part_and_still_writes_the_report(tmp_path):
    """An outer `timeout` sends SIGTERM: the part (in its own session) must not outlive the driver."""
    import signal

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "constrained_diffusion", "bench-sd", "--suite", "gpu", "--out", str(out), "--tiny",
                             "--parts", "sd15-batch1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("== sd15-batch1 (cap"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143 and "== sd15-batch1: stopped" in rest
    assert json.loads((out / "sd15-batch1.json").read_text())["status"] == "stopped"
    part = (out / "sd15-batch1.md").read_text()
    assert part.startswith("#### sd15-batch1") and "Status **stopped**" in part
    assert part.rstrip() in (out / "report.md").read_text()  # the report still holds the stopped part
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"--suite-part sd15-batch1 --out {out}" not in ps
