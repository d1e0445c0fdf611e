"""Every extension point is one class: a user's solver, correction and step-size rule plug in
without touching the engine, and misuse is rejected before any network call."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

import constrained_diffusion as cd
from constrained_diffusion.sampling.step_size import StepContext, register_step_size, step_size_names


def _problem(model: cd.GaussianDenoiser) -> cd.Inpainting:
    truth = model.sample_prior(2, torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 8, 8, dtype=truth.dtype)
    mask[..., :4] = 1
    return cd.Inpainting(truth, mask)


def _gens(n: int = 2) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(10 + i) for i in range(n)]


class HalfError(cd.Solver):
    """d = c e: an unregistered solver with one option."""

    direction_kind = "identity"

    class Config(cd.SolverConfig):
        c: float = 0.5

    def direction(self, denoiser, x_t, t, e, x0):  # noqa: ANN001, ANN201
        return self.c * e.detach()


def test_an_unregistered_solver_is_used_as_given(gaussian):
    assert "half-error" not in cd.solvers.names()
    solver = HalfError(c=0.25)
    assert solver.name == "half-error" and repr(solver) == "HalfError(c=0.25)"
    sampler = cd.ConstrainedSampler(gaussian, solver, steps=4, inner_steps=2)
    assert sampler.solver is solver
    mine = sampler.sample(_problem(gaussian), generator=_gens(), progress=False)
    # the dynamic rule divides out the scale: the same samples as the built-in d = e
    ref = cd.ConstrainedSampler(gaussian, "identity", steps=4, inner_steps=2).sample(_problem(gaussian), generator=_gens(), progress=False)
    assert torch.allclose(mine.sample, ref.sample, atol=1e-12) and mine.nfe == ref.nfe
    with pytest.raises(ValidationError, match="c"):
        HalfError(c="not a number")


def test_registering_is_one_decorator_and_configs_then_name_it(gaussian):
    @cd.solvers.register
    class QuarterError(HalfError):
        name = "quarter-error"

        class Config(cd.SolverConfig):
            c: float = 0.25

    try:
        solver = cd.solvers.get({"name": "quarter-error", "c": 0.1})
        assert isinstance(solver, QuarterError) and solver.c == 0.1
        config = cd.SamplerConfig(solver={"name": "quarter-error"})
        assert cd.ConstrainedSampler.from_config(gaussian, config).solver.c == 0.25
    finally:
        cd.solvers.registry._REGISTRY.pop("quarter-error")


class BlendX0(cd.Correction):
    """A user's correction: MPGD-like x0 edit that also records its residuals, no solver."""

    uses_solver = False

    class Config(cd.sampling.CorrectionConfig):
        inner_steps: int = 1
        step_scale: float = 0.5

    def apply(self, step, x_t):  # noqa: ANN001, ANN201
        x_t, x0 = step.evaluate(x_t)
        e, before = step.constraint.error_and_residual(x0)
        x0 = x0 + self.step_scale * e
        after = step.constraint.residual(x0)
        return cd.sampling.CorrectionResult(step.update(x_t, x0), x0, torch.stack([before, after]))


def test_a_user_correction_runs_and_its_residuals_are_recorded(gaussian):
    sampler = cd.ConstrainedSampler(gaussian, correction=BlendX0(step_scale=1.0), steps=5)
    assert sampler.solver is None
    result = sampler.sample(_problem(gaussian), generator=_gens(), progress=False)
    assert result.residuals.shape == (5, 2, 2) and result.nfe == 5
    # step_scale = 1 on an inpainting error puts the known pixels exactly in place in x0
    assert bool((result.residuals[:, 1] < 1e-5 * result.residuals[:, 0]).all())
    free = cd.ConstrainedSampler(gaussian, steps=5, inner_steps=0).sample(_problem(gaussian), generator=_gens(), progress=False)
    assert bool((result.final_residual < 0.5 * free.final_residual).all())


def test_correction_options_belong_to_the_correction(gaussian):
    with pytest.raises(ValueError, match="inner_steps, step_rule: options of the correction"):
        cd.ConstrainedSampler(gaussian, correction=BlendX0(), inner_steps=3, step_rule="constant")
    with pytest.raises(TypeError, match="correction must be"):
        cd.ConstrainedSampler(gaussian, correction=42)  # type: ignore[arg-type]
    assert type(cd.ConstrainedSampler(gaussian, correction="inner-loop").correction) is cd.InnerLoop  # a registered name
    with pytest.raises(ValueError, match="unknown correction 'nope'"):
        cd.ConstrainedSampler(gaussian, correction="nope")


def test_target_names_the_built_in_corrections(gaussian):
    assert type(cd.ConstrainedSampler(gaussian).correction) is cd.InnerLoop
    assert type(cd.ConstrainedSampler(gaussian, "gradient-descent", inner_steps=1, target="x_prev").correction) is cd.PostStep
    assert type(cd.ConstrainedSampler(gaussian, target="x0", inner_steps=1).correction) is cd.X0Edit
    freedom = cd.recipes.get("freedom").sampler(gaussian).correction
    assert isinstance(freedom, cd.TimeTravel) and isinstance(freedom.inner, cd.PostStep) and freedom.repeats == 3
    # the built-in corrections run the same as when named by target
    mine = cd.ConstrainedSampler(gaussian, correction=cd.InnerLoop(inner_steps=2, step_scale=(0.4, 0.2)), steps=4)
    named = cd.ConstrainedSampler(gaussian, inner_steps=2, step_scale=(0.4, 0.2), steps=4)
    a = mine.sample(_problem(gaussian), generator=_gens(), progress=False)
    b = named.sample(_problem(gaussian), generator=_gens(), progress=False)
    assert torch.equal(a.sample, b.sample) and torch.equal(a.residuals, b.residuals)


def test_x0_edit_has_no_solver_and_rejects_one():
    assert cd.SamplerConfig(target="x0").solver is None
    assert cd.recipes.get("mpgd").config.solver is None
    with pytest.raises(ValidationError, match="never calls a solver"):
        cd.SamplerConfig(target="x0", solver="inexact-newton")


def test_time_travel_window_must_meet_the_window():
    with pytest.raises(ValidationError, match="does not overlap"):
        cd.SamplerConfig(target="x_prev", inner_steps=1, solver="gradient-descent", time_travel=2,
                         window=(0.0, 0.3), time_travel_window=(0.5, 0.9))
    cd.SamplerConfig(target="x_prev", inner_steps=1, solver="gradient-descent", time_travel=2,
                     window=(0.0, 0.6), time_travel_window=(0.5, 0.9))


def test_a_user_step_size_rule_plugs_in_by_name(gaussian):
    calls = []

    @register_step_size("test-third")
    def third(ctx: StepContext) -> torch.Tensor:
        calls.append(ctx.lam)
        return ctx.lam / 3 / ctx.d.flatten(1).abs().amax(dim=1)

    assert "test-third" in step_size_names()
    result = cd.ConstrainedSampler(gaussian, steps=3, inner_steps=2, step_scale=0.3, step_rule="test-third").sample(
        _problem(gaussian), generator=_gens(), progress=False)
    ref = cd.ConstrainedSampler(gaussian, steps=3, inner_steps=2, step_scale=0.1).sample(_problem(gaussian), generator=_gens(), progress=False)
    assert calls == [0.3] * 6 and torch.allclose(result.sample, ref.sample, atol=1e-12)
    with pytest.raises(ValidationError, match="step_rule must be one of"):
        cd.SamplerConfig(step_rule="no-such-rule")


def test_the_arnoldi_rule_checks_the_direction_kind_not_a_name(gaussian):
    class Backprop(cd.Solver):
        direction_kind = "vjp"
        requires_graph = True

        def direction(self, denoiser, x_t, t, e, x0):  # noqa: ANN001, ANN201
            return cd.solvers.vjp_through(denoiser, x0, x_t, e).detach()

    with pytest.raises(ValueError, match="direction_kind='vjp'"):
        cd.ConstrainedSampler(gaussian, Backprop(), step_rule="arnoldi")
    cd.ConstrainedSampler(gaussian, cd.ExactJVP(), step_rule="arnoldi")  # "jvp": accepted


def test_the_arnoldi_spectral_radius_is_computed_only_when_read(gaussian, recorder_factory):
    rec = recorder_factory(gaussian)
    constraint = cd.Inpainting(torch.zeros(1, 1, 8, 8, dtype=torch.float64), torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    result = cd.ConstrainedSampler(rec, step_rule="arnoldi", arnoldi_iterations=6, steps=3, inner_steps=2).sample(constraint, progress=False)
    assert result.nfe == 3  # zero error: no direction, no step size, no Arnoldi JVPs
