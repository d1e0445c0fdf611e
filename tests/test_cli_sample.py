"""``constrained-diffusion sample`` (constraints and recipes by name) and ``adaptive``."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from constrained_diffusion.cli.main import main
from constrained_diffusion.utils.svg_plot import Series, scatter_svg


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in text.splitlines() if line.startswith("| ") and "sample" not in line]


def test_list_shows_constraints_recipes_and_solvers(capsys):
    assert main(["sample", "--list"]) == 0
    text = capsys.readouterr().out
    for name in ("inpainting", "mnist-class", "dps", "psld", "mpgd", "freedom", "inexact-newton", "exact-newton"):
        assert name in text


def test_recipe_by_name_on_a_task(tmp_path, capsys):
    out = tmp_path / "s.png"
    assert main(["sample", "--model", "gaussian", "--task", "top-half", "--recipe", "dps", "--steps", "6", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "recipe dps" in text and "target x_prev" in text
    (row,) = _rows(text)
    assert row[2] == "6" and row[3] == "6"  # NFE, NBE: one forward and one backward per step
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_registered_constraint_by_name_with_args(tmp_path, capsys):
    argv = ["sample", "--constraint", "mnist-class", "--arg", "label=3", "--steps", "4", "--inner-steps", "2",
            "--batch", "2", "--out", str(tmp_path / "c.png"), "--quiet"]
    assert main(argv) == 0
    rows = _rows(capsys.readouterr().out)
    assert len(rows) == 2 and all(r[2] == str(4 * (1 + 2 * 2)) for r in rows)


@pytest.mark.parametrize("argv,needle", [
    (["sample", "--task", "top-half", "--recipe", "nope"], "unknown recipe 'nope'"),
    (["sample", "--constraint", "nope"], "unknown constraint 'nope'"),
    (["sample", "--constraint", "mnist-class", "--arg", "label"], "--arg must be KEY=VALUE"),
    (["sample", "--task", "top-half", "--arg", "a=1"], "--arg needs --constraint"),
    (["sample"], "give --task or --constraint"),
    (["sample", "--task", "top-half", "--recipe", "dps", "--inner-steps", "3"], "inner_steps must be 0 or 1"),
    (["sample", "--task", "top-half", "--step-scale", "1", "2", "3"], "--step-scale takes one value or two"),
])
def test_sample_errors_are_one_line(argv, needle, capsys):
    assert main([*argv, "--model", "gaussian", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_the_step_scale_flag_and_its_old_spelling(tmp_path, capsys):
    """``--step-scale`` is printed as ``λ=... by the '...' step rule``; the hidden ``--lr`` (before 0.2) is the same flag and warns once."""
    base = ["sample", "--model", "gaussian", "--task", "top-half", "--steps", "3", "--inner-steps", "2", "--quiet"]
    assert main([*base, "--step-scale", "0.3", "0.1", "--out", str(tmp_path / "new.png")]) == 0
    new = capsys.readouterr().out
    assert "λ=0.3→0.1 by the 'dynamic' step rule" in new and "lambda=" not in new and "step size" not in new
    with pytest.warns(DeprecationWarning, match="'--lr' is deprecated: it is called '--step-scale'") as caught:
        assert main([*base, "--lr", "0.3", "0.1", "--out", str(tmp_path / "old.png")]) == 0
    assert len([w for w in caught if "since 0.2" in str(w.message)]) == 1
    assert capsys.readouterr().out.splitlines()[0] == new.splitlines()[0]
    assert (tmp_path / "old.png").read_bytes() == (tmp_path / "new.png").read_bytes()
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    help_text = capsys.readouterr().out
    assert "--step-scale" in help_text and "--lr" not in help_text  # the old spelling is hidden


def test_svg_plot_is_well_formed_and_escapes_labels():
    svg = scatter_svg([Series("a < b", [1.0, 2.0], [3.0, 4.0], "#f00", line=True), Series("c", [1.5], [3.5], "#00f")],
                      "x", "y", "t & u")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert len(root.findall(".//{http://www.w3.org/2000/svg}circle")) == 3 + 2  # points + legend markers
    with pytest.raises(ValueError, match="at least one point"):
        scatter_svg([], "x", "y", "t")


def test_adaptive_study_resumes_without_recomputing(tmp_path):
    import torch

    from constrained_diffusion.default_model import default_denoiser
    from constrained_diffusion.evaluation.adaptive import Setting, run_study, summarise_study

    model = default_denoiser()
    images = model.sample_prior(2, torch.Generator().manual_seed(0)).float()
    settings = (Setting("fixed K=5 (paper)", 2), Setting("adaptive", 2, {"min_decrease": 0.5}))
    path = tmp_path / "study.jsonl"
    first = run_study(model, images, path, settings, steps=3, progress=False)
    assert len(first) == 4 and len(path.read_text().splitlines()) == 4
    again = run_study(model, images, path, settings, steps=3, progress=False)
    assert len(path.read_text().splitlines()) == 4 and again == first  # nothing recomputed or duplicated
    rows = summarise_study(again, settings)
    assert [r["setting"] for r in rows] == ["fixed K=5 (paper)", "adaptive"]
    assert rows[1]["nfe"] <= rows[0]["nfe"]
    assert all(json.loads(line)["steps"] == 3 for line in path.read_text().splitlines())
    # a record without a device (written before devices were recorded) counts as a CPU record,
    # while one from a GPU run is not reused on the CPU
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["device"] for r in records} == {"cpu"}
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "device"}) + "\n" for r in records))
    assert len(run_study(model, images, path, settings, steps=3, progress=False)) == 4
    assert len(path.read_text().splitlines()) == 4
    path.write_text("".join(json.dumps({**r, "device": "cuda"}) + "\n" for r in records))
    assert len(run_study(model, images, path, settings, steps=3, progress=False)) == 4
    assert len(path.read_text().splitlines()) == 8  # computed afresh for the CPU
