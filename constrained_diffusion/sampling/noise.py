"""Seeded Gaussian noise for a batch: sample ``i`` from its own generator when given a list."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Generator = torch.Generator | Sequence[torch.Generator] | None


def randn(batch: int, shape: tuple[int, ...], generator: Generator, device: torch.device,
          dtype: torch.dtype) -> Tensor:
    """``N(0, I)`` noise of shape ``(batch, *shape)``.

    With a list of generators, sample ``i`` comes from ``generator[i]``, so a batch equals the
    same samples drawn one at a time. Noise is drawn on the generator's device and moved
    (``non_blocking``: a host generator's noise reaches a GPU without a host synchronisation).

    Examples:
        >>> a = randn(2, (3,), [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)], torch.device("cpu"), torch.float32)
        >>> b = randn(1, (3,), torch.Generator().manual_seed(1), torch.device("cpu"), torch.float32)
        >>> torch.equal(a[1:], b)
        True
    """
    if isinstance(generator, Sequence):
        if len(generator) != batch:
            raise ValueError(f"generator is a list of {len(generator)} generators but the batch size is {batch}")
        return torch.cat([randn(1, shape, g, device, dtype) for g in generator])
    gen_device = generator.device if generator is not None else device
    return torch.randn((batch, *shape), generator=generator, device=gen_device, dtype=dtype).to(device, non_blocking=True)
