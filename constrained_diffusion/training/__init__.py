"""Training the package's small models: diffusion/flow UNets and the MNIST classifier."""

from constrained_diffusion.training.diffusion import TrainConfig, export_weights, train

__all__ = ["TrainConfig", "export_weights", "train"]
