"""``cd.models.load``: the shipped models by name, weight files, diffusers folders and Hub ids."""

from __future__ import annotations

import json

import pytest
import torch

import constrained_diffusion as cd
from constrained_diffusion.models.loading import ALIASES, parse_dtype, weights_path


def test_shipped_names_and_aliases():
    assert cd.models.names() == ["gaussian", "mnist-classifier", "mnist-ddpm", "mnist-flow"]
    ddpm, flow = cd.models.load("mnist-ddpm"), cd.models.load("flow")
    assert isinstance(ddpm, cd.MNISTDenoiser) and ddpm.kind == "ddpm" and ddpm.sample_shape == (1, 32, 32)
    assert isinstance(flow, cd.MNISTDenoiser) and flow.kind == "flow"
    assert isinstance(cd.models.load("classifier"), cd.models.MNISTClassifier)
    assert isinstance(cd.models.load("gaussian"), cd.GaussianDenoiser)
    assert all(ALIASES[a] in cd.models.names() for a in ALIASES)
    # the same weights as the constructor the package documents
    reference = cd.MNISTDenoiser.pretrained("ddpm")
    assert all(torch.equal(a, b) for a, b in zip(ddpm.network.parameters(), reference.network.parameters()))


def test_dtype_by_name_or_object_and_errors():
    assert cd.models.load("mnist-ddpm", dtype="bfloat16").dtype == torch.bfloat16
    assert cd.models.load("gaussian", dtype=torch.float64).dtype == torch.float64
    assert next(cd.models.load("mnist-classifier", dtype="float16").parameters()).dtype == torch.float16
    assert parse_dtype(None) is None and parse_dtype("float32") is torch.float32
    with pytest.raises(ValueError, match="unknown dtype 'half'"):
        cd.models.load("mnist-ddpm", dtype="half")
    with pytest.raises(ValueError, match="CPU only"):
        cd.models.load("gaussian", device="cuda")


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="gaussian, mnist-classifier, mnist-ddpm, mnist-flow"):
        cd.models.load("mnist-vae")


def test_weight_file_by_path(tmp_path, tiny_unet_factory):
    net = tiny_unet_factory(sample_size=16, attention=(8,))
    path = cd.models.save_weights(tmp_path / "flow.safetensors", net, {"kind": "flow"})
    model = cd.models.load(path)
    assert isinstance(model, cd.MNISTDenoiser) and model.kind == "flow" and model.sample_shape == (1, 16, 16)
    assert weights_path(path) == path and weights_path("ddpm") == cd.models.pretrained_path("mnist_ddpm.safetensors")
    assert weights_path("gaussian") is None and weights_path(tmp_path) is None


def test_diffusers_folder_dispatches_on_model_index(tmp_path):
    from tiny_pipelines import tiny_sd, tiny_sd3

    tiny_sd(tmp_path).save_pretrained(tmp_path / "sd")
    sd = cd.models.load(tmp_path / "sd", dtype="float16")
    assert isinstance(sd, cd.StableDiffusionDenoiser) and sd.sample_shape == (4, 16, 16) and sd.dtype == torch.float16
    tiny_sd3().save_pretrained(tmp_path / "sd3")
    flow = cd.models.load(str(tmp_path / "sd3"))
    assert isinstance(flow, cd.FlowMatchDenoiser) and flow.sample_shape == (4, 16, 16)
    for dtype in (torch.float16, torch.bfloat16):  # the transformer and the VAE both take the dtype (with or without accelerate)
        half = cd.FlowMatchDenoiser.from_pretrained(tmp_path / "sd3", torch_dtype=dtype)
        assert half.dtype == dtype and next(half.pipe.vae.parameters()).dtype == dtype


def test_folders_that_hold_no_supported_pipeline(tmp_path):
    with pytest.raises(ValueError, match="no model_index.json"):
        cd.models.load(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(ValueError, match="holds a KandinskyPipeline; expected one of StableDiffusionPipeline"):
        cd.models.load(tmp_path)


def test_uncached_hub_id_fails_at_once_naming_the_model(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on a machine without network
    with pytest.raises(FileNotFoundError, match="model 'no-such-org/no-such-model': not a local folder, not in the"):
        cd.models.load("no-such-org/no-such-model")
