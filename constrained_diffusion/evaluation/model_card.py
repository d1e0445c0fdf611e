"""The measured numbers of a shipped MNIST model's card (``constrained-diffusion model-card``).

* A diffusion or flow model: ``samples`` unconditional samples (DDIM / Euler, seeded per
  sample), judged by the shipped classifier: the fraction labelled with confidence >= 0.9 and
  the Fréchet distance of their penultimate features to the 500 test digits, next to the same
  figures for 1,000 real training digits (the floor a perfect model would reach).
* The classifier: test accuracy, overall and per digit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from constrained_diffusion.denoisers import Denoiser
from constrained_diffusion.evaluation.digits import read_digits


@dataclass
class ClassifierCard:
    """Parameters and test accuracy of a classifier (``per_digit[d]``: accuracy on the digits ``d``)."""

    parameters: int
    accuracy: float
    per_digit: list[float]


@dataclass
class DiffusionCard:
    """Unconditional samples of a model and how the classifier judges them and real digits.

    Attributes:
        parameters: the network's parameter count.
        samples: the samples ``(N, 1, 32, 32)`` in ``[-1, 1]``, on the CPU.
        seconds: the time sampling took.
        quality: `sample_quality` of the samples (``confident_fraction``, ``frechet_distance``).
        floor: the same for 1,000 real training digits.
    """

    parameters: int
    samples: Tensor
    seconds: float
    quality: dict[str, float]
    floor: dict[str, float]


def classifier_card(classifier: nn.Module, images: Tensor, labels: Tensor) -> ClassifierCard:
    """Accuracy of ``classifier`` on ``images`` ``(N, 1, 32, 32)`` with ``labels`` ``(N,)``, overall and per digit."""
    pred = read_digits(images, classifier)
    labels = labels.cpu()
    per_digit = [float((pred[labels == d] == d).float().mean()) for d in range(10)]
    return ClassifierCard(sum(p.numel() for p in classifier.parameters()), float((pred == labels).float().mean()),
                          per_digit)


def unconditional_samples(model: Denoiser, n: int, steps: int, batch_size: int = 250, seed: int = 0) -> tuple[Tensor, float]:
    """``n`` unconditional samples (no constraint), sample ``i`` from seed ``seed * 1_000_003 + i``.

    Returns:
        The samples clamped to ``[-1, 1]`` on the CPU, and the seconds sampling took.
    """
    from constrained_diffusion.sampling import ConstrainedSampler

    sampler = ConstrainedSampler(model, steps=steps, inner_steps=0)
    start = time.perf_counter()
    chunks = []
    for i in range(0, n, batch_size):
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + i + j) for j in range(min(batch_size, n - i))]
        chunks.append(sampler.sample(None, generator=gens, progress=False).sample.clamp(-1, 1).cpu())
    return torch.cat(chunks), time.perf_counter() - start


def diffusion_card(model: Denoiser, classifier: nn.Module, samples: int, steps: int, batch_size: int = 250,
                   seed: int = 0) -> DiffusionCard:
    """Sample ``model`` and judge the samples, and 1,000 real training digits, against the test digits."""
    from constrained_diffusion.data import mnist
    from constrained_diffusion.metrics.quality import sample_quality

    images, seconds = unconditional_samples(model, samples, steps, batch_size, seed)
    test, _ = mnist("held-out")
    train, _ = mnist("train")
    real = train[torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))[:1000]]
    network = getattr(model, "network", None)
    parameters = sum(p.numel() for p in network.parameters()) if isinstance(network, nn.Module) else 0
    return DiffusionCard(parameters, images, seconds, sample_quality(classifier, images, test),
                         sample_quality(classifier, real, test))
