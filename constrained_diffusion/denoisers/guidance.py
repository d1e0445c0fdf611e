"""Classifier-free guidance (Ho & Salimans, 2022) in one batched network call.

With unconditional and conditional outputs ``u`` and ``c`` of the same inputs and guidance
scale ``w``, the guided output is ``u + w (c - u)`` (``w = 1``: the conditional output; ``w = 0``:
the unconditional one). The adapters evaluate both halves in one forward pass of ``[x; x]``
with the conditioning stacked as ``[unconditional; conditional]``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def classifier_free_guidance(predict: Callable[[Tensor], Tensor], x: Tensor, scale: float | None) -> Tensor:
    """``predict(x)``, or with a guidance scale, ``u + scale (c - u)`` from one call on ``[x; x]``.

    Args:
        predict: the network on a batch, ``(N, ...) -> (N, ...)``; when guided it receives
            ``2B`` inputs, the first ``B`` to be run unconditionally, the last ``B`` conditionally
            (the caller stacks its conditioning in that order).
        x: inputs, shape ``(B, ...)``.
        scale: the guidance scale ``w``; ``None`` for a single unguided call.

    Returns:
        The (guided) output, shape ``(B, ...)`` as ``predict`` returns it.

    Examples:
        >>> net = lambda z: z * torch.tensor([[0.0], [1.0]])  # row 0 unconditional, row 1 conditional
        >>> classifier_free_guidance(net, torch.ones(1, 1), 3.0)
        tensor([[3.]])
    """
    if scale is None:
        return predict(x)
    uncond, cond = predict(torch.cat([x, x])).chunk(2)
    return uncond + scale * (cond - uncond)
