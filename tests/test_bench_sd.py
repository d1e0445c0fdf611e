"""``bench-sd --arch sd3|flux`` and ``bench-sd --end-to-end`` on tiny widths: the CLI paths, not the numbers."""

from __future__ import annotations

import functools
import shlex

import pytest
import torch

from constrained_diffusion.benchmarks import architectures, end_to_end
from constrained_diffusion.cli import bench_sd
from constrained_diffusion.cli.main import build_parser, main


@pytest.fixture
def in_process(monkeypatch):
    """Rows in this process instead of a fresh one each (a spawn costs seconds)."""
    from constrained_diffusion.benchmarks import sd_unet

    monkeypatch.setattr(bench_sd, "measure_sd_step_costs", functools.partial(sd_unet.measure_sd_step_costs, processes=False))


@pytest.fixture
def one_thread():
    """Convolutions of tiny networks on a busy 2-core machine run far faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_embedded_configurations_are_the_published_models():
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    with torch.device("meta"):
        sd3 = SD3Transformer2DModel(**architectures.network_config("sd3"))
        flux = FluxTransformer2DModel(**architectures.network_config("flux"))
    assert round(sum(p.numel() for p in sd3.parameters()) / 1e9, 2) == 2.03
    assert round(sum(p.numel() for p in flux.parameters()) / 1e9, 1) == 11.9
    assert architectures.network_config("flux", depth=3)["num_single_layers"] == 6
    with pytest.raises(ValueError, match="depth"):
        architectures.network_config("sd15", depth=2)
    with pytest.raises(ValueError, match="arch"):
        architectures.network_config("sdxl")


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_bench_sd_arch_writes_its_table(arch, tmp_path, in_process, one_thread, capsys):
    page = tmp_path / "b.md"
    block = bench_sd.BLOCKS[arch]
    page.write_text(f"<!-- {block}:START -->\nold\n<!-- {block}:END -->\n")
    argv = ["bench-sd", "--arch", arch, "--tiny", "--size", "4", "--inner-steps", "1", "--device", "cpu", "--dtype", "float32",
            "--solvers", "inexact-newton", "gradient-descent"]
    assert main([*argv, "--write-docs", str(page)]) == 0
    text = page.read_text()
    assert "old" not in text and f"```\nconstrained-diffusion {' '.join(argv)}\n```" in text
    assert "| inexact-newton " in text and "2 F + 0 B" in text and "| gradient-descent " in text and "1 F + 1 B" in text
    assert ("SD3 Medium transformer (tiny) (1 of 24" if arch == "sd3" else "FLUX.1-dev transformer (tiny) (1 of 19") in text


def test_bench_sd_end_to_end_writes_its_table(tmp_path, one_thread, capsys):
    page = tmp_path / "e2e.md"
    page.write_text("<!-- SD-E2E-TABLE:START -->\nold\n<!-- SD-E2E-TABLE:END -->\n")
    argv = ["bench-sd", "--end-to-end", "--tiny", "--size", "4", "--steps", "1", "--runs", "2", "--methods", "plain",
            "paper-inpainting", "gradient-descent", "--dtypes", "float32", "--modes", "eager", "--batch-sizes", "1", "2",
            "--device", "cpu"]
    assert main([*argv, "--write-docs", str(page)]) == 0
    text = page.read_text()
    assert f"```\nconstrained-diffusion {' '.join(argv)}\n```" in text
    rows = {tuple(c.strip() for c in line.split("|")[1:5]): [c.strip() for c in line.split("|")[5:-1]]
            for line in text.splitlines() if line.startswith("| ") and "method" not in line}
    assert rows[("plain", "float32", "eager", "1")][3] == "1"  # NFE: one forward per step
    assert rows[("paper-inpainting", "float32", "eager", "2")][3] == str(1 + 2 * 5)
    assert rows[("gradient-descent", "float32", "eager", "1")][3:5] == ["6", "5"]
    per_image = rows[("plain", "float32", "eager", "2")]
    assert float(per_image[2]) == pytest.approx(float(per_image[1]) / 2, abs=2e-3)


def test_end_to_end_rows_record_a_failure_instead_of_raising(monkeypatch):
    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("no kernel for this dtype\nsecond line")

    monkeypatch.setattr(end_to_end, "method_run", broken)
    rows = end_to_end.measure_end_to_end(["exact-jvp"], ["float32"], ["eager"], size=4, steps=1, runs=1, tiny=True,
                                         log=lambda _: None)
    assert rows[0].failure == "RuntimeError: no kernel for this dtype"
    assert "failed (RuntimeError: no kernel for this dtype)" in bench_sd.e2e_table(rows)


@pytest.mark.parametrize("argv, message", [
    (["--end-to-end", "--arch", "sd3"], "--end-to-end runs the SD 1.5"),
    (["--depth", "2"], "--depth applies to --arch sd3 or flux"),
    (["--arch", "sd3", "--solvers", "newton"], "--solvers: unknown solver(s) newton"),
])
def test_options_that_do_not_fit_are_one_line_errors(argv, message, capsys):
    assert main(["bench-sd", *argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.parametrize("argv", [["--arch", "sd4"], ["--end-to-end", "--methods", "dps"], ["--end-to-end", "--runs", "0"],
                                  ["--end-to-end", "--compile-mode", "fast"]])
def test_bad_values_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench-sd", *argv, "--device", "cpu"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("argv", [
    ["bench-sd", "--arch", "flux", "--depth", "1", "--size", "64", "--inner-steps", "1", "--device", "cpu", "--dtype", "bfloat16"],
    ["bench-sd", "--end-to-end", "--size", "64", "--device", "cpu"],
    ["bench-sd", "--end-to-end", "--size", "64", "--runs", "7", "--dtypes", "float16", "--modes", "compiled", "--batch-sizes", "4", "8",
     "--compile-mode", "max-autotune", "--device", "cpu", "--block", "X"],
])
def test_documented_commands_omit_defaults_and_parse_back(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    line = args.documented(args)
    assert line == "constrained-diffusion " + " ".join(argv)
    again = parser.parse_args(shlex.split(line)[1:])
    assert again.documented(again) == line
