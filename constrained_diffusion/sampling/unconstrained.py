"""Plain sampling, with no constraint: ``cd.sample(model, steps=50)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from constrained_diffusion.denoisers.base import Denoiser
from constrained_diffusion.sampling.result import SampleResult

__all__ = ["sample"]


def sample(denoiser: Denoiser, steps: int = 20, batch_size: int | None = None,
           generator: torch.Generator | Sequence[torch.Generator] | None = None, x_T: Tensor | None = None, eta: float = 0.0,
           progress: bool = False) -> SampleResult:
    """Draw samples from ``denoiser`` with no constraint: the DDIM (Euler, for a flow) steps alone.

    One network forward per step; no solver and no inner loop is built. The same as
    ``ConstrainedSampler(denoiser, "identity", steps, inner_steps=0).sample(None, ...)``.

    Args:
        denoiser: the model.
        steps: denoising steps (``>= 1``).
        batch_size: number of samples ``B``; default: from ``x_T`` or a list of generators, else 1.
        generator: a ``torch.Generator``, or one per sample (same seed, same sample at the same
            batch size). ``None`` draws the noise from torch's global random state, so the
            samples then change from call to call unless ``torch.manual_seed`` is set first.
        x_T: the initial noise ``(B, *sample_shape)``; drawn with ``generator`` when ``None``.
        eta: DDIM stochasticity in ``[0, 1]`` (0: deterministic given ``x_T``).
        progress: show a progress bar.

    Returns:
        A `SampleResult`: ``images`` ``(B, *sample_shape)``, ``nfe == steps`` and no residual.

    Examples:
        >>> import constrained_diffusion as cd
        >>> model = cd.GaussianDenoiser.smooth((1, 8, 8))
        >>> result = cd.sample(model, steps=10, batch_size=2, generator=torch.Generator().manual_seed(0))
        >>> tuple(result.images.shape), result.nfe, result.nbe, result.final_residual
        ((2, 1, 8, 8), 10, 0, None)
        >>> again = cd.sample(model, steps=10, batch_size=2, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(result.images, again.images)
        True
    """
    from constrained_diffusion.sampling.engine import ConstrainedSampler

    sampler = ConstrainedSampler(denoiser, "identity", steps=steps, inner_steps=0, eta=eta)
    return sampler.sample(None, x_T=x_T, generator=generator, batch_size=batch_size, progress=progress)
