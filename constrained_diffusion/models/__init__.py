"""Networks that ship with the package, their weight files and the shipped weights."""

from constrained_diffusion.models.classifier import MNISTClassifier
from constrained_diffusion.models.pretrained import mnist_classifier, pretrained_path
from constrained_diffusion.models.unet import UNet, UNetConfig
from constrained_diffusion.models.weights import load_weights, save_weights

__all__ = ["MNISTClassifier", "UNet", "UNetConfig", "load_weights", "mnist_classifier", "pretrained_path", "save_weights"]
