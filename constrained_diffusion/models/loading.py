"""Models by name: the shipped ones, weight files, diffusers folders and Hugging Face Hub ids.

`load` is how every ``constrained-diffusion`` command gets its model:

* a shipped name (`names`): ``"mnist-ddpm"`` and ``"mnist-flow"`` (`MNISTDenoiser`),
  ``"mnist-classifier"`` (`MNISTClassifier`), ``"gaussian"`` (the analytic 1x32x32 model of
  the demo); the short forms the command line uses are accepted too (`ALIASES`);
* a safetensors weight file written by ``constrained-diffusion train ... --export``;
* a diffusers folder or a Hub id ``org/name``: its ``model_index.json`` names the pipeline,
  which picks `StableDiffusionDenoiser` or `FlowMatchDenoiser`.

Examples:
    >>> import constrained_diffusion as cd
    >>> cd.models.load("mnist-ddpm").sample_shape
    (1, 32, 32)
    >>> digits, labels = cd.data.demo_digits()
    >>> cd.models.load("classifier")(digits[:2]).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch

from constrained_diffusion.models.pretrained import pretrained_path

if TYPE_CHECKING:
    from torch import nn

    from constrained_diffusion.denoisers import Denoiser, GaussianDenoiser, MNISTDenoiser
    from constrained_diffusion.models.classifier import MNISTClassifier

Device = torch.device | str | None
DType = torch.dtype | str | None

SHIPPED: dict[str, str | None] = {
    "gaussian": None,
    "mnist-classifier": "mnist_classifier.safetensors",
    "mnist-ddpm": "mnist_ddpm.safetensors",
    "mnist-flow": "mnist_flow.safetensors",
}
"""Each shipped name and its weight file in ``constrained_diffusion/models/pretrained/``."""

ALIASES: dict[str, str] = {"ddpm": "mnist-ddpm", "flow": "mnist-flow", "classifier": "mnist-classifier",
                           "mnist": "mnist-ddpm"}
"""Short forms used by the command line (``--model ddpm``, ``model-card classifier``, ...)."""

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
"""A name ending so is a local file, never a Hub id."""

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                                  "float64": torch.float64}


def names() -> list[str]:
    """The shipped model names (`load` also takes the `ALIASES`)."""
    return sorted(SHIPPED)


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``torch.float16`` or ``"float16"`` (also ``"bfloat16"``, ``"float32"``, ``"float64"``) -> a dtype.

    Raises:
        ValueError: an unknown name.
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)} or a torch.dtype")
    return DTYPES[dtype]


def weights_path(name: str | os.PathLike[str]) -> Path | None:
    """The weight file behind ``name``: a shipped model's file, a weight file itself, else ``None``."""
    text = os.fspath(name)
    shipped = SHIPPED.get(ALIASES.get(text, text), "")
    if shipped:
        return pretrained_path(shipped)
    path = Path(text)
    return path if path.is_file() else None


@overload
def load(name: Literal["mnist-classifier", "classifier"], device: Device = None, dtype: DType = None) -> MNISTClassifier: ...
@overload
def load(name: Literal["mnist-ddpm", "mnist-flow", "ddpm", "flow", "mnist"], device: Device = None,
         dtype: DType = None) -> MNISTDenoiser: ...
@overload
def load(name: Literal["gaussian"], device: Device = None, dtype: DType = None) -> GaussianDenoiser: ...
@overload
def load(name: str | os.PathLike[str], device: Device = None, dtype: DType = None) -> Denoiser | nn.Module: ...


def load(name: str | os.PathLike[str], device: Device = None, dtype: DType = None) -> Denoiser | nn.Module:
    """The model called ``name``, on ``device`` (default CPU) in ``dtype`` (default float32).

    Args:
        name: a shipped name or alias (`names`, `ALIASES`), a ``.safetensors`` weight file, a
            diffusers folder, or a Hugging Face Hub id ``org/name`` (from the local cache, or
            downloaded where there is a network).
        device: where the model lives.
        dtype: a ``torch.dtype`` or its name (``"float16"``, ``"bfloat16"``, ...).

    Returns:
        A `Denoiser` (`MNISTDenoiser`, `GaussianDenoiser`, `StableDiffusionDenoiser`,
        `FlowMatchDenoiser`) or, for the classifier, an `MNISTClassifier` (eval mode, no grad).

    Raises:
        ValueError: an unknown name (the message lists the shipped ones), a folder that holds
            no supported pipeline, or the analytic model asked for a GPU.
        FileNotFoundError: a weight file or folder that does not exist (a name with a weight
            file's suffix, or inside an existing folder), or a Hub id that is neither cached
            nor downloadable.
    """
    torch_dtype = parse_dtype(dtype)
    text = os.fspath(name)
    key = ALIASES.get(text, text)
    if key in SHIPPED:
        return _shipped(key, device, torch_dtype)
    path = Path(text)
    if path.is_file():
        return _weight_file(path, device, torch_dtype)
    if path.is_dir():
        return _diffusers(text, path / "model_index.json", device, torch_dtype)
    if path.suffix in WEIGHT_SUFFIXES or (path.parent != Path(".") and path.parent.is_dir()):
        raise FileNotFoundError(f"no weight file or diffusers folder at {text}")
    if _looks_like_hub_id(text):
        return _diffusers(text, _hub_index(text), device, torch_dtype)
    raise ValueError(f"unknown model {text!r}: not a shipped model ({', '.join(names())}), "
                     "a weight file, a diffusers folder or a Hub id org/name")


def default_denoiser(dtype: torch.dtype = torch.float32) -> GaussianDenoiser:
    """The analytic model ``"gaussian"``: a smooth Gaussian prior on ``1 x 32 x 32`` images, DDPM linear betas, 1000 training steps.

    ``load("gaussian")`` returns it. ``dtype`` is that of the samples it returns.
    """
    from constrained_diffusion.denoisers.gaussian import GaussianDenoiser
    from constrained_diffusion.denoisers.schedules import VPSchedule

    return GaussianDenoiser.smooth((1, 32, 32), length_scale=4.0, variance=0.25, jitter=1e-4, schedule=VPSchedule.linear(),
                                   dtype=dtype)


def _shipped(key: str, device: Device, dtype: torch.dtype | None) -> Denoiser | nn.Module:
    if key == "gaussian":
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError("the analytic model 'gaussian' runs on the CPU only")
        return default_denoiser(dtype or torch.float32)
    if key == "mnist-classifier":
        from constrained_diffusion.models.pretrained import mnist_classifier

        classifier = mnist_classifier(device)
        return classifier.to(dtype) if dtype is not None else classifier
    from constrained_diffusion.denoisers import MNISTDenoiser

    model = MNISTDenoiser.pretrained("flow" if key == "mnist-flow" else "ddpm", device)
    if dtype is not None:
        model.network.to(dtype)
    return model


def _weight_file(path: Path, device: Device, dtype: torch.dtype | None) -> Denoiser | nn.Module:
    """A UNet file (with ``kind`` ddpm/flow in its metadata) or a classifier file."""
    from constrained_diffusion.models.weights import read_metadata

    if read_metadata(path).get("architecture") == "UNet":
        from constrained_diffusion.denoisers import MNISTDenoiser

        model = MNISTDenoiser.from_file(path, device)
        if dtype is not None:
            model.network.to(dtype)
        return model
    from constrained_diffusion.models.weights import load_weights

    network, _ = load_weights(path, device)
    return network.to(dtype) if dtype is not None else network


def _looks_like_hub_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not text.endswith("/") and " " not in text


def _hub_index(repo_id: str) -> Path:
    """``model_index.json`` of a Hub repository: from the cache, else downloaded; one-line error if neither."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:  # pragma: no cover - diffusers brings it
        raise ImportError("loading a Hub model needs diffusers: pip install 'constrained_diffusion[diffusers]'") from exc
    try:
        return Path(hf_hub_download(repo_id, "model_index.json", local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: try the network next
        pass
    try:
        return Path(hf_hub_download(repo_id, "model_index.json"))
    except Exception as exc:  # noqa: BLE001 - every failure reads the same to the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FileNotFoundError(f"model {repo_id!r}: not a local folder, not in the Hugging Face cache, and it "
                                f"could not be downloaded ({type(exc).__name__}: {reason[:120]})") from None


def _diffusers(source: str, index: Path, device: Device, dtype: torch.dtype | None) -> Denoiser:
    """The adapter for the pipeline that ``index`` (a ``model_index.json``) names."""
    from constrained_diffusion.denoisers import FlowMatchDenoiser, StableDiffusionDenoiser

    if not index.is_file():
        raise ValueError(f"{source} holds no diffusers pipeline (no model_index.json)")
    kind = json.loads(index.read_text()).get("_class_name")
    adapters: list[Any] = [StableDiffusionDenoiser, FlowMatchDenoiser]
    for adapter in adapters:
        if kind in adapter.SUPPORTED:
            try:
                return adapter.from_pretrained(source, torch_dtype=dtype, device=device)
            except OSError as exc:  # a Hub download that failed part-way, a missing component file
                raise FileNotFoundError(f"model {source!r}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    supported = ", ".join(k for a in adapters for k in a.SUPPORTED)
    raise ValueError(f"{source} holds a {kind}; expected one of {supported}")
