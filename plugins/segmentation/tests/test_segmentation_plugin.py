"""Tests of the segmentation plugin with a tiny random conv net."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cd_segmentation", reason="plugin not installed: pip install -e plugins/...")
import torch
import torch.nn.functional as F
from cd_segmentation import NETWORK_GROUP, SegmentationGuidance, import_network, load_label_map, network_names, register_network
from torch import nn

import constrained_diffusion as cd
from constrained_diffusion.constraints import DecodedConstraint, registry

FACTORY_SOURCE = '''
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 3, 3, stride=2, padding=1))

class Factories:
    @staticmethod
    def build():
        return build()

def not_a_module():
    return {"weights": 1}

value = 3
'''


def tiny_segnet(num_classes: int = 3, seed: int = 0) -> nn.Module:
    """Images (B, 3, H, W) -> logits (B, K, H/2, W/2)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, num_classes, 3, stride=2, padding=1))


def quadrant_labels(size: int = 16) -> torch.Tensor:
    y = torch.zeros(1, size, size, dtype=torch.long)
    y[:, :, size // 2:] = 1
    y[:, size // 2:, :] = 2
    return y


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = "cd_segmentation_test_factories"
    (tmp_path / f"{name}.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, name, raising=False)
    return name


# --- discovery -----------------------------------------------------------------------------

def test_entry_point_discovered_and_loads() -> None:
    assert "segmentation" in registry.names()
    constraint = registry.load("segmentation", network=tiny_segnet(), target=quadrant_labels())
    assert isinstance(constraint, SegmentationGuidance)
    assert isinstance(constraint, cd.NonlinearConstraint)
    assert registry.get_factory("segmentation") is SegmentationGuidance


def test_network_from_a_registered_name() -> None:
    register_network("test-tiny-segnet")(tiny_segnet)
    guide = registry.load("segmentation", network="test-tiny-segnet", target=quadrant_labels())
    reference = SegmentationGuidance(tiny_segnet(), quadrant_labels())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(guide.loss(x), reference.loss(x))
    assert "test-tiny-segnet" in network_names()


@pytest.mark.parametrize("spec", ["os:abort", "builtins:print", "os.system", "subprocess:Popen"])
def test_a_dotted_callable_is_refused_not_imported(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A configuration's ``network:`` string is looked up among registered names, never imported (``os:abort`` aborted the process)."""
    import os

    called = []
    monkeypatch.setattr(os, "abort", lambda: called.append("abort"))
    with pytest.raises(ValueError, match=r"network: .* is not a registered segmentation network"):
        registry.load("segmentation", network=spec, target=quadrant_labels())
    assert called == []


def test_network_from_an_entry_point_of_an_installed_package(factory_module: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "cd_seg_test_nets-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cd-seg-test-nets\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{NETWORK_GROUP}]\nep-segnet = {factory_module}:Factories.build\n")
    assert "ep-segnet" in network_names()  # tmp_path is on sys.path (factory_module)
    guide = SegmentationGuidance("ep-segnet", quadrant_labels())
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(guide.loss(x), SegmentationGuidance(tiny_segnet(), quadrant_labels()).loss(x))


def test_network_weights_from_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    register_network("test-tiny-segnet-blank")(lambda: tiny_segnet(seed=1))
    trained = tiny_segnet(seed=7)
    save_file(trained.state_dict(), str(tmp_path / "w.safetensors"))
    guide = SegmentationGuidance("test-tiny-segnet-blank", quadrant_labels(), weights=tmp_path / "w.safetensors")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(guide.loss(x), SegmentationGuidance(trained, quadrant_labels()).loss(x))
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    with pytest.raises(ValueError, match=r"weights: .* is not a \.safetensors file"):
        SegmentationGuidance("test-tiny-segnet-blank", quadrant_labels(), weights=tmp_path / "w.pt")
    save_file({"other": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"weights: .* does not fit the architecture"):
        SegmentationGuidance("test-tiny-segnet-blank", quadrant_labels(), weights=tmp_path / "bad.safetensors")
    with pytest.raises(ValueError, match=r"weights: given with a network object"):
        SegmentationGuidance(trained, quadrant_labels(), weights=tmp_path / "w.safetensors")


def test_import_network_is_deprecated(factory_module: str) -> None:
    with pytest.warns(DeprecationWarning, match="import_network is deprecated"):
        assert isinstance(import_network(f"{factory_module}:build"), nn.Module)


# --- the loss ------------------------------------------------------------------------------

def test_loss_matches_cross_entropy_and_shape() -> None:
    net = tiny_segnet()
    y = quadrant_labels()
    guide = SegmentationGuidance(net, y)
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    loss = guide.loss(x)
    assert loss.shape == (3,)
    logits = F.interpolate(net(x), size=(16, 16), mode="bilinear", align_corners=False)
    expected = torch.stack([F.cross_entropy(logits[i:i + 1], y) for i in range(3)])
    torch.testing.assert_close(loss, expected)
    assert bool((loss > 0).all())


def test_ignore_index_excluded_from_mean() -> None:
    net = tiny_segnet()
    y = quadrant_labels()
    y_ignored = y.clone()
    y_ignored[:, :4] = 255
    guide = SegmentationGuidance(net, y_ignored, ignore_index=255)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    logits = F.interpolate(net(x), size=(16, 16), mode="bilinear", align_corners=False)
    ce = F.cross_entropy(logits, y, reduction="none")[:, 4:]  # the non-ignored rows only
    torch.testing.assert_close(guide.loss(x), ce.mean().reshape(1))
    # the default ignore_index is -100
    y_default = y.clone()
    y_default[:, :4] = -100
    torch.testing.assert_close(SegmentationGuidance(net, y_default).loss(x), guide.loss(x))


def test_argmax_labels_have_lower_loss_than_random_labels() -> None:
    net = tiny_segnet()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        argmax = F.interpolate(net(x), size=(16, 16), mode="bilinear", align_corners=False).argmax(1)
    random = torch.randint(0, 3, (2, 16, 16), generator=torch.Generator().manual_seed(4))
    own = SegmentationGuidance(net, argmax).loss(x)
    other = SegmentationGuidance(net, random).loss(x)
    assert bool((own < other).all())


def test_gradcheck_float64() -> None:
    net = tiny_segnet().double()
    y = torch.randint(0, 3, (2, 8, 8), generator=torch.Generator().manual_seed(0))
    y[0, :2] = -100
    guide = SegmentationGuidance(net, y)
    x = (torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(guide.loss, (x,), eps=1e-6, atol=1e-6, rtol=1e-4)


def test_input_transform_and_frozen_network() -> None:
    net = tiny_segnet()
    seen: list[float] = []

    def to_unit(x: torch.Tensor) -> torch.Tensor:
        seen.append(float(x.detach().min()))
        return (x + 1) / 2

    guide = SegmentationGuidance(net, quadrant_labels(), input_transform=to_unit)
    x = -torch.ones(1, 3, 16, 16)
    e, r = guide.error_and_residual(x)
    assert seen == [-1.0] and e.shape == x.shape and r.shape == (1,)
    torch.testing.assert_close(r, SegmentationGuidance(net, quadrant_labels()).loss(torch.zeros(1, 3, 16, 16)))
    assert not net.training and all(not p.requires_grad and p.grad is None for p in net.parameters())


def test_target_batch_and_2d_target() -> None:
    y = torch.cat([quadrant_labels(), 2 - quadrant_labels()])
    guide = SegmentationGuidance(tiny_segnet(), y)
    assert guide.batch_size == 2
    assert guide.loss(torch.zeros(2, 3, 16, 16)).shape == (2,)
    with pytest.raises(ValueError, match="target has batch 2"):
        guide.loss(torch.zeros(3, 3, 16, 16))
    single = SegmentationGuidance(tiny_segnet(), quadrant_labels()[0])  # (H, W) is batch 1
    assert single.batch_size is None and single.target.shape == (1, 16, 16)


def test_target_from_png(tmp_path: Path) -> None:
    from PIL import Image

    labels = quadrant_labels()[0].numpy().astype(np.uint8)
    Image.fromarray(labels).save(tmp_path / "labels.png")
    guide = SegmentationGuidance(tiny_segnet(), tmp_path / "labels.png")
    assert guide.target.dtype == torch.long
    torch.testing.assert_close(guide.target, quadrant_labels())
    torch.testing.assert_close(load_label_map(str(tmp_path / "labels.png")), quadrant_labels())
    palette = Image.fromarray(labels).convert("P")
    palette.save(tmp_path / "palette.png")
    assert load_label_map(tmp_path / "palette.png").shape == (1, 16, 16)


# --- in the sampler ------------------------------------------------------------------------

def test_sampler_reduces_cross_entropy() -> None:
    denoiser = cd.GaussianDenoiser.smooth((3, 16, 16))
    y = quadrant_labels()
    guide = SegmentationGuidance(tiny_segnet(), y)
    for seed in (0, 1):
        guided = cd.ConstrainedSampler(denoiser, "inexact-newton", steps=5, inner_steps=5, step_scale=(1.0, 0.2)).sample(
            guide, generator=torch.Generator().manual_seed(seed), progress=False)
        plain = cd.ConstrainedSampler(denoiser, "inexact-newton", steps=5, inner_steps=0).sample(
            guide, generator=torch.Generator().manual_seed(seed), progress=False)
        assert guided.final_residual is not None and plain.final_residual is not None
        assert float(guided.final_residual) < 0.8 * float(plain.final_residual)
        with torch.no_grad():
            accuracy = (guide.logits(guided.sample).argmax(1) == y).float().mean()
        assert float(accuracy) > 0.8


def test_decoded_constraint_checks_labels_at_first_loss() -> None:
    class Codec:
        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return F.interpolate(z[:, :3], scale_factor=2.0, mode="nearest")

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            raise NotImplementedError

    y = quadrant_labels()
    y[0, 0, 0] = 7
    latent = DecodedConstraint(SegmentationGuidance(tiny_segnet(), y), Codec())
    latent.validate((4, 8, 8))  # not forwarded to the pixel constraint
    with pytest.raises(ValueError, match=r"target has label 7 but the network predicts 3 classes"):
        latent.error_and_residual(torch.zeros(1, 4, 8, 8))


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("target, kind, pattern", [
    (torch.zeros(1, 16, 16), TypeError, r"target must be an integer tensor"),
    (torch.zeros(1, 16, 16, dtype=torch.bool), TypeError, r"target must be an integer tensor"),
    (torch.zeros(1, 1, 16, 16, dtype=torch.long), ValueError, r"target must have shape \(1 or B, H, W\)"),
    (torch.zeros(16, dtype=torch.long), ValueError, r"target must have shape"),
    (torch.full((1, 16, 16), -1, dtype=torch.long), ValueError, r"target has 256 negative label"),
    (torch.full((1, 16, 16), -100, dtype=torch.long), ValueError, r"target sample\(s\) \[0\] have every pixel equal to ignore_index"),
    (np.zeros((1, 16, 16), dtype=np.int64), TypeError, r"target must be an integer torch.Tensor or a path"),
])
def test_bad_target(target: object, kind: type, pattern: str) -> None:
    with pytest.raises(kind, match=pattern):
        SegmentationGuidance(tiny_segnet(), target)  # type: ignore[arg-type]


def test_bad_target_files(tmp_path: Path) -> None:
    from PIL import Image

    with pytest.raises(FileNotFoundError, match="target"):
        SegmentationGuidance(tiny_segnet(), tmp_path / "missing.png")
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match=r"target: label map .* mode 'RGB'"):
        SegmentationGuidance(tiny_segnet(), tmp_path / "rgb.png")


def test_labels_out_of_range_detected_by_validate() -> None:
    y = quadrant_labels()
    y[0, 0, 0] = 3
    guide = SegmentationGuidance(tiny_segnet(num_classes=3), y)  # K unknown until a forward
    with pytest.raises(ValueError, match=r"target has label 3 but the network predicts 3 classes"):
        guide.validate((3, 16, 16))
    with pytest.raises(ValueError, match=r"target has label 3"):
        cd.ConstrainedSampler(cd.GaussianDenoiser.smooth((3, 16, 16)), steps=1).sample(guide, progress=False)
    ok = SegmentationGuidance(tiny_segnet(num_classes=4), y)
    ok.validate((3, 16, 16))
    assert ok.num_classes == 4


def test_validate_bad_sample_shapes() -> None:
    guide = SegmentationGuidance(tiny_segnet(), quadrant_labels())
    with pytest.raises(ValueError, match=r"image samples of shape \(C, H, W\)"):
        guide.validate((3, 256))
    with pytest.raises(ValueError, match=r"network \(after input_transform\) cannot be applied to samples of shape \(1, 16, 16\)"):
        guide.validate((1, 16, 16))


def test_network_must_return_4d_logits() -> None:
    guide = SegmentationGuidance(nn.Flatten(), quadrant_labels())
    with pytest.raises(ValueError, match=r"network must return logits of shape \(B, K, H', W'\)"):
        guide.validate((3, 16, 16))


@pytest.mark.parametrize("spec, pattern", [
    ("no_such_name", r"network: 'no_such_name' is not a registered segmentation network \(registered: .*\); register one"),
    ("pkg.mod:", r"an import string 'module:callable' is never imported"),
    ("some.file.safetensors", r"a weight file goes in weights=, with network= naming its registered architecture"),
    ("{mod}:build", r"an import string 'module:callable' is never imported"),
    ("test-not-a-module", r"network: the factory registered as 'test-not-a-module' returned dict, not a torch.nn.Module"),
])
def test_bad_network_string(factory_module: str, spec: str, pattern: str) -> None:
    register_network("test-not-a-module")(lambda: {"weights": 1})
    with pytest.raises(ValueError, match=pattern):
        SegmentationGuidance(spec.format(mod=factory_module), quadrant_labels())


def test_bad_network_and_options() -> None:
    with pytest.raises(TypeError, match="network must be a torch.nn.Module"):
        SegmentationGuidance(lambda x: x, quadrant_labels())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="input_transform must be callable"):
        SegmentationGuidance(tiny_segnet(), quadrant_labels(), input_transform=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        SegmentationGuidance(tiny_segnet(), quadrant_labels(), ignore_index=1.5)  # type: ignore[arg-type]
