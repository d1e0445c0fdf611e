"""Sample quality of MNIST models, judged by the shipped classifier.

* confident fraction: the share of samples whose top class probability is ``>= threshold``
  (0.9): a sample the classifier is sure about looks like a digit;
* Fréchet distance between the classifier's penultimate features (128-d) of the samples and of
  the 500 test digits (lower is better; 0 for identical distributions).
"""

from __future__ import annotations

import torch
from torch import Tensor

from constrained_diffusion.metrics.frechet import frechet_distance
from constrained_diffusion.models.classifier import MNISTClassifier


@torch.no_grad()
def classify(classifier: MNISTClassifier, images: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
    """``(probabilities (N, 10), features (N, 128))`` of images ``(N, 1, 32, 32)`` in ``[-1, 1]``."""
    probs, feats = [], []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].clamp(-1, 1)
        f = classifier.features(x)
        feats.append(f)
        probs.append(classifier.head(f).softmax(dim=1))
    return torch.cat(probs), torch.cat(feats)


def sample_quality(classifier: MNISTClassifier, samples: Tensor, reference: Tensor,
                   threshold: float = 0.9) -> dict[str, float]:
    """``{"confident_fraction", "frechet_distance"}`` of ``samples`` against ``reference`` digits."""
    p, f = classify(classifier, samples)
    _, f_ref = classify(classifier, reference)
    return {"confident_fraction": float((p.max(dim=1).values >= threshold).float().mean()),
            "frechet_distance": frechet_distance(f, f_ref)}
