"""The weights that ship inside the package (``constrained_diffusion/models/pretrained/``).

* ``mnist_ddpm.safetensors`` — DDPM epsilon-prediction UNet on MNIST (linear betas, T = 1000);
* ``mnist_flow.safetensors`` — rectified-flow velocity UNet on MNIST;
* ``mnist_classifier.safetensors`` — the MNIST classifier.

See the model cards in the documentation for how each was trained and how good it is.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from constrained_diffusion.models.classifier import MNISTClassifier
from constrained_diffusion.models.weights import load_weights

PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def pretrained_path(filename: str) -> Path:
    """Path of a shipped weight file.

    Raises:
        FileNotFoundError: the file is not part of this installation.
    """
    path = PRETRAINED_DIR / filename
    if not path.is_file():
        available = sorted(p.name for p in PRETRAINED_DIR.glob("*.safetensors"))
        raise FileNotFoundError(f"no shipped weights {filename!r} in {PRETRAINED_DIR}; available: {available}")
    return path


def weights_digest(path: str | Path) -> str:
    """``"sha256:"`` and the first 16 hex digits of the file's SHA-256.

    The long-running commands (``evaluate``, ``adaptive``, ``analyze eigvec``) put it in the
    resume key of their records, so records made with other weights are never reused.
    """
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def mnist_classifier(device: torch.device | str | None = None) -> MNISTClassifier:
    """The shipped MNIST classifier (eval mode, no grad): logits ``(B, 10)`` for ``(B, 1, 32, 32)`` in ``[-1, 1]``."""
    model, _ = load_weights(pretrained_path("mnist_classifier.safetensors"), device)
    assert isinstance(model, MNISTClassifier)
    return model
