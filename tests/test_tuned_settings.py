"""The shipped tuned settings (what the demo runs): they match the tuning study's table, and a study's results regenerate them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from constrained_diffusion.recipes.tuned import available, load_tuned, tuned_from_results, write_tuned

DOCS = Path(__file__).resolve().parents[1] / "docs" / "tuning.md"


def _docs_best_settings() -> dict[tuple[str, str, str], str]:
    text = DOCS.read_text().split("**Best settings**", 1)[1]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].startswith("mnist-"):
            rows[(cells[0], cells[1], cells[2])] = cells[3]
    return rows


def _parse_setting(text: str) -> dict[str, object]:
    """``inner_steps=3, solver.h=0.00226, λ=(1.38, 0.154)`` -> ``{"inner_steps": 3, "solver.h": 0.00226, "step_scale": [1.38, 0.154]}``."""
    out: dict[str, object] = {}
    for key, value in re.findall(r"([\w.]+)=(\([^)]*\)|[^,]+)", text):
        key = {"λ": "step_scale"}.get(key, key)  # the table names the step scale as tuning.report.fmt_overrides does
        if value.startswith("("):
            out[key] = [float(v) for v in value.strip("()").split(",")]
        else:
            out[key] = int(value) if re.fullmatch(r"-?\d+", value.strip()) else float(value)
    return out


def test_shipped_settings_are_the_studys_best_settings():
    docs = _docs_best_settings()
    assert ("mnist-ddpm", "box") in available()
    for model, task in available():
        tuned = load_tuned(model, task)
        assert tuned.steps == tuned.study["steps"] and tuned.study["data"] == "mnist-validation" and tuned.study["command"]
        assert set(tuned.methods) == {m for (mo, t, m) in docs if (mo, t) == (model, task)}
        for method, overrides in tuned.methods.items():
            assert overrides == _parse_setting(docs[model, task, method]), (model, task, method)


def test_every_tuned_setting_is_accepted_by_its_method():
    from constrained_diffusion.evaluation.harness import resolve_recipe

    for model, task in available():
        tuned = load_tuned(model, task)
        for method, overrides in tuned.methods.items():
            recipe = resolve_recipe(method, {**overrides, "steps": tuned.steps})
            assert recipe.config.steps == tuned.steps


def test_a_study_results_file_regenerates_the_settings(tmp_path):
    shipped = load_tuned("mnist-ddpm", "box")
    results = {"config": {**{k: v for k, v in shipped.study.items() if k != "command"}},
               "pairs": [{"model": "mnist-ddpm", "task": "box",
                          "methods": {m: {"overrides": {k: tuple(v) if isinstance(v, list) else v for k, v in o.items()}, "validation": 1.0}
                                      for m, o in shipped.methods.items()}}]}
    (tmp_path / "results.json").write_text(__import__("json").dumps(results))
    [path] = write_tuned(tmp_path / "results.json", tmp_path / "tuned", command=shipped.study["command"])
    again = load_tuned(path=path)
    assert (again.model, again.task, again.steps, again.methods) == ("mnist-ddpm", "box", shipped.steps, shipped.methods)
    assert again.study == shipped.study
    assert tuned_from_results(results)[0]["validation_psnr"]["dps"] == 1.0
    assert sorted(p.name for p in (tmp_path / "tuned").iterdir()) == ["mnist-ddpm-box.yaml"]  # no temporary file left


def test_missing_settings_name_what_is_shipped():
    with pytest.raises(ValueError, match="no tuned settings for model 'mnist-ddpm' and task 'sr4' .*mnist-ddpm/box"):
        load_tuned("mnist-ddpm", "sr4")
