"""The weights that ship with the package load and do what their model cards say."""

from __future__ import annotations

import pytest
import torch

import constrained_diffusion as cd
from constrained_diffusion.models.pretrained import PRETRAINED_DIR


def test_shipped_classifier_is_at_least_97_percent_accurate():
    classifier = cd.models.mnist_classifier()
    images, labels = cd.data.mnist("held-out")
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


@pytest.fixture(scope="module", params=["ddpm", "flow"])
def ddpm(request) -> cd.MNISTDenoiser:
    """Each shipped diffusion model in turn (the DDPM and the rectified flow)."""
    return cd.MNISTDenoiser.pretrained(request.param)


def test_shipped_ddpm_loads_with_its_training_facts(ddpm):
    assert ddpm.kind in ("ddpm", "flow") and ddpm.sample_shape == (1, 32, 32)
    # predicting zero scores >= 1 (the noise's own variance, for epsilon and for velocity targets): a trained model is far below
    assert int(ddpm.metadata["train_steps"]) > 0 and 0 < float(ddpm.metadata["final_loss"]) < 0.5


def test_shipped_ddpm_few_step_sample_is_finite_and_in_range(ddpm):
    r = cd.ConstrainedSampler(ddpm, steps=10, inner_steps=0).sample(None, batch_size=4, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.isfinite(r.sample).all()
    assert float(r.sample.abs().max()) < 2.0  # data lie in [-1, 1]; a trained model stays near it


def test_shipped_ddpm_constrained_beats_unconstrained_tenfold(ddpm):
    digits, _ = cd.data.demo_digits()
    mask = torch.ones(1, 1, 32, 32)
    mask[..., :16, :] = 0
    constraint = cd.Inpainting(digits[:2], mask)
    x_T = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    free = cd.ConstrainedSampler(ddpm, steps=10, inner_steps=0).sample(constraint, x_T=x_T, progress=False)
    fit = cd.ConstrainedSampler(ddpm, "inexact-newton", steps=10, inner_steps=5).sample(constraint, x_T=x_T, progress=False)
    assert bool((fit.final_residual * 10 <= free.final_residual).all()), (fit.final_residual, free.final_residual)
