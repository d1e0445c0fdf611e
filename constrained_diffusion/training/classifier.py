"""Train the MNIST classifier on the 4,500 training digits; report accuracy on the 500 test digits.

Adam with a cosine learning-rate decay, label smoothing 0.05 and random translations of up to
2 pixels (the digits are zero-padded to 32x32, so shifts stay inside the frame). Seeded.
Training can start from a classifier weight file (``init_from``, e.g. the shipped one) instead
of a fresh initialisation.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from constrained_diffusion.data import mnist
from constrained_diffusion.models.classifier import MNISTClassifier
from constrained_diffusion.models.pretrained import weights_digest
from constrained_diffusion.models.weights import load_weights, save_weights
from constrained_diffusion.training.checkpoint import TrainArgumentError


def random_shift(x: Tensor, max_shift: int, g: torch.Generator) -> Tensor:
    """Translate each image by an integer offset in ``[-max_shift, max_shift]``, filling with -1.

    Args:
        x: images ``(B, C, H, W)``.
        max_shift: the largest shift in pixels, in each direction.
        g: the generator of the offsets.

    Returns:
        The shifted images, same shape.
    """
    B, _, H, W = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
    dx = torch.randint(0, 2 * max_shift + 1, (B,), generator=g)
    return torch.stack([padded[i, :, dy[i]:dy[i] + H, dx[i]:dx[i] + W] for i in range(B)])


@torch.no_grad()
def accuracy(model: MNISTClassifier, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    """Fraction of ``images`` classified as ``labels``.

    Args:
        model: the classifier (put in eval mode).
        images: ``(N, 1, 32, 32)`` in ``[-1, 1]``.
        labels: ``(N,)`` digit labels.
        batch_size: images per forward pass.

    Returns:
        The accuracy in ``[0, 1]``.
    """
    model.eval()
    correct = 0
    for i in range(0, images.shape[0], batch_size):
        correct += int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
    return correct / images.shape[0]


def initial_classifier(init_from: str | Path | None = None) -> MNISTClassifier:
    """A classifier to train: freshly initialised (from the global seed), or loaded from a weight file.

    Args:
        init_from: a classifier weight file (e.g. the shipped ``mnist_classifier.safetensors``).

    Returns:
        The classifier (float32, CPU, gradients on).

    Raises:
        TrainArgumentError: ``init_from`` does not exist or holds another architecture.
    """
    if init_from is None:
        return MNISTClassifier()
    if not Path(init_from).is_file():
        raise TrainArgumentError("init_from", f"no weight file at {init_from}")
    model, _ = load_weights(init_from)
    if not isinstance(model, MNISTClassifier):
        raise TrainArgumentError("init_from", f"{init_from} does not hold MNISTClassifier weights")
    return model.requires_grad_(True)


def train_classifier(path: str | Path, epochs: int = 30, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, device: str | torch.device = "cpu", init_from: str | Path | None = None) -> float:
    """Train, save the weights to ``path`` (safetensors) and return the test accuracy.

    Args:
        path: the weight file to write.
        epochs: passes over the 4,500 training digits.
        batch_size: digits per step.
        lr: the peak learning rate (cosine decay to 0).
        seed: seeds the initialisation, the order and the shifts.
        device: where to train.
        init_from: a classifier weight file to start from instead of a fresh network.

    Returns:
        The test accuracy of the final weights.

    Raises:
        TrainArgumentError: see `initial_classifier`.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_train, y_train = mnist("train")
    x_test, y_test = mnist("held-out")
    device = torch.device(device)
    model = initial_classifier(init_from).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = math.ceil(x_train.shape[0] / batch_size)
    total = epochs * steps_per_epoch
    step = 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(x_train.shape[0], generator=g)
        for i in range(0, x_train.shape[0], batch_size):
            idx = order[i:i + batch_size]
            x = random_shift(x_train[idx], 2, g).to(device)
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(x), y_train[idx].to(device), label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        acc = accuracy(model, x_test.to(device), y_test.to(device))
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, test accuracy {acc:.4f}")
    acc = accuracy(model.cpu(), x_test, y_test)
    meta = {"test_accuracy": f"{acc:.4f}", "epochs": str(epochs), "seed": str(seed)}
    if init_from is not None:
        meta["init_from"] = f"{Path(init_from).name} {weights_digest(init_from)}"
    save_weights(path, model, meta)
    print(f"wrote {path} (test accuracy {acc:.4f})")
    return acc
