"""Which digit the MNIST classifier reads in an image (the label metric, and the CLI's "digit read")."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def read_digits(images: Tensor, classifier: nn.Module | None = None) -> Tensor:
    """The digit ``classifier`` (default: the shipped one) reads in each image.

    Args:
        images: ``(B, 1, 32, 32)``, nominally in ``[-1, 1]`` (clamped to it first, as a
            sample's pixels are); on any device, in any float dtype.
        classifier: logits ``(B, 10)`` for such images; default ``load("mnist-classifier")``.

    Returns:
        ``(B,)`` long tensor of digits, on the CPU.

    Examples:
        >>> from constrained_diffusion.data.mnist import demo_digits
        >>> digits, labels = demo_digits()
        >>> bool((read_digits(digits) == labels).all())
        True
    """
    if classifier is None:
        from constrained_diffusion.models.loading import load

        classifier = load("mnist-classifier")
    param = next(classifier.parameters(), None)
    x = images.clamp(-1, 1)
    if param is not None:
        x = x.to(param.device, param.dtype)
    with torch.no_grad():
        return classifier(x).argmax(dim=1).cpu()
