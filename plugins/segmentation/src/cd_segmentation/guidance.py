"""Segmentation guidance as a `constrained_diffusion` constraint.

Reference: A. Graikos, N. Jojic, D. Samaras, *Fast constrained sampling in pre-trained
diffusion models*, NeurIPS 2025 — training-free guidance by a differentiable loss on the
denoiser's clean estimate ``x0_hat``; here the loss is the pixel-wise cross-entropy of a
frozen segmentation network's prediction against a target label map (as in FreeDoM /
universal guidance's segmentation experiments).

For a sample ``x`` (``(3, H, W)`` in ``[-1, 1]``), logits ``z = net(T(x))`` of shape
``(K, H', W')`` (bilinearly resized to the label map's ``(H_y, W_y)`` when they differ) and a
label map ``y`` of ints in ``0 .. K-1`` (or ``ignore_index``):

    loss(x) = (1 / |V|) sum_{p in V} -log softmax(z[:, p])[y[p]],   V = {p : y[p] != ignore_index}

and the core library turns it into the error ``e = -grad_x loss(x0_hat)``.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cd_segmentation.networks import load_network
from constrained_diffusion.constraints.base import NonlinearConstraint

__all__ = ["SegmentationGuidance", "import_network", "load_label_map"]


def import_network(spec: str) -> nn.Module:
    """Deprecated: build a network from an import string ``"package.module:factory"`` (Python callers only).

    `SegmentationGuidance` no longer imports what a string names (a configuration naming
    ``"os:abort"`` would run it); it looks the string up among registered architectures
    (`cd_segmentation.networks.load_network`). This function remains for one release, for code
    that calls it itself, and warns.

    ``factory`` (an attribute path, dots allowed: ``"pkg.mod:Class.build"``) must be a
    zero-argument callable returning an ``nn.Module``. Nothing is unpickled: weights, if any,
    are the factory's business.

    Raises:
        ValueError: a malformed string (names the ``network`` parameter).
        ImportError: the module cannot be imported.
        TypeError: the factory is not callable or does not return an ``nn.Module``.
    """
    warnings.warn("cd_segmentation.import_network is deprecated: register the factory (cd_segmentation.register_network or the "
                  "'constrained_diffusion.segmentation_networks' entry points) and name it", DeprecationWarning, stacklevel=2)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or any(not part.isidentifier() for part in attr.split(".")):
        raise ValueError(
            f"network must be an nn.Module or an import string 'package.module:factory', got {spec!r}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"network: cannot import module {module_name!r} from {spec!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"network: {spec!r} names {part!r}, which does not exist in {obj!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"network: {spec!r} is not callable")
    net = obj()
    if not isinstance(net, nn.Module):
        raise TypeError(f"network: {spec!r}() returned {type(net).__name__}, not a torch.nn.Module")
    return net


def load_label_map(path: str | os.PathLike[str]) -> Tensor:
    """Read a PNG label map whose pixel values are class ids.

    Single-channel images only: mode ``L`` (uint8), ``P`` (palette: the palette indices are
    the class ids), ``I;16`` / ``I`` (16/32-bit). An RGB colour-coded map is rejected because
    its colour-to-class table is not in the file.

    Returns:
        ``(1, H, W)`` int64.

    Raises:
        FileNotFoundError, ValueError: naming the ``target`` parameter.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"target: no label-map file at {str(path)!r}")
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise ValueError(
                    f"target: label map {str(path)!r} has image mode {img.mode!r}; it must be a single-channel "
                    "image whose pixel values are class ids (mode L, P or I;16), not a colour-coded map"
                )
            labels = np.array(img, dtype=np.int64)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"target: cannot read {str(path)!r} as an image: {exc}") from exc
    return torch.from_numpy(labels).unsqueeze(0)


def _identity(x: Tensor) -> Tensor:
    return x


class SegmentationGuidance(NonlinearConstraint):
    r"""Guide samples so a frozen segmentation network predicts a target label map.

    Per sample, with logits ``z = network(input_transform(x))`` of shape ``(K, H', W')``
    resized (bilinear, ``align_corners=False``) to the label map's ``(H_y, W_y)`` when the sizes
    differ, and ``V`` the pixels whose label is not ``ignore_index``:

    .. math::

        \mathrm{loss}(x) = \frac{1}{|V|} \sum_{p \in V} \mathrm{CE}(z_p, y_p)
        = -\frac{1}{|V|} \sum_{p \in V} \log \frac{e^{z_{p, y_p}}}{\sum_k e^{z_{p, k}}} .

    The loss is ``>= 0`` and approaches 0 as the network becomes confident in the target
    labels (it is a soft constraint: cross-entropy is never exactly 0). The core library's
    error is ``e = -\nabla_x \mathrm{loss}(\hat x_0)``: one backward through the segmentation
    network, never through the denoiser.

    For a latent model wrap it: ``cd.constraints.DecodedConstraint(SegmentationGuidance(...),
    denoiser.codec)`` (then `validate` is not called, and the label range is checked at the
    first loss evaluation instead).

    Args:
        network: an ``nn.Module`` mapping images ``(B, C_in, H, W)`` to per-pixel class logits
            ``(B, K, H', W')``, or the name of a registered architecture (for configuration
            files: `cd_segmentation.register_network` or the entry-point group
            ``constrained_diffusion.segmentation_networks``; an import string such as
            ``"os:abort"`` is refused, never imported). It is frozen in place (``eval()``,
            ``requires_grad_(False)``).
        target: the label map: an integer tensor ``(1 or B, H_y, W_y)`` (``(H_y, W_y)`` is taken
            as batch 1) of class ids in ``0 .. K-1`` or ``ignore_index``, or a path to a
            single-channel PNG whose pixel values are the class ids. ``B > 1`` gives one map
            per sample; 1 is shared by the whole batch.
        input_transform: applied to the sample before the network; it receives ``x`` in
            ``[-1, 1]`` (the sampler's pixel range), shape ``(B, 3, H, W)``, and must be
            differentiable — e.g. ``lambda x: ((x + 1) / 2 - mean) / std`` for a network
            trained on ImageNet-normalised inputs. Default: identity.
        ignore_index: label value excluded from the loss (default ``-100``, as
            ``F.cross_entropy``; use 255 for VOC-style maps).
        device: move the network (and the target) there (default: where the network is).
        weights: with a registered name, a ``.safetensors`` file of its ``state_dict``
            (loaded strictly; nothing is unpickled).

    Raises:
        TypeError: a ``network``, ``target`` or ``input_transform`` of the wrong type
            (e.g. a floating-point ``target``).
        ValueError: a ``network`` string that is not a registered name, ``weights`` that do not
            fit it or without a named network; a ``target`` of the wrong shape, with negative labels other than
            ``ignore_index``, or with a sample whose pixels are all ignored; labels ``>= K``
            (detected by `validate`'s probe forward, or at the first `loss` call).

    Examples:
        >>> guide = SegmentationGuidance("my-segnet", "labels.png", weights="segnet.safetensors")   # doctest: +SKIP
        >>> cd.ConstrainedSampler(model, "inexact-newton").sample(guide)         # doctest: +SKIP
    """

    def __init__(self, network: nn.Module | str, target: Tensor | str | os.PathLike[str],
                 input_transform: Callable[[Tensor], Tensor] | None = None, ignore_index: int = -100,
                 device: torch.device | str | None = None, weights: str | os.PathLike[str] | None = None) -> None:
        if isinstance(network, str):
            network = load_network(network, weights)
        elif weights is not None:
            raise ValueError("weights: given with a network object; weights go with a registered network name (network='name')")
        if not isinstance(network, nn.Module):
            raise TypeError(
                f"network must be a torch.nn.Module or a registered network name, got {type(network).__name__}"
            )
        if input_transform is not None and not callable(input_transform):
            raise TypeError(f"input_transform must be callable, got {type(input_transform).__name__}")
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
        if device is not None:
            network = network.to(device)
        network.eval().requires_grad_(False)
        self.network = network
        self.input_transform: Callable[[Tensor], Tensor] = input_transform if input_transform is not None else _identity
        self.ignore_index = ignore_index
        param = next(iter(network.parameters()), None)
        self.device = torch.device(device) if device is not None else (param.device if param is not None else torch.device("cpu"))
        self.net_dtype = param.dtype if param is not None and param.is_floating_point() else None
        self.target = self._check_target(target).to(self.device)
        self._checked_classes: int | None = None

    # ------------------------------------------------------------------------------------
    def _check_target(self, target: Tensor | str | os.PathLike[str]) -> Tensor:
        if isinstance(target, (str, os.PathLike)):
            target = load_label_map(target)
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be an integer torch.Tensor or a path to a PNG label map, got {type(target).__name__}")
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(
                f"target must be an integer tensor of class ids (e.g. torch.long), got dtype {target.dtype}; "
                "convert with target.long() if it holds whole numbers"
            )
        if target.ndim == 2:
            target = target.unsqueeze(0)
        if target.ndim != 3 or min(target.shape) < 1:
            raise ValueError(f"target must have shape (1 or B, H, W) (a label map per sample), got {tuple(target.shape)}")
        target = target.detach().long()
        bad = (target < 0) & (target != self.ignore_index)
        if bool(bad.any()):
            raise ValueError(
                f"target has {int(bad.sum())} negative label(s) (min {int(target[bad].min())}) that are not "
                f"ignore_index={self.ignore_index}"
            )
        empty = ~(target != self.ignore_index).flatten(1).any(dim=1)
        if bool(empty.any()):
            raise ValueError(
                f"target sample(s) {empty.nonzero().flatten().tolist()} have every pixel equal to "
                f"ignore_index={self.ignore_index}: nothing to guide"
            )
        return target

    def _check_classes(self, num_classes: int) -> None:
        if self._checked_classes == num_classes:
            return
        valid = self.target[self.target != self.ignore_index]
        top = int(valid.max())
        if top >= num_classes:
            raise ValueError(
                f"target has label {top} but the network predicts {num_classes} classes (labels must be "
                f"0 .. {num_classes - 1} or ignore_index={self.ignore_index})"
            )
        self._checked_classes = num_classes

    @property
    def num_classes(self) -> int | None:
        """``K``, known after `validate` or the first `loss` call."""
        return self._checked_classes

    def logits(self, x: Tensor) -> Tensor:
        """Network logits ``(B, K, H_y, W_y)`` for samples ``(B, C, H, W)``, resized to the label map."""
        inp = self.input_transform(x.to(self.device))
        if self.net_dtype is not None and inp.is_floating_point():
            inp = inp.to(self.net_dtype)
        z = self.network(inp)
        if not isinstance(z, Tensor) or z.ndim != 4:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"network must return logits of shape (B, K, H', W'), got {shape}")
        if z.shape[0] != x.shape[0]:
            raise ValueError(f"network returned batch {z.shape[0]} for an input batch of {x.shape[0]}")
        if z.dtype not in (torch.float32, torch.float64):
            z = z.float()
        size = tuple(self.target.shape[-2:])
        if tuple(z.shape[-2:]) != size:
            z = F.interpolate(z, size=size, mode="bilinear", align_corners=False)
        return z

    def loss(self, x: Tensor) -> Tensor:
        """Mean cross-entropy over the non-ignored pixels, per sample: shape ``(B,)``, in ``x``'s dtype.

        Args:
            x: ``(B, C, H, W)`` in ``[-1, 1]``; ``B`` must equal the target batch unless that is 1.
        """
        T = self.target.shape[0]
        if T > 1 and x.shape[0] != T:
            raise ValueError(f"target has batch {T} but the samples have batch {x.shape[0]}")
        z = self.logits(x)
        self._check_classes(int(z.shape[1]))
        y = self.target.expand(x.shape[0], -1, -1)
        ce = F.cross_entropy(z, y, reduction="none", ignore_index=self.ignore_index)  # (B, H_y, W_y), 0 where ignored
        count = (y != self.ignore_index).flatten(1).sum(dim=1).clamp_min(1)
        return (ce.flatten(1).sum(dim=1) / count).to(device=x.device, dtype=x.dtype)

    @property
    def batch_size(self) -> int | None:
        T = int(self.target.shape[0])
        return T if T > 1 else None

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        """Probe the network with one zero sample; check its output and the label range.

        Raises:
            ValueError: samples that are not images ``(C, H, W)``, a network that fails on them
                or does not return ``(B, K, H', W')`` logits, labels ``>= K``.
        """
        if len(sample_shape) != 3:
            raise ValueError(
                f"SegmentationGuidance needs image samples of shape (C, H, W), got {tuple(sample_shape)}; for a "
                "latent model wrap it: DecodedConstraint(SegmentationGuidance(...), denoiser.codec)"
            )
        probe = torch.zeros(1, *sample_shape, device=self.device, dtype=self.net_dtype or torch.float32)
        try:
            with torch.no_grad():
                z = self.logits(probe)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(
                f"network (after input_transform) cannot be applied to samples of shape {tuple(sample_shape)}: {exc}"
            ) from exc
        self._check_classes(int(z.shape[1]))

    def __repr__(self) -> str:
        return (f"SegmentationGuidance(network={type(self.network).__name__}, target={tuple(self.target.shape)}, "
                f"ignore_index={self.ignore_index})")
