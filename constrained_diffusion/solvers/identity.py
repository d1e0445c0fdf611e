"""The identity-Jacobian baseline: ``d = e``.

Newton's direction for ``J dx_t = e`` is ``J^-1 e``; assuming ``J ~ I`` gives ``d = e``, the
error itself, moved from ``x0`` space onto ``x_t``. It needs no Jacobian product at all: one
inner step costs only the sampler's recompute of ``x0 = D(x_t, t)``, so ``1 + K`` forwards
per denoising step against ``1 + 2K`` for `InexactNewton` and ``1 + K`` forwards plus ``K``
backwards for `GradientDescent`.

It is the control for the Jacobian analysis (``docs/analysis.md``): for a symmetric positive
semi-definite ``J`` one linearised step along ``e`` reduces ``||e - gamma J d||`` at least
as much as one along ``Je``, and on the MNIST DDPM it does so at every time measured. Whether
that carries over to the full sampling loop is what ``constrained-diffusion evaluate
--solvers ... identity`` measures. For latent models ``e`` lives in the latent space of the
constraint (see `EncodedConstraint`), as for every other solver.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.solvers.base import Solver, SolverConfig
from constrained_diffusion.solvers.registry import register


class IdentityDirectionConfig(SolverConfig):
    """Options of `IdentityDirection` (none)."""

    name: Literal["identity"] = "identity"


@register
class IdentityDirection(Solver):
    """``d = e``: the Newton direction under ``J ~ I``; no network call, no graph."""

    name = "identity"
    direction_kind = "identity"
    Config = IdentityDirectionConfig

    def direction(self, denoiser: Denoiser, x_t: Tensor, t: Tensor, e: Tensor, x0: Tensor) -> Tensor:
        """Return ``e`` itself (a copy, ``(B, *sample_shape)``)."""
        return e.detach().clone()
