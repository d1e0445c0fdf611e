r"""The singular value decomposition of a linear constraint's operator, for the methods that need it.

DDRM, DDNM, ΠGDM and DiffPIR work in the spectral space of ``A = U S V^T``: with
``x_bar = V^T x`` and ``y_u = U^T y`` padded to the shape of ``x_bar`` (zero where ``s = 0``),

    A x = y          <=>  s_i x_bar_i = y_u,i        for every i with s_i > 0
    A^+ y            =    V (y_u / s)  on s > 0, 0 elsewhere
    (I - A^+ A) x    =    V (x_bar 1[s = 0])

`svd_of` gives this decomposition for the constraints that have one in closed form:

* `Inpainting` — ``A = diag(m)``: ``U = V = I``, ``s = m`` (weights in ``[0, 1]``);
* `SuperResolution` — ``A = M_h (.) M_w^T`` per channel, separable: ``M = U_M S_M V_M^T``
  (full ``V_M``), so ``V^T x = V_h^T X V_w``, ``s_ij = S_h,i S_w,j`` (0 for ``i`` or
  ``j`` past the low-resolution size) and ``y_u = U_h^T Y U_w`` padded;
* any constraint with an ``svd()`` method returning a `SpectralOperator` (a user's, or a
  plugin's linear physics).

Everything else is refused with a `TypeError` naming the constraint's type.

Examples:
    >>> import torch
    >>> import constrained_diffusion as cd
    >>> y = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> mask = torch.zeros(1, 1, 4, 4); mask[..., :2] = 1
    >>> op = svd_of(cd.Inpainting(y, mask))
    >>> x = torch.zeros(1, 1, 4, 4)
    >>> fixed = op.project(x)     # A^+ y + (I - A^+ A) x
    >>> bool(torch.equal(fixed * mask, y * mask))
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from constrained_diffusion.constraints.base import Constraint
from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.constraints.super_resolution import SuperResolution


class SpectralOperator:
    """``A = U S V^T`` of a linear constraint, applied matrix-free; spectral tensors have the shape of ``x``.

    Subclasses implement `to_spectral` (``V^T``), `from_spectral` (``V``), `singular_values`
    and `y_u` (``U^T y`` padded); `project` and `pinv` follow.
    """

    def to_spectral(self, x: Tensor) -> Tensor:
        """``V^T x``, ``(B, *sample_shape)`` to the same shape."""
        raise NotImplementedError

    def from_spectral(self, x_bar: Tensor) -> Tensor:
        """``V x_bar``."""
        raise NotImplementedError

    def singular_values(self, like: Tensor) -> Tensor:
        """``s`` broadcastable to ``like``'s shape (0 on the null space)."""
        raise NotImplementedError

    def y_u(self) -> Tensor:
        """``U^T y`` padded to the spectral shape (0 where ``s = 0``)."""
        raise NotImplementedError

    def observed(self, like: Tensor) -> Tensor:
        """``1[s > 0]`` as a boolean tensor broadcastable to ``like``."""
        return self.singular_values(like) > 0

    def y_bar(self, like: Tensor) -> Tensor:
        """``y_u / s`` on ``s > 0`` (the spectral coordinates of ``A^+ y``), 0 elsewhere."""
        s = self.singular_values(like).to(like)
        yu = self.y_u().to(like)
        return torch.where(s > 0, yu / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(yu))

    def pinv(self, v_u: Tensor, like: Tensor) -> Tensor:
        """``V S^+ v_u`` for ``v_u`` in the padded measurement coordinates (``U^T v``)."""
        s = self.singular_values(like).to(like)
        return self.from_spectral(torch.where(s > 0, v_u / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(v_u)))

    def project(self, x: Tensor, weight: float | Tensor = 1.0) -> Tensor:
        """``x + weight A^+ (y - A x)``: ``weight = 1`` is DDNM's ``A^+ y + (I - A^+ A) x``."""
        x_bar = self.to_spectral(x)
        y_bar = self.y_bar(x_bar)
        return self.from_spectral(torch.where(self.observed(x_bar), x_bar + weight * (y_bar - x_bar), x_bar))

    def measurement_u(self, r: Tensor, like: Tensor) -> Tensor:
        """``U^T r`` padded, for a residual ``r`` in the measurement space (shape of ``y``)."""
        raise NotImplementedError


@dataclass
class MaskOperator(SpectralOperator):
    """Inpainting: ``U = V = I``, ``s = mask``, ``y_u = mask * y``."""

    mask: Tensor
    y: Tensor

    def to_spectral(self, x: Tensor) -> Tensor:
        return x

    def from_spectral(self, x_bar: Tensor) -> Tensor:
        return x_bar

    def singular_values(self, like: Tensor) -> Tensor:
        return self.mask.to(like).expand_as(like) if self.mask.shape[0] in (1, like.shape[0]) else self.mask.to(like)

    def y_u(self) -> Tensor:
        return self.y

    def measurement_u(self, r: Tensor, like: Tensor) -> Tensor:
        return r.to(like).expand_as(like)


class SeparableOperator(SpectralOperator):
    """Super-resolution ``A X = M_h X M_w^T`` (per channel) by the SVDs of ``M_h`` and ``M_w``."""

    def __init__(self, m_h: Tensor, m_w: Tensor, y: Tensor) -> None:
        self.uh, sh, self.vh = torch.linalg.svd(m_h.double(), full_matrices=True)  # vh: V_h^T, (H, H)
        self.uw, sw, self.vw = torch.linalg.svd(m_w.double(), full_matrices=True)
        H, W = m_h.shape[1], m_w.shape[1]
        s = torch.zeros(H, W, dtype=torch.float64)
        s[: sh.numel(), : sw.numel()] = sh[:, None] * sw[None, :]
        self.s = s
        self.y = y
        self._hw = (H, W)

    def to_spectral(self, x: Tensor) -> Tensor:
        return torch.einsum("ah,...hw,bw->...ab", self.vh.to(x), x, self.vw.to(x))

    def from_spectral(self, x_bar: Tensor) -> Tensor:
        return torch.einsum("ah,...ab,bw->...hw", self.vh.to(x_bar), x_bar, self.vw.to(x_bar))

    def singular_values(self, like: Tensor) -> Tensor:
        return self.s.to(like)

    def measurement_u(self, r: Tensor, like: Tensor) -> Tensor:
        small = torch.einsum("ia,...ij,jb->...ab", self.uh.to(r.dtype), r, self.uw.to(r.dtype))
        out = torch.zeros(*r.shape[:-2], *self._hw, dtype=like.dtype, device=like.device)
        out[..., : small.shape[-2], : small.shape[-1]] = small.to(like)
        return out

    def y_u(self) -> Tensor:
        return self.measurement_u(self.y, self.y.new_zeros((), dtype=self.y.dtype))


def noise_level(constraint: Constraint, default: float) -> float:
    """``sigma_y`` of the methods that need one number: the constraint's largest ``noise_std``, or ``default`` when it has none (or 0).

    Reads the device once (one host synchronisation per call).
    """
    sy = constraint.noise_std
    level = 0.0 if sy is None else float(sy.max())
    return default if level == 0 else level


def svd_of(constraint: Constraint, method: str = "this method") -> SpectralOperator:
    """The `SpectralOperator` of ``constraint`` (see the module docstring).

    Raises:
        TypeError: a constraint without a closed-form SVD, naming its type and ``method``.
    """
    own = getattr(constraint, "svd", None)
    if callable(own):
        return own()
    if isinstance(constraint, Inpainting):
        return MaskOperator(constraint.mask, constraint.y)
    if isinstance(constraint, SuperResolution):
        return SeparableOperator(constraint._mh, constraint._mw, constraint.y)
    raise TypeError(f"{method} needs a linear constraint whose operator has a closed-form SVD or pseudo-inverse "
                    f"(Inpainting, SuperResolution, or a constraint with an svd() method); got {type(constraint).__name__}")
