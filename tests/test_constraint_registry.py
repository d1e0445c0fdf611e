"""Constraints by name: built-ins, in-process registration and entry-point plugins."""

from __future__ import annotations

import pytest
import torch

import constrained_diffusion as cd
from constrained_diffusion.constraints import registry


def test_builtins_are_listed_and_loaded():
    assert {"inpainting", "super-resolution", "class-guidance", "mnist-class"} <= set(cd.constraints.names())
    y = torch.zeros(1, 1, 8, 8)
    assert isinstance(cd.constraints.load("inpainting", y=y, mask=torch.ones(1, 1, 8, 8)), cd.Inpainting)
    sr = cd.constraints.load("super-resolution", y=torch.zeros(1, 1, 4, 4), factor=8)
    assert isinstance(sr, cd.SuperResolution) and sr.input_shape == (1, 32, 32)


def test_registered_factories_and_errors():
    class Always(cd.NonlinearConstraint):
        def loss(self, x):
            return x.flatten(1).pow(2).sum(dim=1)

    registry.register("test-always", Always)
    try:
        assert "test-always" in registry.names()
        assert isinstance(registry.load("test-always"), Always)
        registry.register("test-not-a-constraint", lambda: 3)
        with pytest.raises(TypeError, match="not a constrained_diffusion.Constraint"):
            registry.load("test-not-a-constraint")
    finally:
        registry._REGISTRY.pop("test-always", None)
        registry._REGISTRY.pop("test-not-a-constraint", None)
    with pytest.raises(ValueError, match="unknown constraint 'nope'.*inpainting"):
        registry.load("nope")
    with pytest.raises(TypeError, match="callable"):
        registry.register("x", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        registry.register("", cd.Inpainting)


def test_entry_point_plugins_are_discovered_when_installed():
    from importlib.metadata import entry_points

    installed = {ep.name for ep in entry_points(group=registry.ENTRY_POINT_GROUP)}
    if not {"clip-style", "segmentation"} <= installed:
        pytest.skip("first-party plugins not installed (pip install -e plugins/clip-style -e plugins/segmentation)")
    # found through the entry points alone: nothing registered them in this process
    assert "clip-style" not in registry._REGISTRY and "segmentation" not in registry._REGISTRY
    assert {"clip-style", "segmentation"} <= set(registry.names())
    assert registry.get_factory("clip-style").__name__ == "CLIPStyle"
    assert registry.get_factory("segmentation").__name__ == "SegmentationGuidance"
