"""Step-size rules: how far a correction moves along a solver's direction ``d``.

A rule is a small function of a `StepContext` that returns the per-sample factor ``s``
(shape ``(B,)``); the update is ``x <- x + s d``. Rules live in a registry: a user rule plugs
in by name (``step_rule="my-rule"``) after one `register_step_size` call. What a rule reads
beyond ``lambda`` and ``d`` (the residual, the unguided update, the spectral radius of ``J``)
is computed only when it reads it.

Built-in rules:

* ``"dynamic"`` — ``s = lambda / ||d||_inf``: the paper's rule (Graikos et al., NeurIPS 2025,
  "dynamic infinity-norm scaling"); no pixel moves by more than ``lambda``.
* ``"constant"`` — ``s = lambda``: the raw direction, e.g. a plain gradient step.
* ``"residual"`` — ``s = lambda / r`` with ``r`` the constraint's residual. For a linear
  constraint (also through a decoder, `DecodedConstraint`) ``e = A^T (y - A x0)`` is the
  negative gradient of ``0.5 r^2``, so this step follows the gradient of the norm ``r``
  itself: DPS's ``zeta / ||y - A(x0)||`` (Chung et al., ICLR 2023). For a nonlinear
  constraint, whose residual is its loss ``L``, it is a step along ``-grad log L``.
* ``"norm-ratio"`` — ``s = lambda ||Delta||_2 / ||d||_2`` with ``Delta`` the unguided
  sampler update of this step (``x_prev - x_t``): the guidance moves ``lambda`` times as far as
  the sampler itself, FreeDoM's rescaling (Yu et al., ICCV 2023).
* ``"arnoldi"`` — ``s = lambda / mu^2`` with ``mu`` the largest ``|eigenvalue|`` of ``J``
  estimated by ``n`` Arnoldi steps on finite-difference JVPs at the step's ``x_t``. For
  ``d = J e`` the error contracts as ``e <- (I - s J^2) e`` along an eigenvector, so
  ``lambda < 2`` is the stability bound and ``lambda = 1`` removes the dominant component.
  The paper's reference code (its Jacobian-analysis notebook) compares this rule, with
  ``lambda = 0.5, 1.5, 3``, against the dynamic rule on Stable Diffusion. It applies to
  solvers whose ``direction_kind`` is ``"jvp"`` and to corrections that move ``x_t``.

Examples:
    >>> import torch
    >>> @register_step_size("half-dynamic")
    ... def half_dynamic(ctx: StepContext) -> torch.Tensor:
    ...     return 0.5 * ctx.lam / ctx.d.flatten(1).abs().amax(dim=1)
    >>> step_factor("half-dynamic", 1.0, torch.tensor([[2.0, -4.0]])).flatten().tolist()
    [0.125]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from constrained_diffusion.linalg.arnoldi import largest_eigenvalue
from constrained_diffusion.linalg.reductions import per_sample, safe_ratio

__all__ = [
    "STEP_SIZE_RULES", "StepContext", "StepSizeRule", "get_step_size", "largest_eigenvalue", "register_step_size",
    "describe_step", "step_factor", "step_size_names",
]


class StepContext:
    """What a rule may read, each part computed on first access.

    Args:
        lam: the base step size ``lambda_k`` of this inner step.
        d: the direction, ``(B, *sample_shape)``, detached.
        residual: ``(B,)`` constraint residual, or a zero-argument callable giving it.
        update: the unguided sampler update ``x_prev - x_t``, or a callable giving it.
        mu: ``(B,)`` largest ``|eigenvalue|`` of ``J``, or a callable giving it.

    Raises:
        ValueError: on access to a part that was not provided, naming it.
    """

    def __init__(self, lam: float, d: Tensor, residual: Tensor | Callable[[], Tensor] | None = None,
                 update: Tensor | Callable[[], Tensor] | None = None, mu: Tensor | Callable[[], Tensor] | None = None) -> None:
        self.lam = float(lam)
        self.d = d.detach()
        self._parts = {"residual": residual, "update": update, "mu": mu}

    def _get(self, part: str, what: str) -> Tensor:
        value = self._parts[part]
        if value is None:
            raise ValueError(f"this step-size rule needs {what} ({part!r}), which the correction did not provide")
        if callable(value):
            value = value()
            self._parts[part] = value
        return value.detach()

    @property
    def residual(self) -> Tensor:
        """``(B,)`` residual of the constraint at the current ``x0_hat``."""
        return self._get("residual", "the residual")

    @property
    def update(self) -> Tensor:
        """The unguided update ``x_prev - x_t``, shape of ``d``."""
        return self._get("update", "the unguided update")

    @property
    def mu(self) -> Tensor:
        """``(B,)`` largest ``|eigenvalue|`` of the denoiser Jacobian at this step's ``x_t``."""
        return self._get("mu", "the eigenvalue estimate mu")


@dataclass(frozen=True)
class StepSizeRule:
    """A registered rule.

    Attributes:
        name: the registry name.
        factor: ``StepContext -> (B,)`` per-sample factor.
        direction_kinds: the solver ``direction_kind`` values it is meant for (``None``: any).
        needs_jacobian: whether it probes the denoiser's Jacobian (it cannot serve a correction
            that edits ``x0`` directly).
    """

    name: str
    factor: Callable[[StepContext], Tensor]
    direction_kinds: frozenset[str] | None = None
    needs_jacobian: bool = False


_RULES: dict[str, StepSizeRule] = {}


def register_step_size(name: str, *, direction_kinds: set[str] | None = None,
                       needs_jacobian: bool = False) -> Callable[[Callable[[StepContext], Tensor]], Callable[[StepContext], Tensor]]:
    """Decorator: register ``factor(ctx) -> (B,)`` as the step-size rule ``name``.

    Raises:
        ValueError: an empty name.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"a step-size rule needs a non-empty name, got {name!r}")

    def decorate(factor: Callable[[StepContext], Tensor]) -> Callable[[StepContext], Tensor]:
        kinds = frozenset(direction_kinds) if direction_kinds is not None else None
        _RULES[name] = StepSizeRule(name, factor, kinds, needs_jacobian)
        return factor

    return decorate


def step_size_names() -> list[str]:
    """Registered rule names, sorted."""
    return sorted(_RULES)


def get_step_size(name: str) -> StepSizeRule:
    """The rule registered as ``name``.

    Raises:
        ValueError: an unknown name (lists the known ones).
    """
    if name not in _RULES:
        raise ValueError(f"step_rule must be one of {tuple(step_size_names())}, got {name!r}")
    return _RULES[name]


def step_factor(rule: str, lam: float, d: Tensor, residual: Tensor | None = None, update: Tensor | None = None,
                mu: Tensor | None = None) -> Tensor:
    """Per-sample factor ``s``, shape ``(B, 1, ..., 1)``, of rule ``rule`` for direction ``d``.

    Args:
        rule: a registered rule name.
        lam: the base step size ``lambda``.
        d: the direction, ``(B, *sample_shape)``.
        residual: ``(B,)`` constraint residual (rule ``"residual"``).
        update: the unguided update ``x_prev - x_t`` (rule ``"norm-ratio"``).
        mu: ``(B,)`` largest ``|eigenvalue|`` of ``J`` (rule ``"arnoldi"``).
    """
    return factor_of(get_step_size(rule), StepContext(lam, d, residual=residual, update=update, mu=mu))


def describe_step(step_scale: float | tuple[float, float], step_rule: str | None = None) -> str:
    """How a log line or a table names the step scale ``lambda`` and the step rule.

    Examples:
        >>> describe_step((0.5, 0.1), "dynamic")
        "λ=0.5→0.1 by the 'dynamic' step rule"
        >>> describe_step(0.25)
        'λ=0.25'
    """
    scale = "→".join(f"{v:.3g}" for v in step_scale) if isinstance(step_scale, (tuple, list)) else f"{step_scale:.3g}"
    return f"λ={scale}" + ("" if step_rule is None else f" by the {step_rule!r} step rule")


def factor_of(rule: StepSizeRule, ctx: StepContext) -> Tensor:
    """``rule.factor(ctx)`` in ``d``'s dtype, reshaped to ``(B, 1, ..., 1)``."""
    return per_sample(rule.factor(ctx).to(ctx.d), ctx.d.ndim)


def _lam_like(ctx: StepContext) -> Tensor:
    return torch.full((ctx.d.shape[0],), ctx.lam, dtype=ctx.d.dtype, device=ctx.d.device)


@register_step_size("dynamic")
def dynamic(ctx: StepContext) -> Tensor:
    """``lambda / ||d||_inf`` (the paper's)."""
    return safe_ratio(_lam_like(ctx), ctx.d.flatten(1).abs().amax(dim=1))


@register_step_size("constant")
def constant(ctx: StepContext) -> Tensor:
    """``lambda``."""
    return _lam_like(ctx)


@register_step_size("residual")
def residual(ctx: StepContext) -> Tensor:
    """``lambda / r`` (DPS)."""
    return safe_ratio(_lam_like(ctx), ctx.residual.to(ctx.d))


@register_step_size("norm-ratio")
def norm_ratio(ctx: StepContext) -> Tensor:
    """``lambda ||Delta||_2 / ||d||_2`` (FreeDoM)."""
    return safe_ratio(ctx.lam * ctx.update.flatten(1).norm(dim=1).to(ctx.d), ctx.d.flatten(1).norm(dim=1))


@register_step_size("arnoldi", direction_kinds={"jvp"}, needs_jacobian=True)
def arnoldi(ctx: StepContext) -> Tensor:
    """``lambda / mu_max^2``."""
    return safe_ratio(_lam_like(ctx), ctx.mu.to(ctx.d) ** 2)


STEP_SIZE_RULES: tuple[str, ...] = ("dynamic", "constant", "residual", "norm-ratio", "arnoldi")
"""The built-in rules (`step_size_names` also lists the ones registered later)."""
