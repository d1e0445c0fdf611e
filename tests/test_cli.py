"""The command line: the demo (main job), the benchmark, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from constrained_diffusion.cli.main import main


def test_demo_writes_table_and_png(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["demo", "--model", "gaussian", "--steps", "4", "--inner-steps", "2", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    for name in ("none (unconstrained)", "inexact-newton", "gradient-descent", "exact-jvp", "residual", "NFE"):
        assert name in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {line.split("|")[1].strip(): line.split("|") for line in text.splitlines() if line.startswith("| ")}
    assert float(rows["inexact-newton"][2]) < float(rows["none (unconstrained)"][2])
    assert rows["inexact-newton"][3].strip() == str(4 * (1 + 2 * 2))


def test_demo_single_solver(tmp_path, capsys):
    assert main(["demo", "--model", "gaussian", "--steps", "2", "--inner-steps", "1", "--solver", "gradient-descent", "--out", str(tmp_path / "g.png"), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "gradient-descent" in text and "exact-jvp" not in text


@pytest.mark.parametrize("argv,needle", [
    (["demo", "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    (["demo", "--inner-steps", "-1"], "--inner-steps: expected an integer >= 0, got -1"),
    (["demo", "--steps", "abc"], "expected an integer >= 1, got 'abc'"),
    (["demo", "--solver", "newton"], "invalid choice: 'newton'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_exit_nonzero_with_one_line(argv, needle):
    proc = subprocess.run([sys.executable, "-m", "constrained_diffusion.cli.main", *argv], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_demo_out_inside_a_file_is_a_clean_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--model", "gaussian", "--steps", "1", "--inner-steps", "0", "--out", str(blocker / "g.png"), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err


def test_bench_runs_and_writes_docs(tmp_path, capsys):
    page = tmp_path / "bench.md"
    page.write_text("# Bench\n<!-- BENCH-TABLE:START -->\nold\n<!-- BENCH-TABLE:END -->\ntail\n")
    assert main(["bench", "--steps", "2", "--inner-steps", "1", "--channels", "8", "--size", "16", "--repeats", "1",
                 "--solver", "inexact-newton", "--write-docs", str(page)]) == 0
    text = page.read_text()
    assert "old" not in text and "tail" in text and "| inexact-newton | 6 " in text
    assert "constrained-diffusion bench --steps 2 --inner-steps 1" in text
    overhead = float(text.split("| inexact-newton |")[1].split("|")[3])
    assert overhead > 0


def test_bench_write_docs_needs_markers(tmp_path):
    page = tmp_path / "bench.md"
    page.write_text("no markers")
    assert main(["bench", "--steps", "1", "--inner-steps", "1", "--channels", "8", "--size", "16", "--repeats", "1",
                 "--solver", "inexact-newton", "--write-docs", str(page)]) == 2


def test_bench_sd_runs_each_row_in_its_own_process(tmp_path, capsys):
    import argparse

    from constrained_diffusion.cli import bench_sd

    tiny = {**bench_sd.SD15_UNET, "block_out_channels": [8, 16, 16, 16], "cross_attention_dim": 16, "attention_head_dim": 2,
            "norm_num_groups": 4, "layers_per_block": 1, "sample_size": 8}
    page = tmp_path / "b.md"
    page.write_text("<!-- SD-CPU:START -->\n<!-- SD-CPU:END -->\n")
    args = argparse.Namespace(size=8, inner_steps=1, device="cpu", dtype="float32", write_docs=page, block="SD-CPU",
                              unet_config=tiny)
    assert bench_sd.run(args) == 0
    text = page.read_text()
    for row in ("plain inference (one forward)", "| inexact-newton", "| gradient-descent", "| exact-jvp"):
        assert row in text
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| ")}
    assert cells["inexact-newton"] == "2 F + 0 B" and cells["gradient-descent"] == "1 F + 1 B"
    assert cells["exact-jvp"] == "2 F + 0 B"  # the dual forward counts as one network evaluation
    assert "--block SD-CPU" in text  # the command written with the table regenerates this block


@pytest.mark.parametrize("command", ["evaluate", "model-card ddpm", "adaptive", "train ddpm --out runs/x", "bench-sd"])
@pytest.mark.parametrize("device, message", [("tpu", "expected cpu or cuda"), ("cuda:99", "CUDA")])
def test_device_is_checked_before_anything_runs(command, device, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command.split(), "--device", device])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--device" in err and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--device", "cuda"])
    assert "CUDA is not available" in capsys.readouterr().err
