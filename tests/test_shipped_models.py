"""The weights that ship with the package load and do what their model cards say."""

from __future__ import annotations

import pytest
import torch

import constrained_diffusion as cd
from constrained_diffusion.models.pretrained import PRETRAINED_DIR


def test_shipped_classifier_is_at_least_97_percent_accurate():
    classifier = cd.models.mnist_classifier()
    images, labels = cd.data.mnist("test")
    with torch.no_grad():
        accuracy = float((classifier(images).argmax(dim=1) == labels).float().mean())
    assert accuracy >= 0.97


def test_missing_shipped_weights_give_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no shipped weights 'nope.safetensors'"):
        cd.models.pretrained_path("nope.safetensors")
    with pytest.raises(ValueError, match="name must be 'ddpm' or 'flow'"):
        cd.MNISTDenoiser.pretrained("vae")  # type: ignore[arg-type]


def test_every_shipped_file_is_safetensors_with_an_architecture():
    files = sorted(PRETRAINED_DIR.glob("*"))
    assert files, "no shipped weights"
    for path in files:
        assert path.suffix == ".safetensors", path
        assert cd.models.weights.read_metadata(path)["architecture"] in {"UNet", "MNISTClassifier"}
