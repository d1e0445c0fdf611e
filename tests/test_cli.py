"""The command line: the demo (main job), the benchmark, and one-line errors."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import constrained_diffusion as cd
from constrained_diffusion.cli.commands import subparsers
from constrained_diffusion.cli.main import build_parser, main


def _demo_rows(text: str) -> dict[str, list[str]]:
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ")}


def test_demo_runs_each_method_at_its_tuned_setting_on_real_digits(tmp_path, capsys):
    from constrained_diffusion.recipes.tuned import load_tuned

    tuned = load_tuned("mnist-ddpm", "box")
    assert main(["demo", "--digits", "3", "--steps", "2", "--methods", "inexact-newton", "identity", "dps", "--out", str(tmp_path),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    rows = _demo_rows(text)
    assert rows["method"] == ["method", "residual", "PSNR (dB)", "read right", "NFE", "NBE", "seconds"]
    assert list(rows)[1:] == ["inexact-newton", "identity", "dps"]
    inner = tuned.methods["inexact-newton"]["inner_steps"]
    assert rows["inexact-newton"][4] == str(2 * (1 + 2 * inner))  # the tuned inner steps: one extra forward each
    assert rows["identity"][4] == str(2 * (1 + tuned.methods["identity"]["inner_steps"]))
    assert rows["dps"][4:6] == ["2", "2"]
    for name in ("inexact-newton", "identity", "dps"):
        k, n = rows[name][3].split("/")
        assert n == "3" and 0 <= int(k) <= 3
        assert float(rows[name][2]) > 5
    assert "labels 0 1 2" in text and "mnist-ddpm-box.yaml" in text and tuned.study["command"] in text
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_single_solver_and_a_png_path(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["demo", "--digits", "1", "--steps", "1", "--solver", "gradient-descent", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "gradient-descent" in text and "exact-jvp" not in text and out.is_file() and not (tmp_path / "demo.png").exists()


def test_demo_default_methods_leave_exact_newton_to_all():
    from constrained_diffusion.cli.demo import methods_to_run

    tuned = ["inexact-newton", "gradient-descent", "dps"]
    assert methods_to_run(None, tuned) == tuned
    assert methods_to_run(["all"], tuned) == [*tuned, "exact-newton"]
    assert methods_to_run(["exact-newton", "dps"], tuned) == ["exact-newton", "dps"]
    with pytest.raises(ValueError, match="--methods: unknown method 'newton'"):
        methods_to_run(["newton"], tuned)


@pytest.mark.parametrize("argv,needle", [
    (["demo", "--steps", "0"], "--steps: expected an integer >= 1, got 0"),
    (["demo", "--inner-steps", "-1"], "--inner-steps: expected an integer >= 0, got -1"),
    (["demo", "--steps", "abc"], "expected an integer >= 1, got 'abc'"),
    (["demo", "--solver", "newton"], "unknown method 'newton'"),
    (["demo", "--digits", "21"], "--digits: expected 1 to 20"),
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
    assert main(["demo", "--digits", "1", "--steps", "1", "--out", str(blocker / "sub"), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err


def test_bench_runs_and_writes_docs(tmp_path, capsys):
    page = tmp_path / "bench.md"
    page.write_text("# Bench\n<!-- BENCH-TABLE:START -->\nold\n<!-- BENCH-TABLE:END -->\ntail\n")
    assert main(["bench", "--steps", "2", "--inner-steps", "1", "--channels", "8", "--size", "16", "--repeats", "1",
                 "--solver", "inexact-newton", "--write-docs", str(page)]) == 0
    text = page.read_text()
    assert "old" not in text and "tail" in text and "| inexact-newton | 6 " in text
    assert "constrained-diffusion bench --steps 2 --inner-steps 1 --batch-size 1 --channels 8 --size 16 --repeats 1 --methods inexact-newton" in text
    overhead = float(text.split("| inexact-newton |")[1].split("|")[3])
    assert overhead > 0


def test_bench_write_docs_needs_markers(tmp_path):
    page = tmp_path / "bench.md"
    page.write_text("no markers")
    assert main(["bench", "--steps", "1", "--inner-steps", "1", "--channels", "8", "--size", "16", "--repeats", "1",
                 "--solver", "inexact-newton", "--write-docs", str(page)]) == 2


def test_bench_sd_runs_each_row_in_its_own_process():
    from constrained_diffusion.benchmarks import SD15_UNET, measure_sd_step_costs
    from constrained_diffusion.cli.bench_sd import cost_table

    tiny = {**SD15_UNET, "block_out_channels": [8, 16, 16, 16], "cross_attention_dim": 16, "attention_head_dim": 2,
            "norm_num_groups": 4, "layers_per_block": 1, "sample_size": 8}
    solvers = ["exact-jvp", "gradient-descent", "inexact-newton"]
    costs = measure_sd_step_costs(solvers, size=8, inner_steps=1, unet_config=tiny, log=lambda _: None)
    assert not costs.failures and 0 < costs.parameters < 1e6
    text = cost_table(costs, solvers, inner_steps=1)
    for row in ("plain inference (one forward)", "| inexact-newton", "| gradient-descent", "| exact-jvp"):
        assert row in text
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| ")}
    assert cells["inexact-newton"] == "2 F + 0 B" and cells["gradient-descent"] == "1 F + 1 B"
    assert cells["exact-jvp"] == "2 F + 0 B"  # the dual forward counts as one network evaluation
    assert costs.nfe["plain"] == 1 and costs.peak_mb["gradient-descent"] > 0


def test_conditioned_unet_denoiser_is_the_unet_with_its_text_conditioning():
    from diffusers import UNet2DConditionModel

    from constrained_diffusion.benchmarks import SD15_UNET, conditioned_unet_denoiser

    tiny = {**SD15_UNET, "block_out_channels": [8, 16, 16, 16], "cross_attention_dim": 16, "attention_head_dim": 2,
            "norm_num_groups": 4, "layers_per_block": 1, "sample_size": 8}
    model = conditioned_unet_denoiser(tiny, size=8, dtype="float64")
    assert model.sample_shape == (4, 8, 8) and model.dtype == torch.float64
    torch.manual_seed(0)
    reference = UNet2DConditionModel(**tiny).double().eval()  # the same seeded weights, without the bound conditioning
    x, t = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.tensor([1, 1])
    cond = torch.randn(1, 77, 16, generator=torch.Generator().manual_seed(1)).double().expand(2, -1, -1)
    with torch.no_grad():
        hooked = model.network(x, t).sample
        assert torch.allclose(hooked, reference(x, t, encoder_hidden_states=cond).sample, rtol=0, atol=1e-12)
        assert not torch.allclose(hooked, reference(x, t, encoder_hidden_states=-cond).sample, rtol=0, atol=1e-6)


@pytest.mark.parametrize("command", ["evaluate", "compare", "model-card ddpm", "adaptive", "train ddpm --out runs/x", "bench-sd"])
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


DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"<!-- ([A-Z0-9-]+):START -->\n(?:```\n(constrained-diffusion [^\n]+)\n```|Produced by `(constrained-diffusion [^`]+)`)")


def _parse(line: str, monkeypatch) -> argparse.Namespace:
    """Parse a documented command as this machine would if it had the GPU the command names."""
    parser = build_parser()
    subparsers(parser)  # the options and their defaults of this machine, before the patch
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        m.setattr(torch.cuda, "device_count", lambda: 1)
        return parser.parse_args(shlex.split(line)[1:])


@pytest.mark.parametrize("page", sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")))
def test_every_documented_command_regenerates_its_own_block(page, monkeypatch):
    """The command in a --write-docs block, and the page's instruction to regenerate it, write that block."""
    text = (DOCS / page).read_text()
    blocks = {m.group(1): m.group(2) or m.group(3) for m in _BLOCK.finditer(text)}
    for name, line in blocks.items():
        args = _parse(line, monkeypatch)
        assert args.documented(args) == line, f"{page} {name}"
    for line in re.findall(r"^(constrained-diffusion [^\n#]*--write-docs [^\n#]*)", text, re.M):
        args = _parse(line, monkeypatch)
        assert args.write_docs == Path("docs") / page
        assert args.documented(args) in blocks.values(), f"{page}: {line!r} writes another block"


@pytest.mark.parametrize("argv, undocumented", [
    (["bench", "--solver", "identity", "--solver", "exact-newton", "inexact-newton", "--repeats", "2"], set()),
    (["bench-sd", "--size", "8", "--device", "cpu", "--dtype", "bfloat16", "--block", "SD-X"], set()),
    (["compare", "--variants", "flow", "--tasks", "sr4", "box", "--no-tf32", "--no-equal-time", "--out", "a dir/r.jsonl",
      "--device", "cpu", "--block", "B"], {"model"}),
    (["model-card", "flow", "--weights", "w.safetensors", "--samples", "10", "--device", "cpu", "--grid", "g.png"],
     {"batch_size"}),
    (["model-card", "classifier", "--samples", "10"], {"samples", "steps", "seed", "device", "grid", "batch_size"}),
    (["adaptive", "--digits", "3", "--task", "sr4", "--device", "cpu", "--threads", "1"], {"results", "figure", "threads", "quiet"}),
    (["analyze", "eigvec", "--timesteps", "900", "100", "--rcond", "0.01", "--weights", "w.safetensors"], {"results"}),
])
def test_documented_command_parses_back_to_the_same_options(argv, undocumented):
    parser = build_parser()
    args = parser.parse_args(argv)
    line = args.documented(args)
    again = parser.parse_args(shlex.split(line)[1:])
    assert again.documented(again) == line
    skip = {"run", "documented", "write_docs", *undocumented}
    assert {k: v for k, v in vars(again).items() if k not in skip} == {k: v for k, v in vars(args).items() if k not in skip}


def test_bench_documents_every_solver_and_defaults_to_the_documented_table():
    args = build_parser().parse_args(["bench"])
    assert args.documented(args).endswith("--methods exact-jvp gradient-descent inexact-newton")
    args = build_parser().parse_args(["bench", "--solver", "identity", "--solver", "identity"])
    assert args.documented(args).endswith("--methods identity")


def test_bench_sd_and_compare_name_a_block_other_than_their_default():
    parser = build_parser()
    for argv, block in [(["bench-sd", "--device", "cpu"], "SD-BENCH-TABLE"), (["compare", "--device", "cpu"], "EVAL-TABLE")]:
        default, other = parser.parse_args([*argv, "--block", block]), parser.parse_args([*argv, "--block", "OTHER"])
        assert "--block" not in default.documented(default)
        assert other.documented(other).endswith("--block OTHER")


def test_model_card_of_the_classifier_writes_its_block(tmp_path, capsys):
    page = tmp_path / "card.md"
    page.write_text("<!-- CLASSIFIER-CARD:START -->\nold\n<!-- CLASSIFIER-CARD:END -->\n")
    assert main(["model-card", "classifier", "--write-docs", str(page)]) == 0
    text = page.read_text()
    assert "```\nconstrained-diffusion model-card classifier\n```" in text
    assert "- parameters: 157,290\n- test accuracy (500 digits): 0.9960" in text  # the numbers of its model card
    weights = cd.models.save_weights(tmp_path / "unet.safetensors", cd.models.UNet(base_channels=8, channel_mult=(1,),
                                     num_res_blocks=1, attention_resolutions=(), sample_size=8), {"kind": "ddpm"})
    assert main(["model-card", "classifier", "--weights", str(weights)]) == 2
    assert "holds a MNISTDenoiser, not the MNIST classifier" in capsys.readouterr().err
    assert main(["model-card", "classifier", "--weights", str(tmp_path / "missing.safetensors")]) == 2
    assert "no weight file" in capsys.readouterr().err


def test_demo_png_is_a_labelled_grid_of_digits_by_method(tmp_path):
    import numpy as np
    from PIL import Image

    assert main(["demo", "--digits", "2", "--steps", "1", "--inner-steps", "0", "--solver", "identity", "--out", str(tmp_path), "--quiet"]) == 0
    image = torch.from_numpy(np.asarray(Image.open(tmp_path / "demo.png").convert("L")).copy())
    cell, columns, rows = 32 * 3, 3, 2  # truth | observed | identity; one row per digit
    assert image.shape[1] == 2 + columns * (cell + 2)
    grid_height = 2 + rows * (cell + 2)
    strips = image.shape[0] - grid_height
    assert strips >= 16, "no label strips above and below the grid"
    top = strips // 2
    for c in range(columns):
        left = 2 + c * (cell + 2)
        assert (image[:top, left:left + cell] < 128).any(), f"column {c} has no label"
        bottom = image[top + grid_height:, left:left + cell]
        assert (bottom < 128).any() == (c != 1), f"column {c}: k/N under every column but the observation's"


def test_label_columns_draws_distinct_labels_and_checks_its_input():
    from constrained_diffusion.cli.demo import label_columns

    grid = torch.full((3, 36, 70), 255, dtype=torch.uint8)
    a, b = label_columns(grid, ["truth", "exact-newton"], 32), label_columns(grid, ["observed", "exact-newton"], 32)
    assert a.shape == b.shape and a.shape[0] == 3 and torch.equal(a[:, -36:], grid)
    assert not torch.equal(a[:, :, :34], b[:, :, :34]) and torch.equal(a[:, :, 35:], b[:, :, 35:])
    assert label_columns(grid, ["a-very-long-solver-name-indeed", "x"], 32).shape[1] > a.shape[1]  # wrapped onto more lines
    with pytest.raises(ValueError, match="do not tile"):
        label_columns(grid, ["only one"], 32)
    with pytest.raises(ValueError, match="grid must be uint8"):
        label_columns(grid.float(), ["a", "b"], 32)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"constrained-diffusion {cd.__version__}"
