"""Sampler and solver configurations load from JSON and YAML."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

import constrained_diffusion as cd


def test_yaml_and_json_round_trip(tmp_path, gaussian):
    (tmp_path / "c.yaml").write_text("steps: 7\ninner_steps: 2\nlr: [0.3, 0.05]\neta: 0.0\nsolver: {name: exact-jvp, method: double-backward}\n")
    cfg = cd.SamplerConfig.from_file(tmp_path / "c.yaml")
    assert cfg.steps == 7 and cfg.lr == (0.3, 0.05) and cfg.solver.method == "double-backward"
    (tmp_path / "c.json").write_text(cfg.model_dump_json())
    again = cd.SamplerConfig.from_file(tmp_path / "c.json")
    assert again == cfg
    sampler = cd.ConstrainedSampler.from_config(gaussian, str(tmp_path / "c.yaml"))
    assert isinstance(sampler.solver, cd.ExactJVP) and sampler.solver.method == "double-backward"
    assert sampler.config.steps == 7


def test_sampler_exposes_its_config(gaussian):
    s = cd.ConstrainedSampler(gaussian, cd.InexactNewton(h=0.01), steps=4, inner_steps=1, lr=0.2)
    data = json.loads(s.config.model_dump_json())
    assert data == {"steps": 4, "inner_steps": 1, "lr": 0.2, "eta": 0.0, "noise": "ddim", "output": "sample",
                    "solver": {"name": "inexact-newton", "h": 0.01}, "step_size": "dynamic", "arnoldi_iterations": 10, "target": "x_t", "window": [0.0, 1.0],
                    "time_travel": 0, "time_travel_window": [0.0, 1.0], "residual_tol": 0.0, "min_decrease": None,
                    "discrepancy_tau": 1.0}
    rebuilt = cd.ConstrainedSampler.from_config(gaussian, data)
    assert rebuilt.solver.h == 0.01 and rebuilt.config == s.config


def test_step_sizes_follow_the_paper():
    assert cd.SamplerConfig(inner_steps=5).step_sizes() == pytest.approx([0.5, 0.4, 0.3, 0.2, 0.1])
    assert cd.SamplerConfig(inner_steps=3, lr=0.2).step_sizes() == [0.2, 0.2, 0.2]
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
