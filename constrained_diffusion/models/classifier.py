"""A small convolutional MNIST classifier (32x32 inputs in ``[-1, 1]``).

Used for metrics (label accuracy, confidence, a Fréchet distance on its penultimate
features) and as a nonlinear constraint (class guidance). Shapes: input ``(B, 1, 32, 32)``;
`features` ``(B, 128)``; logits ``(B, 10)``.
"""

from __future__ import annotations

from torch import Tensor, nn


class MNISTClassifier(nn.Module):
    """conv(32)x2 -> pool -> conv(64)x2 -> pool -> conv(128) -> global pool -> fc(128) -> fc(10)."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.3) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
            *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.penultimate = nn.Sequential(nn.Linear(128, 128), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(128, num_classes))

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, 128)`` (used for the Fréchet distance)."""
        return self.penultimate(self.body(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, 10)``."""
        return self.head(self.features(x))
