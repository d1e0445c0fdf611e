"""CLIP Gram-matrix style guidance as a `constrained_diffusion` constraint.

Reference: A. Graikos, N. Jojic, D. Samaras, *Fast constrained sampling in pre-trained
diffusion models*, NeurIPS 2025 — the style-guidance experiment, which follows FreeDoM
(Yu et al., ICCV 2023) and MPGD (He et al., ICLR 2024): the style of a sample is the Gram
matrix of the patch-token features of an early block of CLIP ViT-B/16, and the constraint
asks the sample's Gram matrix to equal the reference image's.

For a sample ``x`` (pixels in ``[-1, 1]``) with features ``F(x)`` of shape ``(N, C)`` (``N``
patch tokens, class token dropped; ``C`` channels) the loss is

    G(x) = F(x)^T F(x) / N                      (C, C)
    loss(x) = || G(x) - G(ref) ||_F             (a scalar per sample, >= 0)

and the core library turns it into the error ``e = -grad_x loss(x0_hat)``. The paper's
reference notebook (cvlab-stonybrook/fast-constrained-sampling, stable-diffusion/style.ipynb)
uses the unnormalised ``G = F^T F`` and a bicubic resize to CLIP's input size:
`CLIPStyle.paper` builds that variant (``gram="sum"``, ``resize="bicubic"``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from constrained_diffusion.constraints.base import NonlinearConstraint

__all__ = ["CLIPStyle", "CLIP_MEAN", "CLIP_STD", "GramScale", "Resize", "gram_matrix", "load_image"]

#: OpenAI CLIP's normalisation constants (used when the model folder has no processor config).
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

GramScale = Literal["mean", "sum"]
"""``"mean"``: ``G = F^T F / N`` (scale-free in the number of tokens); ``"sum"``: ``G = F^T F`` (the paper's)."""
Resize = Literal["bilinear", "bicubic"]
"""How pixels are resized to CLIP's input: antialiased bilinear, or antialiased bicubic (Keys'
cubic kernel with ``a = -0.5``, the kernel of PIL's ``BICUBIC`` and MATLAB's ``imresize``, which
the paper's ``Resizer`` implements)."""

_RANGE_TOL = 1e-3  # references may overshoot [-1, 1] by rounding; more than this is an error


class _Stop(Exception):
    """Raised by a forward hook to end the CLIP forward after the requested block."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output


def gram_matrix(features: Tensor, scale: GramScale = "mean") -> Tensor:
    """Per-sample Gram matrix ``G = F^T F / N`` (``scale="mean"``) or ``F^T F`` (``"sum"``).

    Args:
        features: ``(B, N, C)`` — ``N`` tokens of ``C`` channels.
        scale: ``"mean"`` divides by ``N``; ``"sum"`` does not (the paper's reference).

    Returns:
        ``(B, C, C)``; ``G[b, i, j] = (1/N) sum_n F[b, n, i] F[b, n, j]`` (without ``1/N`` for ``"sum"``).

    Examples:
        >>> f = torch.ones(1, 4, 2)
        >>> gram_matrix(f)[0].tolist(), gram_matrix(f, "sum")[0, 0, 0].item()
        ([[1.0, 1.0], [1.0, 1.0]], 4.0)
    """
    if scale not in ("mean", "sum"):
        raise ValueError(f"scale must be 'mean' or 'sum', got {scale!r}")
    g = features.transpose(-1, -2) @ features
    return g / features.shape[-2] if scale == "mean" else g


def load_image(path: str | os.PathLike[str]) -> Tensor:
    """Read an image file (PNG, JPG, ... anything PIL opens) as RGB in ``[-1, 1]``.

    Returns:
        ``(1, 3, H, W)`` float32.

    Raises:
        FileNotFoundError: no such file (names the ``reference`` parameter).
        ValueError: PIL cannot read it.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference: no image file at {str(path)!r}")
    try:
        with Image.open(path) as img:
            rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"reference: cannot read {str(path)!r} as an image: {exc}") from exc
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0


def _load_clip(clip: Any) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """The vision model and its normalisation ``(mean, std)`` from the ``clip`` argument."""
    from transformers import CLIPModel, CLIPVisionModel

    mean, std = CLIP_MEAN, CLIP_STD
    if isinstance(clip, (str, os.PathLike)):
        source = os.fspath(clip)
        try:
            model = CLIPVisionModel.from_pretrained(source)
        except Exception as exc:  # OSError, ValueError, HTTP errors ... all mean "cannot load"
            raise ValueError(
                f"clip: cannot load a CLIPVisionModel from {source!r} (a local folder saved with "
                f"save_pretrained or a Hugging Face Hub id such as 'openai/clip-vit-base-patch16'): {exc}"
            ) from exc
        mean, std = _processor_mean_std(source)
    elif isinstance(clip, CLIPVisionModel):
        model = clip
    elif isinstance(clip, CLIPModel):
        model = clip.vision_model  # transformers >= 5: a CLIPVisionModel; 4.x: a CLIPVisionTransformer
    else:
        raise TypeError(
            f"clip must be a transformers CLIPVisionModel (or CLIPModel), a local folder or a Hub id, "
            f"got {type(clip).__name__}"
        )
    return model, mean, std


def _processor_mean_std(source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``image_mean``/``image_std`` of the processor saved next to the model, else CLIP's constants.

    Only local files are read (``local_files_only=True``), so this never touches the network.
    """
    try:
        from transformers.image_processing_base import ImageProcessingMixin

        config, _ = ImageProcessingMixin.get_image_processor_dict(source, local_files_only=True)
        mean, std = tuple(float(v) for v in config["image_mean"]), tuple(float(v) for v in config["image_std"])
        if len(mean) == 3 and len(std) == 3 and all(s > 0 for s in std):
            return mean, std
    except Exception:  # no processor config saved: fall back
        pass
    return CLIP_MEAN, CLIP_STD


def _encoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The transformer blocks of a CLIP vision tower (``encoder.layers``), wherever they sit."""
    for name, module in model.named_modules():
        if (name == "encoder.layers" or name.endswith(".encoder.layers")) and isinstance(module, nn.ModuleList):
            return module
    return None


class CLIPStyle(NonlinearConstraint):
    r"""Style guidance: match the Gram matrix of CLIP features to a reference image's.

    With ``F(x)`` the patch-token features of ``x`` after the ``layer``-th transformer block of
    the CLIP vision tower (``hidden_states[layer]`` of
    ``CLIPVisionModel(pixel_values, output_hidden_states=True)``, where ``hidden_states[0]`` is
    the embeddings; the class token is dropped), of shape ``(N, C)`` per sample (ViT-B/16 at
    224 px: ``N = 196`` patches, ``C = 768``):

    .. math::

        G(x) = \frac{1}{N} F(x)^\top F(x) \in \mathbb{R}^{C \times C}, \qquad
        \mathrm{loss}(x) = \lVert G(x) - G(\mathrm{ref}) \rVert_F

    (without the ``1/N`` for ``gram="sum"``, the paper's reference; see `paper`).

    The loss is zero when the sample has the reference's style (in particular when
    ``x == reference``); the core library's error is ``e = -\nabla_x \mathrm{loss}(\hat x_0)``, one
    backward through the first ``layer`` CLIP blocks (the forward stops after block ``layer``;
    later blocks are never run).

    Preprocessing of a sample ``x`` of shape ``(B, 3, H, W)`` in ``[-1, 1]``:
    ``(x + 1) / 2`` to ``[0, 1]``; a bilinear (``resize="bicubic"``: bicubic) resize to the model's ``image_size`` square
    (224 for ViT-B/16) with antialiasing (differentiable; it matters when downsampling, e.g.
    512 -> 224) and no crop, so a non-square image is squeezed rather than cropped; then
    ``(x - mean) / std`` per channel. ``mean``/``std`` come from the processor config saved
    with the model when ``clip`` is a folder or a cached Hub id, else OpenAI CLIP's
    ``(0.48145466, 0.4578275, 0.40821073)`` / ``(0.26862954, 0.26130258, 0.27577711)``.

    For a latent model (e.g. Stable Diffusion) wrap it so the loss is taken on decoded pixels:
    ``cd.constraints.DecodedConstraint(CLIPStyle(ref, clip), denoiser.codec)``.

    Args:
        reference: the style image: a tensor ``(1 or B, 3, H, W)`` in ``[-1, 1]`` (any ``H, W``;
            ``B > 1`` gives one reference per sample, ``1`` is shared by the whole batch), or a
            path to an image file (PNG, JPG, ...), read with PIL as RGB and scaled to ``[-1, 1]``.
        clip: a ``transformers.CLIPVisionModel`` (or ``CLIPModel``, whose vision tower is used),
            or a local folder / Hugging Face Hub id loaded with
            ``CLIPVisionModel.from_pretrained``. The model is frozen in place
            (``eval()``, ``requires_grad_(False)``).
        layer: the transformer block whose output gives the features, ``1 ..
            num_hidden_layers`` (default 3, as in the paper).
        device: move the model there (default: where it is).
        dtype: cast the model to this dtype, a ``torch.dtype`` or its name such as
            ``"float16"`` (default: its dtype). Samples are cast to the
            model's dtype; Gram matrices are formed in float32 (float64 for a float64 model)
            and the loss is returned in the sample's dtype and device.
        gram: `GramScale`: ``"mean"`` (default, ``F^T F / N``) or ``"sum"`` (``F^T F``).
        resize: `Resize`: ``"bilinear"`` (default) or ``"bicubic"``, both antialiased.

    Raises:
        TypeError: ``clip`` or ``reference`` of the wrong type.
        ValueError: a ``reference`` that is not ``(B, 3, H, W)``, lies outside ``[-1, 1]`` or
            has NaN/inf; a ``layer`` outside ``1 .. num_hidden_layers``; a ``clip`` that
            cannot be loaded; an unknown ``gram`` or ``resize``.
        FileNotFoundError: ``reference`` names a missing file.

    Examples:
        >>> style = CLIPStyle("style.png", clip="openai/clip-vit-base-patch16")  # doctest: +SKIP
        >>> sampler = cd.ConstrainedSampler(model, "inexact-newton", steps=50)   # doctest: +SKIP
        >>> result = sampler.sample(style)                                        # doctest: +SKIP
    """

    def __init__(self, reference: Tensor | str | os.PathLike[str], clip: Any = "openai/clip-vit-base-patch16",
                 layer: int = 3, device: torch.device | str | None = None,
                 dtype: torch.dtype | str | None = None, gram: GramScale = "mean", resize: Resize = "bilinear") -> None:
        if gram not in ("mean", "sum"):
            raise ValueError(f"gram must be 'mean' (F^T F / N) or 'sum' (F^T F), got {gram!r}")
        if resize not in ("bilinear", "bicubic"):
            raise ValueError(f"resize must be 'bilinear' or 'bicubic', got {resize!r}")
        self.gram_scale: GramScale = gram
        self.resize: Resize = resize
        model, mean, std = _load_clip(clip)
        num_layers = int(model.config.num_hidden_layers)
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= num_layers:
            raise ValueError(f"layer must be an integer in 1 .. {num_layers} (the CLIP model's num_hidden_layers), got {layer!r}")
        if isinstance(dtype, str):  # "float16", "torch.bfloat16" (e.g. from a command line)
            dtype = getattr(torch, dtype.removeprefix("torch."), None)
            if not isinstance(dtype, torch.dtype):
                raise TypeError("dtype must be a floating-point torch.dtype or its name, e.g. 'float16'")
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        if device is not None or dtype is not None:
            model = model.to(device=device, dtype=dtype)
        model.eval().requires_grad_(False)
        self.model = model
        self.layer = layer
        self.image_size = int(model.config.image_size)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.mean = torch.tensor(mean, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self._layers = _encoder_layers(model)

        self.reference = self._check_reference(reference)
        with torch.no_grad():
            self.reference_gram = self.gram(self.reference)  # (R, C, C)

    @classmethod
    def paper(cls, reference: Tensor | str | os.PathLike[str], clip: Any = "openai/clip-vit-base-patch16",
              device: torch.device | str | None = None, dtype: torch.dtype | str | None = None) -> CLIPStyle:
        """The paper's style loss: block-3 features of CLIP ViT-B/16, ``G = F^T F`` (no ``1/N``), bicubic resize.

        As in the reference notebook (cvlab-stonybrook/fast-constrained-sampling,
        stable-diffusion/style.ipynb): the output of the third residual block, class token
        dropped, ``loss = ||G(ref) - G(x)||_F``; use it with the ``paper-style`` recipe.
        The notebook runs CLIP in float16 (``clip.load`` on CUDA); pass ``dtype`` to match.
        """
        return cls(reference, clip, layer=3, device=device, dtype=dtype, gram="sum", resize="bicubic")

    # ------------------------------------------------------------------------------------
    @staticmethod
    def _check_reference(reference: Tensor | str | os.PathLike[str]) -> Tensor:
        if isinstance(reference, (str, os.PathLike)):
            reference = load_image(reference)
        if not isinstance(reference, Tensor):
            raise TypeError(f"reference must be a torch.Tensor or a path to an image file, got {type(reference).__name__}")
        if not reference.is_floating_point():
            raise TypeError(f"reference must be a floating-point tensor in [-1, 1], got dtype {reference.dtype}")
        if reference.ndim != 4 or reference.shape[1] != 3 or reference.shape[0] < 1:
            raise ValueError(f"reference must have shape (1 or B, 3, H, W), got {tuple(reference.shape)}")
        if not bool(reference.isfinite().all()):
            raise ValueError(f"reference contains {int((~reference.isfinite()).sum())} NaN or infinite value(s)")
        lo, hi = float(reference.min()), float(reference.max())
        if lo < -1 - _RANGE_TOL or hi > 1 + _RANGE_TOL:
            raise ValueError(f"reference must lie in [-1, 1] (pixels scaled as the sampler's), got values in [{lo:.4g}, {hi:.4g}]")
        return reference.detach().clamp(-1, 1)

    def preprocess(self, x: Tensor) -> Tensor:
        """``[-1, 1]`` pixels ``(B, 3, H, W)`` -> CLIP input ``(B, 3, S, S)``, ``S = image_size``."""
        x = (x.to(self.device, self.dtype) + 1) / 2
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode=self.resize, align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def features(self, x: Tensor) -> Tensor:
        """Patch-token features after block ``layer``: ``(B, N, C)`` for pixels ``(B, 3, H, W)`` in ``[-1, 1]``.

        Equals ``model(pixel_values, output_hidden_states=True).hidden_states[layer][:, 1:]``;
        the forward is cut short after block ``layer`` when the blocks can be found.
        """
        pixels = self.preprocess(x)
        if self._layers is None:  # unknown layout: the full forward
            hidden = self.model(pixel_values=pixels, output_hidden_states=True).hidden_states[self.layer]
            return hidden[:, 1:]

        def stop(_module: nn.Module, _inputs: Any, output: Any) -> None:
            raise _Stop(output[0] if isinstance(output, tuple) else output)

        handle = self._layers[self.layer - 1].register_forward_hook(stop)
        try:
            self.model(pixel_values=pixels)
        except _Stop as done:
            hidden = done.output
        else:  # pragma: no cover - the hook always fires
            raise RuntimeError("CLIPStyle: the CLIP forward did not reach the requested block")
        finally:
            handle.remove()
        return hidden[:, 1:]

    def gram(self, x: Tensor) -> Tensor:
        """Gram matrices ``(B, C, C)`` of pixels ``(B, 3, H, W)`` in ``[-1, 1]`` (see `gram_matrix`, scaled by ``gram``)."""
        feats = self.features(x)
        if feats.dtype not in (torch.float32, torch.float64):
            feats = feats.float()
        return gram_matrix(feats, self.gram_scale)

    def loss(self, x: Tensor) -> Tensor:
        """``||G(x) - G(reference)||_F`` per sample, shape ``(B,)``, in ``x``'s dtype.

        Args:
            x: ``(B, 3, H, W)`` in ``[-1, 1]``; ``B`` must equal the reference batch unless
                that is 1.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"CLIPStyle expects RGB images (B, 3, H, W), got shape {tuple(x.shape)}")
        R = self.reference_gram.shape[0]
        if R > 1 and x.shape[0] != R:
            raise ValueError(f"reference has batch {R} but the samples have batch {x.shape[0]}")
        g = self.gram(x)
        diff = g - self.reference_gram.to(g.dtype)
        return torch.linalg.matrix_norm(diff, ord="fro").to(device=x.device, dtype=x.dtype)

    @property
    def batch_size(self) -> int | None:
        R = int(self.reference.shape[0])
        return R if R > 1 else None

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        """Require RGB images ``(3, H, W)``.

        Raises:
            ValueError: any other sample shape (e.g. a latent: wrap the constraint in
                ``DecodedConstraint`` with the model's codec).
        """
        if len(sample_shape) != 3 or sample_shape[0] != 3:
            raise ValueError(
                f"CLIPStyle needs RGB image samples of shape (3, H, W), got {tuple(sample_shape)}; for a latent "
                "model wrap it: DecodedConstraint(CLIPStyle(...), denoiser.codec)"
            )

    def __repr__(self) -> str:
        return (f"CLIPStyle(reference={tuple(self.reference.shape)}, layer={self.layer}, "
                f"image_size={self.image_size}, gram={self.gram_scale!r}, resize={self.resize!r}, device={self.device}, dtype={self.dtype})")
