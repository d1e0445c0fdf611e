"""The harness's metrics, all from torchmetrics: per image (PSNR, SSIM, LPIPS) and per data set (FID, KID).

* ``psnr``, ``ssim``: `constrained_diffusion.metrics.images` (torchmetrics, images mapped from
  ``[-1, 1]`` to ``[0, 1]``, ``data_range = 1``).
* ``lpips``: ``torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity`` (AlexNet), on
  ``[-1, 1]`` images (greyscale repeated to 3 channels). Needs torchvision and the AlexNet
  weights in the torch hub cache.
* ``label_accuracy``: 1 when the shipped MNIST classifier (`read_digits`) reads the image's true
  label in the result, else 0 (its mean is the fraction of digits read right); only for the
  shipped MNIST sets, whose labels are known (`constrained_diffusion.data.images.shipped_labels`).
* ``fid``, ``kid``: ``FrechetInceptionDistance`` / ``KernelInceptionDistance`` between the
  outputs of a method and the clean images, once over the whole set after the last batch.
  The features are the Inception network of torch-fidelity (its weights in the torch hub
  cache), or a shipped extractor: ``mnist-classifier`` (the shipped classifier's 128-d
  penultimate features, `MNISTFeatures`), or ``module:Name`` (an ``nn.Module`` class whose
  ``forward`` maps ``(B, C, H, W)`` images in ``[0, 1]`` to ``(B, F)``).

Pretrained feature weights are never downloaded: `check_metrics` stops a run before any
sampling when a requested metric's file is missing, with a one-line error naming the metric
and the file. ``feature_weights``, a folder laid out like the torch hub cache
(``checkpoints/<file>``), is searched first.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

PER_IMAGE = ("psnr", "ssim", "lpips", "label_accuracy")
DATASET = ("fid", "kid")
METRICS = PER_IMAGE + DATASET
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "label_accuracy": True, "fid": False, "kid": False}

LPIPS_FILE = "alexnet-owt-7be5be79.pth"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def hub_dirs(feature_weights: str | os.PathLike[str] | None) -> list[Path]:
    """Where feature weights are looked for: ``feature_weights`` first, then the torch hub cache."""
    dirs = [Path(feature_weights)] if feature_weights is not None else []
    return [*dirs, Path(torch.hub.get_dir())]


def _find(file: str, feature_weights: str | os.PathLike[str] | None) -> Path | None:
    for d in hub_dirs(feature_weights):
        for candidate in (d / "checkpoints" / file, d / file):
            if candidate.is_file():
                return candidate
    return None


def check_metrics(metrics: Sequence[str], fid_features: str | None = None,
                  feature_weights: str | os.PathLike[str] | None = None) -> None:
    """Every requested metric is known and computable offline, else a one-line error naming it.

    Raises:
        ValueError: an unknown metric; a metric whose package or weight file is missing (the
            message names the file and where it is looked for).
    """
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"--metrics: unknown metric {m!r}; expected some of {', '.join(METRICS)}")
    if feature_weights is not None and not Path(feature_weights).is_dir():
        raise ValueError(f"--feature-weights: {feature_weights} is not a folder")
    where = " or ".join(str(d / "checkpoints") for d in hub_dirs(feature_weights))
    if "lpips" in metrics:
        if importlib.util.find_spec("torchvision") is None:
            raise ValueError("--metrics lpips needs torchvision (pip install torchvision) and the AlexNet weights " + LPIPS_FILE)
        if _find(LPIPS_FILE, feature_weights) is None:
            raise ValueError(f"--metrics lpips needs the AlexNet weights {LPIPS_FILE} in {where} (or --feature-weights DIR)")
    wanted = [m for m in DATASET if m in metrics]
    if wanted and (fid_features in (None, "inception")):
        if importlib.util.find_spec("torch_fidelity") is None:
            raise ValueError(f"--metrics {wanted[0]} needs torch-fidelity for its Inception features "
                             "(pip install torch-fidelity), or --fid-features mnist-classifier")
        if _find(INCEPTION_FILE, feature_weights) is None:
            raise ValueError(f"--metrics {wanted[0]} needs the Inception weights {INCEPTION_FILE} in {where} "
                             "(or --feature-weights DIR, or --fid-features mnist-classifier)")
    elif wanted:
        feature_extractor(fid_features)  # imports it now: a bad name fails before sampling


class MNISTFeatures(nn.Module):
    """The shipped MNIST classifier's penultimate features (128-d) as a FID/KID extractor.

    Input: ``(B, C, H, W)`` in ``[0, 1]`` (torchmetrics' convention for custom extractors);
    channels are averaged to grey, the size is resized to 32 x 32, and the classifier sees
    ``[-1, 1]``. Output ``(B, 128)`` float64.
    """

    num_features = 128

    def __init__(self) -> None:
        super().__init__()
        from constrained_diffusion.models.loading import load

        self.classifier = load("mnist-classifier")

    def forward(self, x: Tensor) -> Tensor:
        x = x.float().mean(dim=1, keepdim=True) * 2 - 1
        if x.shape[-2:] != (32, 32):
            x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            return self.classifier.features(x.clamp(-1, 1)).double()


def feature_extractor(name: str | None) -> nn.Module | int:
    """What torchmetrics' FID/KID take as ``feature``: 2048 (Inception) or an ``nn.Module``.

    Raises:
        ValueError: a ``module:Name`` that does not import or is not an ``nn.Module`` class.
    """
    if name in (None, "inception"):
        return 2048
    if name == "mnist-classifier":
        return MNISTFeatures()
    module, sep, attr = name.partition(":")
    if not sep:
        raise ValueError(f"--fid-features: expected inception, mnist-classifier or module:ClassName, got {name!r}")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--fid-features: cannot import {name!r} ({exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"--fid-features: {name!r} is not an nn.Module class")
    return cls()


def _rgb(x: Tensor) -> Tensor:
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


class PerImage:
    """Per-image metrics of a batch: ``scores(out, truth, labels) -> {name: (B,) tensor}`` on the CPU."""

    def __init__(self, metrics: Sequence[str], feature_weights: str | os.PathLike[str] | None = None) -> None:
        self.metrics = [m for m in metrics if m in PER_IMAGE]
        self._lpips = None
        self._classifier: nn.Module | None = None
        if "label_accuracy" in self.metrics:
            from constrained_diffusion.models.pretrained import mnist_classifier

            self._classifier = mnist_classifier()
        if "lpips" in self.metrics:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            hub = _find(LPIPS_FILE, feature_weights)
            old = torch.hub.get_dir()
            if hub is not None:
                torch.hub.set_dir(str(hub.parent.parent if hub.parent.name == "checkpoints" else hub.parent))
            try:
                self._lpips = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="none")
            finally:
                torch.hub.set_dir(old)

    def __call__(self, out: Tensor, truth: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        """``out``, ``truth``: ``(B, C, H, W)`` in ``[-1, 1]``; ``labels``: ``(B,)`` true classes (for ``label_accuracy``).

        Raises:
            ValueError: ``label_accuracy`` asked for without ``labels``.
        """
        from constrained_diffusion.evaluation.digits import read_digits
        from constrained_diffusion.metrics.images import psnr, ssim

        out, truth = out.float().cpu().clamp(-1, 1), truth.float().cpu().clamp(-1, 1)
        scores: dict[str, Tensor] = {}
        for m in self.metrics:
            if m == "psnr":
                scores[m] = psnr(out, truth)
            elif m == "ssim":
                scores[m] = ssim(out, truth)
            elif m == "label_accuracy":
                if labels is None:
                    raise ValueError("--metrics label_accuracy: needs the images' labels (a shipped MNIST --data set)")
                scores[m] = (read_digits(out, self._classifier) == labels.cpu()).float()
            else:
                assert self._lpips is not None
                with torch.no_grad():
                    scores[m] = torch.as_tensor(self._lpips(_rgb(out), _rgb(truth))).reshape(-1)
        return scores


def dataset_scores(metrics: Sequence[str], fakes: Tensor, reals: Tensor, fid_features: str | None = None,
                   feature_weights: str | os.PathLike[str] | None = None) -> dict[str, float]:
    """FID and/or KID (as requested) of ``fakes`` against ``reals``, both ``(N, C, H, W)`` in ``[-1, 1]``.

    KID is the mean over subsets of ``min(N, 1000)`` images (torchmetrics' estimator);
    ``kid_std`` its standard deviation over the subsets. NaN where ``N < 2``.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    wanted = [m for m in DATASET if m in metrics]
    n = min(fakes.shape[0], reals.shape[0])
    if not wanted:
        return {}
    if n < 2:
        return {m: float("nan") for m in wanted}
    old = torch.hub.get_dir()
    hub = _find(INCEPTION_FILE, feature_weights) if fid_features in (None, "inception") else None
    if hub is not None:
        torch.hub.set_dir(str(hub.parent.parent if hub.parent.name == "checkpoints" else hub.parent))
    feature = feature_extractor(fid_features)
    to_unit = lambda x: _rgb((x.float().clamp(-1, 1) + 1) / 2)  # noqa: E731
    out: dict[str, float] = {}
    try:
        if "fid" in wanted:
            fid = FrechetInceptionDistance(feature=feature, normalize=True)
            fid.update(to_unit(reals), real=True)
            fid.update(to_unit(fakes), real=False)
            out["fid"] = float(fid.compute())
        if "kid" in wanted:
            kid = KernelInceptionDistance(feature=feature, normalize=True, subset_size=min(n, 1000))
            kid.update(to_unit(reals), real=True)
            kid.update(to_unit(fakes), real=False)
            mean, std = kid.compute()
            out["kid"], out["kid_std"] = float(mean), float(std)
    finally:
        torch.hub.set_dir(old)
    return out
