"""Safetensors weight files with their architecture in the metadata.

A file holds the ``state_dict`` of a network and, in its metadata, ``"architecture"`` (the
class name), ``"config"`` (JSON of its configuration) and any string fields a caller adds
(training steps, final loss, ...). Only tensors and strings are read: no code is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from constrained_diffusion.models.classifier import MNISTClassifier
from constrained_diffusion.models.unet import UNet, UNetConfig
from constrained_diffusion.utils.safe_io import save_safetensors


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None,
                 dtype: torch.dtype | None = None) -> Path:
    """Save ``model``'s weights (optionally cast to ``dtype``) with its architecture."""
    config = getattr(model, "config", None)
    meta = {"architecture": type(model).__name__,
            "config": config.model_dump_json() if config is not None else "{}", **(metadata or {})}
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in model.state_dict().items()}
    return save_safetensors(path, tensors, meta)  # atomically: a kill leaves the old file or the new one


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata strings of a weight file."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_weights(path: str | Path, device: torch.device | str | None = None) -> tuple[nn.Module, dict[str, str]]:
    """Build the network named in the file's metadata and load its weights (float32, eval mode).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file names an unknown architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weight file at {path}")
    meta = read_metadata(path)
    arch = meta.get("architecture")
    if arch == "UNet":
        model: nn.Module = UNet(UNetConfig(**json.loads(meta["config"])))
    elif arch == "MNISTClassifier":
        model = MNISTClassifier()
    else:
        raise ValueError(f"{path} holds weights of an unknown architecture {arch!r}")
    state = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            state[key] = f.get_tensor(key).float() if f.get_tensor(key).is_floating_point() else f.get_tensor(key)
    model.load_state_dict(state)
    return model.to(device or "cpu").eval().requires_grad_(False), meta
