"""The evaluation harness's tasks: clean images ``(B, C, H, W)`` -> a pixel-space constraint and its observation.

Every random choice (a box position, a brush stroke, a hole ratio, measurement noise) comes
from the image's own seed (`image_seed`), so an image gets the same observation however the
set is batched or sharded and whichever methods share the run.

* ``box``: the centred box, half the height and half the width (a quarter of the pixels) missing;
* ``top-half``: the top half missing (the MNIST comparison's ``box``);
* ``random-box``: a box of half the height and width (25% of the image) at a seeded position;
* ``free-form``: seeded brush strokes, the hole ratio drawn uniformly from ``hole_ratio``
  (default ``[0.2, 0.4]``; `free_form_mask`);
* ``mnist-free-form``: the MNIST comparison's strokes (``compare``'s ``free-form``): 30% of the
  image, the mask of the digit at held-out position ``i`` (its id read as an integer) drawn from
  ``seed * 100003 + i``, as ``compare`` always drew it (the one task not seeded by `image_seed`);
* ``sr4`` / ``sr8``: x4 / x8 super-resolution from an antialiased bicubic down-sampling;
* ``style``: the ``clip-style`` plugin's Gram-matrix constraint to ``style_image``
  (``CLIPStyle.paper``, the paper's block-3 ViT-B/16 loss, unless ``paper=false``; the
  option ``clip`` names the CLIP model or folder);
* any other registered constraint name, built with the task options (``"@image"`` stands for
  the clean batch).

Measurement noise (``noise_std`` = sigma > 0) is added to the observation ``y`` on the
``[-1, 1]`` pixel scale, ``y = A x + sigma n``, ``n ~ N(0, I)`` from the image's seed, for the
inpainting and super-resolution tasks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from constrained_diffusion.constraints.base import Constraint
from constrained_diffusion.constraints.inpainting import Inpainting
from constrained_diffusion.constraints.masks import free_form_mask
from constrained_diffusion.constraints.super_resolution import SuperResolution

BUILTIN_TASKS: tuple[str, ...] = ("box", "top-half", "random-box", "free-form", "mnist-free-form", "sr4", "sr8", "style")
"""The named tasks; any registered constraint name is a task too."""

NOISY_TASKS = ("box", "top-half", "random-box", "free-form", "mnist-free-form", "sr4", "sr8")
"""The tasks with an observation ``y`` that ``noise_std`` perturbs."""


def image_seed(seed: int, image_id: str, stream: str) -> int:
    """A 63-bit seed for one random ``stream`` (``"noise"``, ``"mask"``, ...) of image ``image_id``.

    It depends on nothing else (not the batch, the rank or the number of processes).

    Examples:
        >>> image_seed(0, "cat.png", "noise") == image_seed(0, "cat.png", "noise") != image_seed(1, "cat.png", "noise")
        True
    """
    digest = hashlib.sha256(f"{seed}/{image_id}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generators(seed: int, ids: Sequence[str], stream: str) -> list[torch.Generator]:
    """One CPU generator per image, seeded by `image_seed`."""
    return [torch.Generator().manual_seed(image_seed(seed, i, stream)) for i in ids]


NOISE_SEEDING: tuple[str, ...] = ("image-id", "position")
"""How an image's initial noise ``x_T`` is seeded (`noise_generators`)."""


def noise_generators(seed: int, ids: Sequence[str], rule: str = "image-id") -> list[torch.Generator]:
    """One CPU generator per image for its initial noise ``x_T``, by the seeding ``rule``.

    * ``"image-id"`` (the harness's rule): ``image_seed(seed, id, "noise")``, a hash of the id;
    * ``"position"`` (``compare``'s rule since 0.1): the image at held-out position ``i`` (its id
      read as an integer) draws from ``seed * 1_000_003 + i``.

    Examples:
        >>> g = noise_generators(2, ["00007"], "position")[0]
        >>> torch.equal(torch.randn(3, generator=g), torch.randn(3, generator=torch.Generator().manual_seed(2_000_013)))
        True
    """
    if rule == "position":
        return [torch.Generator().manual_seed(seed * 1_000_003 + _position(i, "noise_seeding: position")) for i in ids]
    if rule != "image-id":
        raise ValueError(f"noise_seeding must be one of {NOISE_SEEDING}, got {rule!r}")
    return generators(seed, ids, "noise")


def check_task(task: str, options: Mapping[str, Any], noise_std: float, style_image: Any = None) -> None:
    """Reject an unknown task, bad options or noise the task cannot take, before anything runs.

    Raises:
        ValueError: naming ``--task``, ``--noise-std``, ``--style-image`` or the option.
    """
    from constrained_diffusion.constraints import registry

    if task not in BUILTIN_TASKS and task not in registry.names():
        raise ValueError(f"--task: unknown task {task!r}; expected one of {list(BUILTIN_TASKS)} or a registered constraint "
                         f"({', '.join(registry.names())})")
    if not noise_std >= 0:
        raise ValueError(f"--noise-std must be >= 0, got {noise_std}")
    if noise_std > 0 and task not in NOISY_TASKS:
        raise ValueError(f"--noise-std: task {task!r} has no observation to perturb (only {', '.join(NOISY_TASKS)})")
    if task == "free-form":
        lo, hi = _hole_range(options)
        if not 0 < lo <= hi <= 0.9:
            raise ValueError(f"--set task.hole_ratio: expected [low, high] with 0 < low <= high <= 0.9, got {[lo, hi]}")
    elif task == "style" and style_image is None:
        raise ValueError("--style-image: the style task needs a reference image")
    elif task in BUILTIN_TASKS and task != "style" and options:
        raise ValueError(f"--set task.{next(iter(options))}: task {task!r} takes no options")


def _hole_range(options: Mapping[str, Any]) -> tuple[float, float]:
    value = options.get("hole_ratio", (0.2, 0.4))
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"--set task.hole_ratio: expected a number or [low, high], got {value!r}")
    return float(value[0]), float(value[1])


def _position(image_id: str, option: str = "--task mnist-free-form") -> int:
    try:
        return int(image_id)
    except ValueError:
        raise ValueError(f"{option}: image ids must be held-out positions (integers), got {image_id!r}") from None


@dataclass
class Problem:
    """A batch's constraint (pixel space) and what to show as its observation.

    Attributes:
        constraint: the pixel-space constraint of the batch.
        observation: ``(B, C, H, W)`` in ``[-1, 1]``: the known pixels (holes grey) or the
            low-resolution image up-sampled (nearest), for the grid and ``images/observation``.
    """

    constraint: Constraint
    observation: Tensor


def _box_mask(B: int, H: int, W: int, positions: Sequence[tuple[int, int]] | None) -> Tensor:
    mask = torch.ones(B, 1, H, W)
    h, w = H // 2, W // 2
    for b in range(B):
        top, left = positions[b] if positions is not None else ((H - h) // 2, (W - w) // 2)
        mask[b, :, top:top + h, left:left + w] = 0
    return mask


def make_problem(task: str, images: Tensor, ids: Sequence[str], seed: int = 0, noise_std: float = 0.0,
                 options: Mapping[str, Any] | None = None, style_image: Any = None) -> Problem:
    """The constraint of ``task`` for clean ``images`` ``(B, C, H, W)`` in ``[-1, 1]`` with ids ``ids``.

    Args:
        task: a `BUILTIN_TASKS` name or a registered constraint.
        images: the clean batch (the ground truth).
        ids: one id per image; it seeds the image's masks and noise (`image_seed`).
        seed: the run's seed.
        noise_std: sigma of the measurement noise on the ``[-1, 1]`` scale.
        options: the task's options (``hole_ratio`` for ``free-form``; a registered
            constraint's keyword arguments, ``"@image"`` for the batch).
        style_image: the reference of the ``style`` task (a path or ``(1, 3, H, W)`` tensor).

    Raises:
        ValueError: as `check_task`; ``len(ids) != B``.
    """
    options = dict(options or {})
    check_task(task, options, noise_std, style_image)
    B, C, H, W = images.shape
    if len(ids) != B:
        raise ValueError(f"ids has {len(ids)} entries for a batch of {B}")
    noise = torch.cat([torch.randn(1, C, H, W, generator=g) for g in generators(seed, ids, "observation")]).to(images)
    if task in ("box", "top-half", "random-box", "free-form", "mnist-free-form"):
        mask = _inpainting_mask(task, (B, H, W), ids, seed, options).to(images)
        y = images + noise_std * noise if noise_std > 0 else images
        return Problem(Inpainting(y, mask), (y * mask).clamp(-1, 1))
    if task in ("sr4", "sr8"):
        return _super_resolution_problem(task, images, noise, noise_std)
    return _registered_problem(task, images, options, style_image)


def _inpainting_mask(task: str, shape: tuple[int, int, int], ids: Sequence[str], seed: int, options: Mapping[str, Any]) -> Tensor:
    """The ``(B, 1, H, W)`` mask (1 = known pixel) of an inpainting task, seeded per image."""
    B, H, W = shape
    if task == "box":
        return _box_mask(B, H, W, None)
    if task == "top-half":
        mask = torch.ones(B, 1, H, W)
        mask[..., : H // 2, :] = 0
        return mask
    if task == "random-box":
        gens = generators(seed, ids, "mask")
        pos = [(int(torch.randint(0, H - H // 2 + 1, (1,), generator=g)), int(torch.randint(0, W - W // 2 + 1, (1,), generator=g)))
               for g in gens]
        return _box_mask(B, H, W, pos)
    if task == "mnist-free-form":
        return torch.cat([free_form_mask((H, W), 0.3, torch.Generator().manual_seed(seed * 100_003 + _position(i))) for i in ids])
    lo, hi = _hole_range(options)
    masks = []
    for g in generators(seed, ids, "mask"):
        ratio = lo + (hi - lo) * float(torch.rand((), generator=g))
        masks.append(free_form_mask((H, W), ratio, g))
    return torch.cat(masks)


def _super_resolution_problem(task: str, images: Tensor, noise: Tensor, noise_std: float) -> Problem:
    """The ``sr4``/``sr8`` problem: ``images`` down-sampled by the factor, plus ``noise_std`` times ``noise`` subsampled."""
    f = int(task[2:])
    _, C, H, W = images.shape
    if H % f or W % f:
        raise ValueError(f"--task {task}: the resolution {W}x{H} is not divisible by {f}")
    y = SuperResolution(torch.zeros(1, C, H // f, W // f, dtype=images.dtype, device=images.device), f).forward(images)
    if noise_std > 0:
        y = y + noise_std * noise[..., ::f, ::f]
    up = y.repeat_interleave(f, dim=-1).repeat_interleave(f, dim=-2)
    return Problem(SuperResolution(y, f), up.clamp(-1, 1))


def _registered_problem(task: str, images: Tensor, options: dict[str, Any], style_image: Any) -> Problem:
    """The ``style`` problem (CLIP style of ``style_image``) or a registered constraint's, built with ``options``; no observation."""
    from constrained_diffusion.constraints import registry

    if task == "style":
        style = registry.get_factory("clip-style")
        paper = bool(options.pop("paper", True)) and hasattr(style, "paper")
        constraint = style.paper(style_image, **options) if paper else style(style_image, **options)  # type: ignore[attr-defined]
        return Problem(constraint, images.new_zeros(images.shape))
    kwargs = {k: (images if v == "@image" else v) for k, v in options.items()}
    return Problem(registry.load(task, **kwargs), images.new_zeros(images.shape))
