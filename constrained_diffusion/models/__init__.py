"""Networks that ship with the package, their weight files, the shipped weights, and models by name."""

from constrained_diffusion.models.classifier import MNISTClassifier
from constrained_diffusion.models.loading import load, names, weights_path
from constrained_diffusion.models.pretrained import mnist_classifier, pretrained_path, weights_digest
from constrained_diffusion.models.unet import UNet, UNetConfig
from constrained_diffusion.models.weights import load_weights, save_weights

__all__ = [
    "MNISTClassifier", "UNet", "UNetConfig", "load", "load_weights", "mnist_classifier", "names", "pretrained_path",
    "save_weights", "weights_digest", "weights_path",
]
