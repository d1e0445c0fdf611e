"""The shipped evaluation configs: every file validates, and the paper's tables run on a tiny Stable Diffusion pipeline."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from constrained_diffusion.cli.evaluate import options, read_config
from constrained_diffusion.cli.main import build_parser, main
from constrained_diffusion.evaluation.harness import Evaluation

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
sys.path.insert(0, str(Path(__file__).parent))


def test_there_is_one_config_per_paper_table_and_the_mnist_comparison():
    names = {p.relative_to(ROOT / "configs").as_posix() for p in CONFIGS}
    assert {"paper/table1.yaml", "paper/table2.yaml", "paper/table3.yaml", "mnist/comparison.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(ROOT / "configs").as_posix())
def test_every_config_validates_before_sampling(path, tmp_path):
    style = tmp_path / "style.png"
    args = build_parser().parse_args(["evaluate", "--config", str(path), "--out", str(tmp_path / "o"), "--metrics", "psnr",
                                      "--style-image", str(_image(style))])
    runs = options(args)
    assert len(runs) == len(read_config(path)) >= 1
    for run in runs:
        Evaluation(**run).check()  # task, methods and overrides resolve; no model is loaded
    if len(runs) > 1:
        assert len({str(r["out"]) for r in runs}) == len(runs)


def test_the_mnist_comparison_config_is_the_comparisons_rows():
    runs = read_config(ROOT / "configs" / "mnist" / "comparison.yaml")
    assert {(r["model"], r["task"]) for r in runs} == {(f"mnist-{m}", t) for m in ("ddpm", "flow") for t in ("top-half", "free-form", "sr4")}
    for r in runs:
        assert r["steps"] == 20 and r["set"]["inner_steps"] == 5 and r["data"] == "mnist-held-out"


def _image(path: Path, size: tuple[int, int] = (32, 32), seed: int = 0) -> Path:
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    Image.fromarray((torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()).save(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tiny_pipelines import tiny_sd

    tmp = tmp_path_factory.mktemp("tiny")
    tiny_sd(tmp).save_pretrained(tmp / "sd")
    (tmp / "data").mkdir()
    for k in range(2):
        _image(tmp / "data" / f"{k}.png", (48, 40), seed=k)
    return tmp


@pytest.mark.parametrize("table", ["table1", "table2"])
def test_a_paper_table_runs_on_a_tiny_pipeline(table, tiny, tmp_path):
    out = tmp_path / table
    assert main(["evaluate", "--config", str(ROOT / "configs" / "paper" / f"{table}.yaml"), "--model", str(tiny / "sd"),
                 "--data", str(tiny / "data"), "--steps", "2", "--limit", "1", "--metrics", "psnr", "--dtype", "float32",
                 "--device", "cpu", "--out", str(out), "--quiet"]) == 0
    runs = read_config(ROOT / "configs" / "paper" / f"{table}.yaml")
    for run in runs:
        folder = out / run["name"] if len(runs) > 1 else out
        summary = json.loads((folder / "summary.json").read_text())
        assert [row["method"] for row in summary["methods"]] == run["method"]
        assert all(row["n"] == 1 and math.isfinite(row["psnr"]) for row in summary["methods"])


def test_the_style_table_runs_with_a_tiny_clip(tiny, tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(0)
    clip = CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4,
                                            image_size=32, patch_size=16))
    clip.save_pretrained(tmp_path / "clip")
    out = tmp_path / "table3"
    assert main(["evaluate", "--config", str(ROOT / "configs" / "paper" / "table3.yaml"), "--model", str(tiny / "sd"),
                 "--data", str(tiny / "data"), "--style-image", str(_image(tmp_path / "style.png", seed=5)),
                 "--set", f"task.clip={tmp_path / 'clip'}", "--steps", "2", "--limit", "1", "--dtype", "float32",
                 "--device", "cpu", "--method", "paper-style", "mpgd", "--out", str(out), "--quiet"]) == 0
    recs = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["method"] for r in recs} == {"paper-style", "mpgd"}
    assert all(math.isfinite(r["residual"]) and r["residual"] > 0 for r in recs)  # a style loss is never met exactly
    assert len({r["residual"] for r in recs}) == 2  # two methods, two samples


def test_every_evaluation_option_is_a_flag_and_a_config_key():
    """The command's FIELDS and EvaluationConfig cannot drift: each field is a YAML key and a flag of evaluate."""
    from constrained_diffusion.cli.evaluate import FIELDS
    from constrained_diffusion.cli.main import build_parser
    from constrained_diffusion.evaluation.config import EvaluationConfig

    assert sorted(FIELDS) == sorted(EvaluationConfig.model_fields)
    assert set(FIELDS) <= set(vars(build_parser().parse_args(["evaluate"])))
