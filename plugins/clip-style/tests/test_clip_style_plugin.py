"""Tests of the clip-style plugin with tiny random CLIP vision models (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cd_clip_style", reason="plugin not installed: pip install -e plugins/...")
import torch
from cd_clip_style import CLIPStyle, gram_matrix
from transformers import CLIPVisionConfig, CLIPVisionModel

import constrained_diffusion as cd
from constrained_diffusion.constraints import DecodedConstraint, registry


def tiny_clip(image_size: int = 32, patch_size: int = 16, seed: int = 0) -> CLIPVisionModel:
    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4,
                              image_size=image_size, patch_size=patch_size)
    return CLIPVisionModel(config)


@pytest.fixture
def clip() -> CLIPVisionModel:
    return tiny_clip()


@pytest.fixture(scope="module")
def denoiser() -> cd.GaussianDenoiser:
    return cd.GaussianDenoiser.smooth((3, 16, 16))


def reference_image(seed: int = 123, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1


# --- discovery -----------------------------------------------------------------------------

def test_entry_point_discovered_and_loads(clip: CLIPVisionModel) -> None:
    assert "clip-style" in registry.names()
    constraint = registry.load("clip-style", reference=reference_image(), clip=clip)
    assert isinstance(constraint, CLIPStyle)
    assert isinstance(constraint, cd.NonlinearConstraint)
    assert registry.get_factory("clip-style") is CLIPStyle


# --- the loss ------------------------------------------------------------------------------

def test_features_are_hidden_states_of_the_block(clip: CLIPVisionModel) -> None:
    style = CLIPStyle(reference_image(), clip=clip, layer=3)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        full = clip(pixel_values=style.preprocess(x), output_hidden_states=True).hidden_states
        feats = style.features(x)
    assert feats.shape == (2, 4, 32)  # (32 / 16)^2 patches, class token dropped
    torch.testing.assert_close(feats, full[3][:, 1:])
    gram = style.gram(x)
    torch.testing.assert_close(gram, feats.transpose(1, 2) @ feats / 4)
    assert gram.shape == (2, 32, 32)


def test_gram_matrix_normalisation() -> None:
    f = torch.randn(2, 5, 3)
    g = gram_matrix(f)
    torch.testing.assert_close(g[1], f[1].T @ f[1] / 5)


def test_the_papers_variant_sums_over_tokens_and_resizes_bicubically(clip: CLIPVisionModel) -> None:
    import torch.nn.functional as F

    ref = reference_image(size=48)
    paper, default = CLIPStyle.paper(ref, clip=clip), CLIPStyle(ref, clip=clip)
    assert (paper.layer, paper.gram_scale, paper.resize) == (3, "sum", "bicubic")
    assert (default.gram_scale, default.resize) == ("mean", "bilinear")
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    bicubic = F.interpolate((x + 1) / 2, size=(32, 32), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(paper.preprocess(x), (bicubic - paper.mean) / paper.std)
    with torch.no_grad():
        feats = paper.features(x)
        torch.testing.assert_close(paper.gram(x), feats.transpose(1, 2) @ feats)  # no 1/N
        torch.testing.assert_close(gram_matrix(feats, "sum"), gram_matrix(feats) * feats.shape[1])
    with pytest.raises(ValueError, match="gram"):
        CLIPStyle(ref, clip=clip, gram="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="resize"):
        CLIPStyle(ref, clip=clip, resize="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="scale"):
        gram_matrix(feats, "none")  # type: ignore[arg-type]


def test_loss_zero_at_reference_and_shape(clip: CLIPVisionModel) -> None:
    ref = reference_image()
    style = CLIPStyle(ref, clip=clip)
    assert style.batch_size is None
    loss = style.loss(ref)
    assert loss.shape == (1,)
    assert float(loss) == pytest.approx(0.0, abs=1e-5)
    x = torch.cat([ref, torch.rand(2, 3, 16, 16) * 2 - 1])
    loss = style.loss(x)
    assert loss.shape == (3,)
    assert float(loss[0]) == pytest.approx(0.0, abs=1e-4)
    assert bool((loss[1:] > 1e-3).all())
    # zero loss gives a zero (not NaN) error
    e, r = style.error_and_residual(ref)
    assert bool(e.isfinite().all()) and float(e.abs().max()) == 0.0


def test_gradcheck_float64() -> None:
    # downsampling 10 -> 8 exercises the antialiased resize; patch 4 gives 4 patches
    clip = tiny_clip(image_size=8, patch_size=4).double()
    ref = reference_image(size=12).double()
    style = CLIPStyle(ref, clip=clip, layer=2)
    assert style.dtype == torch.float64
    x = (torch.rand(1, 3, 10, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    x.requires_grad_(True)
    assert float(style.loss(x.detach())) > 1e-3  # away from the non-differentiable zero of the norm
    assert torch.autograd.gradcheck(style.loss, (x,), eps=1e-6, atol=1e-5, rtol=1e-3)


def test_dtype_argument_casts_model(clip: CLIPVisionModel) -> None:
    style = CLIPStyle(reference_image(), clip=clip, dtype=torch.float64)
    assert style.dtype == torch.float64 and style.reference_gram.dtype == torch.float64
    loss = style.loss(torch.zeros(2, 3, 16, 16))  # float32 samples: loss in float32
    assert loss.dtype == torch.float32 and loss.shape == (2,)


def test_dtype_by_name_and_bad_dtype(clip: CLIPVisionModel) -> None:
    assert CLIPStyle(reference_image(), clip=clip, dtype="float64").dtype == torch.float64
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        CLIPStyle(reference_image(), clip=clip, dtype=torch.int64)
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        CLIPStyle(reference_image(), clip=clip, dtype="float77")


def test_full_clip_model_uses_its_vision_tower() -> None:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4,
                  image_size=32, patch_size=16)
    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=99)
    full = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
    style = CLIPStyle(reference_image(), clip=full)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        expected = full.vision_model(pixel_values=style.preprocess(x), output_hidden_states=True).hidden_states[3][:, 1:]
        torch.testing.assert_close(style.features(x), expected)


def test_model_is_frozen(clip: CLIPVisionModel) -> None:
    style = CLIPStyle(reference_image(), clip=clip)
    assert not style.model.training
    assert all(not p.requires_grad for p in style.model.parameters())
    x = torch.zeros(1, 3, 16, 16)
    e = style.error(x)  # gradient w.r.t. x only
    assert e.shape == x.shape
    assert all(p.grad is None for p in style.model.parameters())


def test_batched_reference(clip: CLIPVisionModel) -> None:
    refs = torch.cat([reference_image(1), reference_image(2)])
    style = CLIPStyle(refs, clip=clip)
    assert style.batch_size == 2
    torch.testing.assert_close(style.loss(refs), torch.zeros(2), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="reference has batch 2"):
        style.loss(torch.zeros(3, 3, 16, 16))


# --- loading -------------------------------------------------------------------------------

def test_loads_from_saved_folder(tmp_path: Path, clip: CLIPVisionModel) -> None:
    clip.save_pretrained(tmp_path / "tiny-clip")
    ref = reference_image()
    from_folder = CLIPStyle(ref, clip=str(tmp_path / "tiny-clip"))
    from_module = CLIPStyle(ref, clip=clip)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(from_folder.loss(x), from_module.loss(x))
    # a pathlib.Path works too, and through the registry
    assert isinstance(registry.load("clip-style", reference=ref, clip=tmp_path / "tiny-clip"), CLIPStyle)


def test_processor_mean_std_read_from_folder(tmp_path: Path, clip: CLIPVisionModel) -> None:
    import json

    folder = tmp_path / "tiny-clip"
    clip.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}))
    style = CLIPStyle(reference_image(), clip=folder)
    torch.testing.assert_close(style.mean.flatten(), torch.full((3,), 0.5))
    torch.testing.assert_close(style.std.flatten(), torch.full((3,), 0.25))
    default = CLIPStyle(reference_image(), clip=clip)
    torch.testing.assert_close(default.mean.flatten(), torch.tensor([0.48145466, 0.4578275, 0.40821073]))


def test_reference_from_image_file(tmp_path: Path, clip: CLIPVisionModel) -> None:
    from PIL import Image

    rgb = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "style.png")
    style = CLIPStyle(tmp_path / "style.png", clip=clip)
    expected = torch.from_numpy(rgb).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1
    torch.testing.assert_close(style.reference, expected)
    assert float(style.loss(expected)) == pytest.approx(0.0, abs=1e-5)
    Image.fromarray(rgb[..., 0]).save(tmp_path / "gray.jpg")  # grayscale JPG -> RGB
    assert CLIPStyle(str(tmp_path / "gray.jpg"), clip=clip).reference.shape == (1, 3, 16, 16)


# --- in the sampler ------------------------------------------------------------------------

def test_sampler_reduces_style_residual(clip: CLIPVisionModel, denoiser: cd.GaussianDenoiser) -> None:
    ref = denoiser.sample_prior(1, torch.Generator().manual_seed(123)).clamp(-1, 1)
    style = CLIPStyle(ref, clip=clip)
    for seed in (0, 1):
        guided = cd.ConstrainedSampler(denoiser, "inexact-newton", steps=5, inner_steps=5, step_scale=(1.0, 0.2)).sample(
            style, generator=torch.Generator().manual_seed(seed), progress=False)
        plain = cd.ConstrainedSampler(denoiser, "inexact-newton", steps=5, inner_steps=0).sample(
            style, generator=torch.Generator().manual_seed(seed), progress=False)
        assert guided.final_residual is not None and plain.final_residual is not None
        assert float(guided.final_residual) < 0.5 * float(plain.final_residual)


def test_decoded_constraint_for_latents(clip: CLIPVisionModel) -> None:
    class Codec:  # a linear "VAE": 4 latent channels <-> 3 pixel channels, 2x upsampling
        def __init__(self) -> None:
            self.w = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)) * 0.3

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            x = torch.einsum("pc,bchw->bphw", self.w, z)
            return torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest").tanh()

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            raise NotImplementedError

    style = CLIPStyle(reference_image(), clip=clip)
    latent = DecodedConstraint(style, Codec())
    latent.validate((4, 8, 8))  # the pixel constraint is not asked about latent shapes
    z = torch.randn(2, 4, 8, 8)
    e, r = latent.error_and_residual(z)
    assert e.shape == z.shape and r.shape == (2,) and bool((r > 0).all())


# --- bad input -----------------------------------------------------------------------------

def test_validate_requires_rgb_images(clip: CLIPVisionModel) -> None:
    style = CLIPStyle(reference_image(), clip=clip)
    style.validate((3, 16, 16))
    with pytest.raises(ValueError, match=r"\(3, H, W\).*DecodedConstraint"):
        style.validate((4, 16, 16))
    with pytest.raises(ValueError, match="RGB image samples"):
        style.validate((3, 256))
    with pytest.raises(ValueError, match="RGB image samples"):
        cd.ConstrainedSampler(cd.GaussianDenoiser.smooth((1, 8, 8)), steps=1).sample(style, progress=False)


@pytest.mark.parametrize("reference, kind, pattern", [
    (torch.zeros(3, 16, 16), ValueError, r"reference must have shape \(1 or B, 3, H, W\)"),
    (torch.zeros(1, 1, 16, 16), ValueError, r"reference must have shape"),
    (torch.full((1, 3, 16, 16), 2.0), ValueError, r"reference must lie in \[-1, 1\]"),
    (torch.full((1, 3, 16, 16), 255.0), ValueError, r"reference must lie in \[-1, 1\]"),
    (torch.full((1, 3, 16, 16), float("nan")), ValueError, r"reference contains .* NaN"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), TypeError, r"reference must be a floating-point"),
    ([[0.0]], TypeError, r"reference must be a torch.Tensor or a path"),
])
def test_bad_reference(clip: CLIPVisionModel, reference: object, kind: type, pattern: str) -> None:
    with pytest.raises(kind, match=pattern):
        CLIPStyle(reference, clip=clip)  # type: ignore[arg-type]


def test_bad_reference_file(tmp_path: Path, clip: CLIPVisionModel) -> None:
    with pytest.raises(FileNotFoundError, match="reference"):
        CLIPStyle(tmp_path / "missing.png", clip=clip)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="reference: cannot read"):
        CLIPStyle(tmp_path / "junk.png", clip=clip)


@pytest.mark.parametrize("layer", [0, 5, -1, 2.0, True])
def test_bad_layer(clip: CLIPVisionModel, layer: object) -> None:
    with pytest.raises(ValueError, match=r"layer must be an integer in 1 \.\. 4"):
        CLIPStyle(reference_image(), clip=clip, layer=layer)  # type: ignore[arg-type]


def test_bad_clip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clip: cannot load a CLIPVisionModel from"):
        CLIPStyle(reference_image(), clip=str(tmp_path / "no-such-model"))
    with pytest.raises(TypeError, match="clip must be a transformers CLIPVisionModel"):
        CLIPStyle(reference_image(), clip=torch.nn.Linear(2, 2))


def test_bad_sample_in_loss(clip: CLIPVisionModel) -> None:
    style = CLIPStyle(reference_image(), clip=clip)
    with pytest.raises(ValueError, match=r"RGB images \(B, 3, H, W\)"):
        style.loss(torch.zeros(1, 1, 16, 16))
