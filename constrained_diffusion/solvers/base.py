"""The solver role: turn an error in ``x0``-space into an update direction in ``x_t``-space.

Newton's method would take ``d = J^-1 e`` with ``J = d x0_hat / d x_t``; solvers provide cheap
stand-ins (see the Concepts page): ``J e`` by a finite difference (`InexactNewton`),
``J^T e`` by backpropagation (`GradientDescent`), ``J e`` by forward-mode AD (`ExactJVP`),
``J^-1 e`` by GMRES (`ExactNewton`) and ``e`` itself (`IdentityDirection`). The step-size
rule scales the direction, so a solver need not care about its length.

A solver is one class: its options are a pydantic `SolverConfig` subclass assigned to
``Config`` (validated once, in the generic ``__init__``, and exposed as attributes), what it
computes is ``direction_kind``, and the work is `Solver.direction`. Registering it under its
``name`` (`constrained_diffusion.solvers.register`) is needed only for configuration files and
the CLI: the sampler uses any instance as given.

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> class Scaled(cd.Solver):
    ...     '''d = c e: the identity direction with a (useless) scale, as a worked example.'''
    ...     name = "scaled"
    ...     direction_kind = "identity"
    ...     class Config(cd.solvers.SolverConfig):
    ...         c: float = 2.0
    ...     def direction(self, denoiser, x_t, t, e, x0):
    ...         return self.c * e
    >>> Scaled(c=3.0)
    Scaled(c=3.0)
    >>> Scaled().direction(None, None, None, torch.ones(1, 2), None).tolist()
    [[2.0, 2.0]]
"""

from __future__ import annotations

import contextlib
import re
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from constrained_diffusion.configurable import Configurable
from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.space import EMPTY, SearchSpace

DirectionKind = Literal["jvp", "vjp", "inverse", "identity"]
"""What a solver's direction is: ``J e`` (``"jvp"``), ``J^T e`` (``"vjp"``), ``J^-1 e``
(``"inverse"``) or ``e`` (``"identity"``). Step-size rules that assume one (the ``"arnoldi"``
rule needs ``d = J e``) check it instead of a list of solver names."""


class SolverConfig(BaseModel):
    """Base of a solver's options: subclass it with one field per option.

    ``name`` is filled in from the solver class; unknown options are rejected, naming them.
    """

    model_config = ConfigDict(extra="forbid")
    name: str = ""


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


class Solver(Configurable, ABC):
    """Abstract solver.

    Attributes:
        name: registry name (``"inexact-newton"``, ...), used by configuration files; defaults
            to the class name in kebab case.
        direction_kind: what `direction` computes (see `DirectionKind`); ``None`` if unknown.
        Config: the options' pydantic model; ``self.config`` is the validated instance and each
            option is also an attribute (``solver.h``).
        requires_graph: if true the sampler evaluates ``x0 = D(x_t, t)`` with an autograd
            graph from a leaf ``x_t`` and passes both, so the solver can reuse the forward.
        search_space: the options ``constrained-diffusion tune`` may change, option name ->
            range (`constrained_diffusion.space`: `Float`, `Int`, `Choice`); empty by
            default. A recipe declares the loop's own (step sizes, inner steps).

    Args:
        *args: options by position, in the order ``Config`` declares them.
        **options: options by name.

    Raises:
        pydantic.ValidationError: an invalid or unknown option, naming it.
    """

    name: ClassVar[str]
    direction_kind: ClassVar[DirectionKind | None] = None
    Config: ClassVar[type[SolverConfig]] = SolverConfig  # type: ignore[assignment]
    search_space: ClassVar[SearchSpace] = EMPTY
    requires_graph: bool = False
    _fixed_fields = ("name",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = _kebab(cls.__name__)

    def evaluation_context(self) -> AbstractContextManager[None]:
        """Context in which the sampler evaluates the ``x0`` this solver reuses.

        The default does nothing; `ExactJVP` with ``"double-backward"`` builds its graph with
        math attention, whose backward is itself differentiable.
        """
        return contextlib.nullcontext()

    def check(self, denoiser: Denoiser) -> None:
        """Refuse options that cannot work with this denoiser; `ConstrainedSampler.sample` calls it once per run, before any network call.

        The default does nothing. The finite-difference solvers refuse a given step ``h`` below the
        rounding floor of the denoiser's arithmetic (`constrained_diffusion.linalg.finite_difference.check_h`).
        A check here must not synchronise with the device (it runs on the sync-free path).

        Raises:
            ValueError: naming the option.
        """

    def reset(self) -> None:
        """Forget any state kept between `direction` calls; `ConstrainedSampler.sample` calls it at the start of a run.

        The default does nothing (a solver is a pure function of its arguments). `SecantNewton`,
        which keeps the secant pairs of the current denoising step, starts an empty history.
        """

    @abstractmethod
    def direction(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor, x0: Tensor) -> Tensor:
        """Update direction in ``x_t``-space, before the step-size rule scales it.

        Args:
            denoiser: the model ``D``.
            x_t: current state, ``(B, *sample_shape)``; a leaf requiring grad when
                `requires_graph` is true.
            t: the current time (scalar tensor).
            e: error direction from the constraint, shape of ``x_t``.
            x0: ``D(x_t, t)``, already evaluated (with a graph iff `requires_graph`).

        Returns:
            ``d``, shape of ``x_t``, detached.
        """


def vjp_through(denoiser: Denoiser, x0: Tensor, x_t: Tensor, v: Tensor, create_graph: bool = False) -> Tensor:
    """``J^T v`` from an existing graph ``x0 = D(x_t)``; counts one backward pass."""
    denoiser.count_backward()
    (g,) = torch.autograd.grad(x0, x_t, v, retain_graph=create_graph, create_graph=create_graph)
    return g
