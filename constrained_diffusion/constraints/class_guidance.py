"""Class guidance: make a classifier read a given label in ``x0_hat``.

A nonlinear constraint with ``loss(x) = CE(f(x), c)`` per sample: the cross-entropy of a
time-independent classifier ``f`` on the clean estimate (as in FreeDoM and DPS's nonlinear
guidance, not a noise-conditioned classifier as in Dhariwal & Nichol's guidance). With the
shipped MNIST classifier, ``mnist_class_guidance(3)`` asks for a 3.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from constrained_diffusion.constraints.base import NonlinearConstraint
from constrained_diffusion.linalg.precision import upcast


class ClassGuidance(NonlinearConstraint):
    """``loss(x) = -log softmax(f(transform(x)))[c]`` per sample; ``residual = loss``.

    Args:
        classifier: maps images ``(B, *sample_shape)`` to logits ``(B, K)``; frozen (eval mode,
            no parameter gradients) by this constraint.
        labels: the wanted class: an int for every sample, or one per sample ``(B,)``.
        transform: applied to ``x0_hat`` before the classifier (default: identity).

    Raises:
        ValueError: a label that is not an integer ``>= 0``.
    """

    def __init__(self, classifier: nn.Module, labels: int | Sequence[int] | Tensor,
                 transform: Callable[[Tensor], Tensor] | None = None) -> None:
        if not isinstance(classifier, nn.Module):
            raise TypeError(f"classifier must be a torch.nn.Module, got {type(classifier).__name__}")
        tensor = torch.as_tensor(labels)
        if tensor.numel() == 0:
            raise ValueError("labels is an empty batch; give one class, or one per sample")
        if tensor.is_floating_point() or tensor.dtype == torch.bool or tensor.ndim > 1 or bool((tensor < 0).any()):
            raise ValueError(f"labels must be an integer >= 0 or a 1-D sequence of them, got {labels!r}")
        self.labels = tensor.long().reshape(-1)
        self.classifier = classifier.eval().requires_grad_(False)
        self.transform = transform

    @property
    def batch_size(self) -> int | None:
        return int(self.labels.numel()) if self.labels.numel() > 1 else None

    def logits(self, x: Tensor) -> Tensor:
        """Classifier logits ``(B, K)`` of ``x`` ``(B, *sample_shape)``."""
        params = next(self.classifier.parameters(), None)
        xin = x if params is None else x.to(params)
        if self.transform is not None:
            xin = self.transform(xin)
        return self.classifier(xin)

    def loss(self, x: Tensor) -> Tensor:
        logits = self.logits(x)
        if int(self.labels.max()) >= logits.shape[1]:
            raise ValueError(f"labels must be < {logits.shape[1]} (the classifier's number of classes), got {self.labels.tolist()}")
        labels = self.labels.to(logits.device).expand(x.shape[0]) if self.labels.numel() == 1 else self.labels.to(logits.device)
        return F.cross_entropy(upcast(logits), labels, reduction="none").to(x.dtype)

    def validate(self, sample_shape: tuple[int, ...]) -> None:
        """Probe the classifier on a zero sample: it must return ``(1, K)`` logits with ``K`` above every label."""
        params = next(self.classifier.parameters(), None)
        probe = torch.zeros(1, *sample_shape, device=params.device if params is not None else None)
        with torch.no_grad():
            try:
                out = self.logits(probe)
            except (RuntimeError, ValueError) as exc:
                raise ValueError(f"classifier cannot be applied to samples of shape {tuple(sample_shape)}: {exc}") from exc
        if out.ndim != 2 or out.shape[0] != 1:
            raise ValueError(f"classifier must return logits (B, K); for one sample it returned {tuple(out.shape)}")
        if int(self.labels.max()) >= out.shape[1]:
            raise ValueError(f"labels must be < {out.shape[1]} (the classifier's number of classes), got {self.labels.tolist()}")


def clamp_unit(x: Tensor) -> Tensor:
    """``clamp(x, -1, 1)``: the image as it is displayed."""
    return x.clamp(-1.0, 1.0)


def mnist_class_guidance(label: int | Sequence[int] | Tensor) -> ClassGuidance:
    """Class guidance with the shipped MNIST classifier (``cd.models.mnist_classifier()``).

    The classifier sees ``clamp(x0_hat, -1, 1)``, the image as displayed. Without the clamp the
    guidance finds adversarial values far outside ``[-1, 1]`` (measured: pixels up to +-30
    that the classifier reads as the label only before clamping); with it, pixels already past
    the range get no gradient.
    """
    from constrained_diffusion.models.pretrained import mnist_classifier

    return ClassGuidance(mnist_classifier(), label, transform=clamp_unit)
