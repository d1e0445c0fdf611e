"""The options renamed in 0.2 (``lr`` -> ``step_scale``, ``step_size`` -> ``step_rule``): the old names still work,
each use warns once (`DeprecationWarning`), the new names never warn, and both names of one option together are an error."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import pytest
import torch
from pydantic import ValidationError

import constrained_diffusion as cd
from constrained_diffusion.recipes.overrides import resolve_recipe
from constrained_diffusion.recipes.tuned import load_tuned, tuned_path
from constrained_diffusion.space import Float, SearchSpace


@contextmanager
def renamed_warnings():
    """Collect the rename warnings (every one of them: ``always``, so a repeat is counted too)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got: list[str] = []
        yield got
    got.extend(str(w.message) for w in caught if issubclass(w.category, DeprecationWarning) and "since 0.2" in str(w.message))


def _box(model):
    truth = model.sample_prior(1, torch.Generator().manual_seed(3))
    mask = torch.zeros(1, *model.sample_shape)
    mask[..., :4] = 1
    return cd.Inpainting(truth, mask)


def test_sampler_config_old_names_work_and_warn_once_each():
    with renamed_warnings() as got:
        old = cd.SamplerConfig(lr=(0.3, 0.1), step_size="constant")
    assert (old.step_scale, old.step_rule) == ((0.3, 0.1), "constant")
    assert len(got) == 2 and "'lr'" in got[0] and "'step_scale'" in got[0] and "'step_size'" in got[1] and "'step_rule'" in got[1]
    with renamed_warnings() as got:
        new = cd.SamplerConfig(step_scale=(0.3, 0.1), step_rule="constant")
        assert new == old and "lr" not in new.model_dump() and new.model_dump()["step_scale"] == (0.3, 0.1)
    assert got == []
    with renamed_warnings() as got:
        assert old.lr == (0.3, 0.1) and old.step_size == "constant"  # reading the old attribute: one warning per read
    assert len(got) == 2


@pytest.mark.parametrize("data", [{"lr": 0.3, "step_scale": 0.3}, {"step_size": "constant", "step_rule": "constant"}])
def test_both_names_of_one_option_are_an_error_naming_both(data):
    old, new = data
    with pytest.raises(ValidationError, match=f"both '{old}' .* and '{new}'"):
        cd.SamplerConfig(**data)
    with pytest.raises(ValidationError, match=f"both '{old}' .* and '{new}'"):
        cd.InnerLoop.Config(**data)


def test_corrections_take_the_old_keyword_and_attribute():
    with renamed_warnings() as got:
        loop = cd.InnerLoop(inner_steps=3, lr=(1.0, 0.0), step_size="constant")
    assert loop.step_sizes() == [1.0, 0.5, 0.0] and loop.step_rule == "constant" and len(got) == 2
    with renamed_warnings() as got:
        assert loop.lr == (1.0, 0.0)
    assert len(got) == 1 and "InnerLoop.lr" in got[0]
    with renamed_warnings() as got:  # a method's own weight (DAPS, PiGDM, MMPS, RED-diff) was called lr too
        spec = cd.SamplerConfig(correction={"name": "daps", "lr": 0.3})
    assert spec.correction.options == {"step_scale": 0.3} and spec.build_correction().step_scale == 0.3 and len(got) == 1
    with pytest.raises(ValueError, match="both 'lr' .* and 'step_scale'"):
        cd.PostStep(lr=0.5, step_scale=0.5)


def test_sampler_keyword_is_an_alias_bit_for_bit(gaussian):
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    c = _box(gaussian)
    new = cd.ConstrainedSampler(gaussian, steps=4, inner_steps=2, step_scale=(0.4, 0.2), step_rule="dynamic")
    with renamed_warnings() as got:
        old = cd.ConstrainedSampler(gaussian, steps=4, inner_steps=2, lr=(0.4, 0.2), step_size="dynamic")
    assert len(got) == 2 and old.config == new.config
    a, b = (s.sample(c, generator=gen(), progress=False) for s in (new, old))
    assert torch.equal(a.sample, b.sample) and torch.equal(a.residuals, b.residuals) and (a.nfe, a.nbe) == (b.nfe, b.nbe)
    with pytest.raises(ValueError, match="both 'lr' .* and 'step_scale'"):
        cd.ConstrainedSampler(gaussian, lr=0.2, step_scale=0.2)


def test_override_language_renames_dotted_and_pair_keys():
    with renamed_warnings() as got:
        pair = resolve_recipe("inexact-newton", {"lr.0": 0.4, "lr.1": 0.2, "inner_steps": 2})
    assert pair.config.step_scale == (0.4, 0.2) and len(got) == 1 and got[0].startswith("--set: 'lr'")
    assert pair.config == resolve_recipe("inexact-newton", {"step_scale.0": 0.4, "step_scale.1": 0.2, "inner_steps": 2}).config
    with renamed_warnings() as got:
        dps = resolve_recipe("dps", {"lr": 0.7, "step_size": "constant"})
    assert (dps.config.step_scale, dps.config.step_rule) == (0.7, "constant") and len(got) == 2
    with renamed_warnings() as got:  # a nested correction: correction.lr and the plain key both reach its option
        nested = [resolve_recipe("pigdm", {key: 0.4}) for key in ("correction.lr", "lr")]
    assert [r.config.correction.options["step_scale"] for r in nested] == [0.4, 0.4] and len(got) == 2
    assert "'correction.lr'" in got[0] and "'correction.step_scale'" in got[0]
    with pytest.raises(ValueError, match="--set for method 'inexact-newton': both 'lr' .* and 'step_scale'"):
        resolve_recipe("inexact-newton", {"lr": 0.3, "step_scale.0": 0.3, "step_scale.1": 0.1})
    with renamed_warnings() as got:  # Recipe.with_config is the same language in Python
        assert cd.recipes.get("mpgd").with_config(lr=0.3).config.step_scale == 0.3
    assert len(got) == 1


def test_search_space_keys_fixed_by_an_old_name():
    space = SearchSpace({"step_scale.0": Float(0.01, 2.0), "step_scale.1": Float(0.01, 2.0), "correction.step_scale": Float(0.1, 1.0)})
    assert space.without(["lr"]).keys() == ("correction.step_scale",)
    assert space.without(["correction.lr"]).keys() == ("step_scale.0", "step_scale.1")


def test_an_old_named_yaml_config_loads_with_a_warning(tmp_path, gaussian):
    (tmp_path / "old.yaml").write_text("steps: 4\ninner_steps: 2\nlr: [0.4, 0.2]\nstep_size: dynamic\n")
    (tmp_path / "new.yaml").write_text("steps: 4\ninner_steps: 2\nstep_scale: [0.4, 0.2]\nstep_rule: dynamic\n")
    with renamed_warnings() as got:
        old = cd.SamplerConfig.from_file(tmp_path / "old.yaml")
    assert old == cd.SamplerConfig.from_file(tmp_path / "new.yaml") and len(got) == 2
    (tmp_path / "nested.yaml").write_text("steps: 4\ncorrection: {name: inner-loop, inner_steps: 2, lr: [0.4, 0.2]}\n")
    with renamed_warnings() as got:
        nested = cd.ConstrainedSampler.from_config(gaussian, str(tmp_path / "nested.yaml"))
    assert nested.correction.step_scale == (0.4, 0.2) and len(got) == 1


def test_an_old_named_tuned_settings_file_loads_with_a_warning(tmp_path):
    text = tuned_path("mnist-ddpm", "box").read_text()
    assert "step_scale:" in text and "\n    lr:" not in text  # the shipped files use the new name
    (tmp_path / "old.yaml").write_text(text.replace("step_scale:", "lr:"))
    with renamed_warnings() as got:
        old = load_tuned(path=tmp_path / "old.yaml")
    assert old.methods == load_tuned("mnist-ddpm", "box").methods
    assert len(got) == sum("step_scale" in o for o in old.methods.values()) and "mnist-ddpm-box" not in got[0] and "old.yaml" in got[0]
