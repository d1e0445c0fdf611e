"""Sampler and solver configurations load from JSON and YAML."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

import constrained_diffusion as cd


def test_yaml_and_json_round_trip(tmp_path, gaussian):
    (tmp_path / "c.yaml").write_text("steps: 7\ninner_steps: 2\nstep_scale: [0.3, 0.05]\neta: 0.0\nsolver: {name: exact-jvp, method: double-backward}\n")
    cfg = cd.SamplerConfig.from_file(tmp_path / "c.yaml")
    assert cfg.steps == 7 and cfg.step_scale == (0.3, 0.05) and cfg.solver.method == "double-backward"
    (tmp_path / "c.json").write_text(cfg.model_dump_json())
    again = cd.SamplerConfig.from_file(tmp_path / "c.json")
    assert again == cfg
    sampler = cd.ConstrainedSampler.from_config(gaussian, str(tmp_path / "c.yaml"))
    assert isinstance(sampler.solver, cd.ExactJVP) and sampler.solver.method == "double-backward"
    assert sampler.config.steps == 7


def test_sampler_exposes_its_config(gaussian):
    s = cd.ConstrainedSampler(gaussian, cd.InexactNewton(h=0.01), steps=4, inner_steps=1, step_scale=0.2)
    data = json.loads(s.config.model_dump_json())
    assert data == {"steps": 4, "inner_steps": 1, "step_scale": 0.2, "eta": 0.0, "noise": "ddim", "output": "sample",
                    "solver": {"name": "inexact-newton", "h": 0.01}, "step_rule": "dynamic", "arnoldi_iterations": 10, "target": "x_t", "window": [0.0, 1.0],
                    "time_travel": 0, "time_travel_window": [0.0, 1.0], "residual_tol": 0.0, "min_decrease": None,
                    "discrepancy_tau": 1.0}
    rebuilt = cd.ConstrainedSampler.from_config(gaussian, data)
    assert rebuilt.solver.h == 0.01 and rebuilt.config == s.config


def test_step_sizes_follow_the_paper():
    assert cd.SamplerConfig(inner_steps=5).step_sizes() == pytest.approx([0.5, 0.4, 0.3, 0.2, 0.1])
    assert cd.SamplerConfig(inner_steps=3, step_scale=0.2).step_sizes() == [0.2, 0.2, 0.2]
    assert cd.SamplerConfig(inner_steps=1).step_sizes() == [0.5]
    assert cd.SamplerConfig(inner_steps=0).step_sizes() == []


@pytest.mark.parametrize("data,field", [
    ({"steps": 0}, "steps"), ({"inner_steps": -2}, "inner_steps"), ({"stepz": 3}, "stepz"),
    ({"solver": {"name": "inexact-newton", "h": -1}}, "solver"), ({"solver": {"name": "nope"}}, "solver"),
])
def test_invalid_config_names_the_field(data, field):
    with pytest.raises(ValidationError) as info:
        cd.SamplerConfig.model_validate(data)
    assert field in str(info.value)


def test_unknown_file_type(tmp_path):
    (tmp_path / "c.toml").write_text("steps = 3")
    with pytest.raises(ValueError, match="must end in .json, .yaml or .yml"):
        cd.SamplerConfig.from_file(tmp_path / "c.toml")


def test_solver_instance_and_name_give_the_same_samples(gaussian):
    truth = gaussian.sample_prior(1, torch.Generator().manual_seed(0))
    c = cd.Inpainting(truth, torch.ones(1, 1, 8, 8, dtype=truth.dtype))
    a = cd.ConstrainedSampler(gaussian, cd.GradientDescent(), steps=3).sample(c, generator=torch.Generator().manual_seed(1), progress=False)
    b = cd.ConstrainedSampler(gaussian, "gradient-descent", steps=3).sample(c, generator=torch.Generator().manual_seed(1), progress=False)
    assert torch.equal(a.sample, b.sample)


# --- the correction registry and the nested ``correction`` value -------------------------------------------------


class _Halfway(cd.sampling.Correction):
    """A user's correction: the plain update, then ``x_prev += lr * e`` (no solver).

    Its option ``lr`` is its own (a user's field keeps its name: only the built-in configs rename ``lr`` to ``step_scale``).
    """

    uses_solver = False

    class Config(cd.sampling.CorrectionConfig):
        lr: float = 0.5

    def apply(self, step, x_t):
        x_t, x0 = step.evaluate(x_t)
        e, r = step.constraint.error_and_residual(x0)
        return cd.sampling.CorrectionResult(step.update(x_t, x0) + self.lr * e, x0, torch.stack([r, r]))


@pytest.fixture
def halfway():
    cls = cd.sampling.register_correction("halfway-test")(_Halfway)
    yield cls
    from constrained_diffusion.sampling.corrections import registry

    registry._REGISTRY.pop("halfway-test", None)


def _box(model):
    truth = model.sample_prior(1, torch.Generator().manual_seed(3))
    mask = torch.zeros(1, *model.sample_shape)
    mask[..., :4] = 1
    return cd.Inpainting(truth, mask)


def test_user_correction_runs_from_yaml_and_recipe(tmp_path, gaussian, halfway):
    (tmp_path / "c.yaml").write_text("steps: 6\ncorrection: {name: halfway-test, lr: 0.25}\n")
    cfg = cd.SamplerConfig.from_file(tmp_path / "c.yaml")
    assert cfg.solver is None and cfg.correction.name == "halfway-test"
    sampler = cd.ConstrainedSampler.from_config(gaussian, cfg)
    assert isinstance(sampler.correction, halfway) and sampler.correction.lr == 0.25
    c = _box(gaussian)
    gen = torch.Generator().manual_seed(0)
    out = sampler.sample(c, generator=gen, progress=False)
    manual = cd.ConstrainedSampler(gaussian, steps=6, correction=halfway(lr=0.25)).sample(c, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(out.sample, manual.sample)
    recipe = cd.recipes.get("dps").with_config(**{"correction.name": "halfway-test", "correction.lr": 0.25, "steps": 6, "eta": 0.0})
    assert recipe.config.model_dump()["correction"] == {"name": "halfway-test", "lr": 0.25}
    assert torch.equal(recipe.sampler(gaussian).sample(c, generator=torch.Generator().manual_seed(0), progress=False).sample, out.sample)
    assert cd.SamplerConfig.from_file(tmp_path / "c.yaml").model_dump() == cd.SamplerConfig.model_validate(cfg.model_dump()).model_dump()


def test_user_correction_runs_from_sample_set(tmp_path, halfway, capsys):
    """``sample --set correction.name=...`` runs a correction registered in this process, with its own options."""
    from constrained_diffusion.cli.main import main
    from constrained_diffusion.evaluation.records import image_ok

    argv = ["sample", "--model", "gaussian", "--task", "top-half", "--steps", "3", "--quiet", "--out"]
    assert main([*argv, str(tmp_path / "a"), "--set", "correction.name=halfway-test", "correction.lr=0.25"]) == 0
    printed = capsys.readouterr().out
    assert "correction halfway-test" in printed and image_ok(tmp_path / "a" / "sample.png")
    nfe = lambda text: int(next(line for line in text.splitlines() if line.startswith("|") and "NFE" not in line  # noqa: E731
                                and "---" not in line).split("|")[3])
    assert nfe(printed) == 3  # one forward per step: the user's correction, not the paper's inner loop
    assert main([*argv, str(tmp_path / "b")]) == 0
    assert nfe(capsys.readouterr().out) > 3
    assert main([*argv, str(tmp_path / "c"), "--set", "correction.name=no-such-correction"]) == 2
    assert "no-such-correction" in capsys.readouterr().err


def test_user_correction_runs_from_a_yaml_config_through_evaluate(tmp_path, halfway):
    """A method of an ``evaluate --config`` YAML file names the registered correction; its records show its cost."""
    from constrained_diffusion.cli.main import main

    (tmp_path / "run.yaml").write_text(
        "model: gaussian\ndata: mnist-test\ntask: top-half\nlimit: 2\nbatch_size: 2\nsteps: 3\nquiet: true\n"
        "method:\n  - name: inexact-newton\n  - name: inexact-newton\n    label: halfway\n"
        "    set: {correction: {name: halfway-test, lr: 0.25}}\n")
    assert main(["evaluate", "--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "out")]) == 0
    records = [json.loads(line) for line in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    nfe = {r["method"]: r["nfe"] for r in records}
    assert len(records) == 4 and nfe["halfway"] == 3 and nfe["inexact-newton"] > 3


def test_nested_correction_errors_name_the_option(halfway):
    with pytest.raises(ValidationError, match="lr"):
        cd.SamplerConfig(correction={"name": "halfway-test", "lr": "fast"})
    with pytest.raises(ValidationError, match="unknown correction 'nope'"):
        cd.SamplerConfig(correction={"name": "nope"})
    with pytest.raises(ValidationError, match="set correction.inner_steps instead"):
        cd.SamplerConfig(correction="halfway-test", inner_steps=3)
    with pytest.raises(ValidationError, match="calls no solver"):
        cd.SamplerConfig(correction="halfway-test", solver="inexact-newton")


def _nested(config: cd.SamplerConfig) -> dict:
    """The nested form of a flat config: the same sampler, ``correction: {name: ..., **options}``."""
    name = {"x_t": "inner-loop", "x_prev": "post-step", "x0": "x0-edit"}[config.target]
    inner = {"name": name, "inner_steps": config.inner_steps, "step_scale": config.step_scale, "step_rule": config.step_rule}
    if name == "inner-loop":
        inner["arnoldi_iterations"] = config.arnoldi_iterations
    spec = inner if config.time_travel == 0 else {"name": "time-travel", "inner": inner, "repeats": config.time_travel,
                                                   "window": config.time_travel_window}
    data = config.model_dump()
    for key in cd.sampling.config.CORRECTION_FIELDS:
        data.pop(key, None)
    return {**data, "correction": spec}


@pytest.mark.parametrize("name", ["inexact-newton", "dps", "mpgd", "freedom", "paper-inpainting"])
def test_flat_and_nested_forms_sample_bit_for_bit(gaussian, name):
    flat = cd.recipes.get(name, steps=5)
    nested = flat.with_config(correction=_nested(flat.config)["correction"])
    c = _box(gaussian)
    runs = [r.sampler(gaussian).sample(c, generator=torch.Generator().manual_seed(1), progress=False) for r in (flat, nested)]
    assert torch.equal(runs[0].sample, runs[1].sample) and runs[0].nfe == runs[1].nfe and runs[0].nbe == runs[1].nbe
    assert torch.equal(runs[0].residuals, runs[1].residuals)


def test_set_names_a_registered_correction(gaussian, halfway):
    from constrained_diffusion.recipes.overrides import resolve_recipe

    recipe = resolve_recipe("inexact-newton", {"correction.name": "halfway-test", "correction.lr": 0.25, "steps": 6})
    assert recipe.config.correction.options == {"lr": 0.25} and recipe.config.solver is None
    assert isinstance(recipe.sampler(gaussian).correction, halfway)
    switched = resolve_recipe("diffpir", {"correction.name": "ddnm"})  # another correction starts from its own defaults
    assert switched.config.correction.model_dump() == {"name": "ddnm"}
    with pytest.raises(ValueError, match="lam"):
        resolve_recipe("diffpir", {"correction.lam": -1.0})
