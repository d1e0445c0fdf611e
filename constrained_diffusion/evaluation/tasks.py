"""The MNIST evaluation tasks: each turns clean test digits into a constraint.

* ``"box"`` — the top half of the image is missing;
* ``"free-form"`` — random brush strokes hide 30% of the image (one seeded mask per digit);
* ``"sr4"`` — x4 super-resolution from a 8x8 bicubic (antialiased) down-sampling.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from constrained_diffusion.constraints.base import Constraint
from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.constraints.masks import free_form_mask
from constrained_diffusion.constraints.super_resolution import SuperResolution

Task = Literal["box", "free-form", "sr4"]
TASKS: tuple[Task, ...] = ("box", "free-form", "sr4")


def make_constraint(task: Task, images: Tensor, first_index: int = 0, seed: int = 0) -> Constraint:
    """The constraint of ``task`` for clean ``images`` ``(B, 1, H, W)``.

    ``first_index`` is the position of ``images[0]`` in the test set, so that digit ``i``
    always gets the same free-form mask however the set is batched. The constraint lives on
    ``images.device`` (the masks are drawn on the CPU, so every device gets the same ones).
    """
    B, _, H, W = images.shape
    if task == "box":
        mask = torch.ones(1, 1, H, W, device=images.device)
        mask[..., : H // 2, :] = 0
        return Inpainting(images, mask)
    if task == "free-form":
        masks = [free_form_mask((H, W), 0.3, torch.Generator().manual_seed(seed * 100_003 + first_index + i)) for i in range(B)]
        return Inpainting(images, torch.cat(masks).to(images.device))
    if task == "sr4":
        op = SuperResolution(torch.zeros(1, 1, H // 4, W // 4, device=images.device), 4)
        return SuperResolution(op.forward(images), 4)
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")
