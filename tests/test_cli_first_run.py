"""A first run of the CLI (issue 26): images smaller than the model by a border (28x28 MNIST digits for 32x32)
are padded, not refused; the evaluate bar moves per denoising step."""

from __future__ import annotations

import warnings

import pytest
import torch
from PIL import Image

from constrained_diffusion.data.images import ImageFolder, TensorImages


def _digit28() -> torch.Tensor:
    x = -torch.ones(1, 28, 28)
    x[:, 6:22, 12:16] = 1.0  # a stroke on a black background
    return x


def test_a_28x28_digit_is_padded_centred_with_its_background():
    images = TensorImages(_digit28()[None].repeat(2, 1, 1, 1), (1, 32, 32), name="mnist28")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x = images.load(0)
    assert x.shape == (1, 32, 32)
    assert torch.equal(x[:, 2:30, 2:30], _digit28())  # the digit unchanged, in the centre
    assert torch.all(x[:, :2] == -1) and torch.all(x[:, :, :2] == -1)  # the border is the background
    assert any("padded to the model's 32x32" in str(w.message) for w in caught)


def test_a_28x28_png_folder_is_padded(tmp_path):
    pixels = ((_digit28()[0] + 1) * 127.5).round().to(torch.uint8).numpy()
    Image.fromarray(pixels, mode="L").save(tmp_path / "d.png")
    with pytest.warns(UserWarning, match="padded"):
        x = ImageFolder(tmp_path, (1, 32, 32)).load(0)
    assert x.shape == (1, 32, 32) and torch.allclose(x[:, 2:30, 2:30], _digit28(), atol=1e-2)


def test_smaller_by_more_than_a_border_is_an_error_that_names_the_fix():
    with pytest.raises(ValueError, match=r"20x20 pixels, smaller than the model's resolution 32x32; pad or resize the images to at least 32x32"):
        TensorImages(torch.zeros(1, 1, 20, 20), (1, 32, 32), name="tiny")


def test_the_evaluate_progress_bar_moves_per_denoising_step(tmp_path, monkeypatch):
    """A 1,000-step method must not look hung: the harness's bar moves after every step, not once per batch."""
    import tqdm.auto

    from constrained_diffusion.cli.main import main

    updates: list[float] = []

    class Recording(tqdm.auto.tqdm):
        def update(self, n: float = 1) -> bool | None:
            if getattr(self, "desc", "").startswith("evaluate"):
                updates.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    argv = ["evaluate", "--model", "mnist-ddpm", "--data", "mnist-test", "--limit", "2", "--batch-size", "2", "--task", "box",
            "--method", "identity", "--steps", "3", "--set", "inner_steps=1", "--device", "cpu", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    assert len([n for n in updates if n > 0]) >= 3  # one per step (2 images / 3 steps each), then the rest of the batch
    assert sum(updates) == pytest.approx(2)
