"""Working precision: half-precision values are lifted to float32 before losses and reductions.

Networks run in float16 or bfloat16 (Stable Diffusion, SD3, Flux), but a loss, a norm or a
softmax over their outputs loses most of its digits there (bfloat16 keeps 8 mantissa bits).
Constraints therefore compute in ``upcast(x)``: float32 for a half-precision ``x``, ``x``
itself otherwise (float64 stays float64).
"""

from __future__ import annotations

import torch
from torch import Tensor

HALF_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)


def upcast(x: Tensor) -> Tensor:
    """``x`` in float32 if it is float16 or bfloat16, else unchanged (no copy).

    Examples:
        >>> upcast(torch.ones(2, dtype=torch.bfloat16)).dtype
        torch.float32
        >>> upcast(torch.ones(2, dtype=torch.float64)).dtype
        torch.float64
    """
    return x.float() if x.dtype in HALF_DTYPES else x
