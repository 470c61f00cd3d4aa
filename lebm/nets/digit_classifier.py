"""A small CNN digit classifier whose penultimate layer is an offline FID / KID feature space.

Inception v3 features are the standard for natural images, but their weights cannot be
downloaded here and they say little about 8 x 8 grey digits. :class:`lebm.features.DigitFeatures`
is the "FID in digit-classifier feature space" alternative: the 128-d penultimate activations
of :class:`DigitClassifier`, trained on sklearn's bundled digits by
``python -m lebm.experiments.train_digit_classifier`` and shipped with the package as
``lebm/assets/digit_classifier.pt`` (a state dict plus metadata, about 0.6 MB).

The classifier takes 1-channel images in [-1, 1] of any size: it first resizes them to
``input_size x input_size`` (16) with bilinear, antialiased interpolation, so 8 x 8 digits,
16 / 32 px digits and 28 x 28 MNIST-sized images all go through the same network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_WEIGHTS: Path = Path(__file__).resolve().parents[1] / "assets" / "digit_classifier.pt"
"""The shipped weights: ``lebm/assets/digit_classifier.pt`` inside the installed package."""

REGENERATE_COMMAND = "python -m lebm.experiments.train_digit_classifier"
"""The command that trains the classifier and writes the weights file (``--out PATH``)."""


def resize_images(x: Tensor, size: int) -> Tensor:
    """Bilinear, antialiased resize of images (N, C, H, W) -> (N, C, size, size).

    ``align_corners=False``; antialiasing only changes downsampling (upsampling is plain
    bilinear). Returns ``x`` itself when it already has the size.
    """
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class DigitClassifier(nn.Module):
    """CNN for 1-channel digit images in [-1, 1], of any spatial size.

    ``resize(16) -> conv3x3(1 -> c) -> ReLU -> conv3x3(c -> c) -> ReLU -> maxpool2
    -> conv3x3(c -> 2c) -> ReLU -> maxpool2 -> flatten -> linear(2c * (s/4)^2 -> f) -> ReLU
    -> linear(f -> num_classes)``, with ``c = channels``, ``s = input_size``, ``f = num_features``.
    The post-ReLU ``f``-d activations are the "features" (:meth:`features`).

    Args:
        channels: c, channels of the first two convolutions (the third has 2c).
        num_features: f, width of the penultimate (feature) layer.
        num_classes: number of output logits.
        input_size: s, the side every input is resized to; divisible by 4.
    """

    def __init__(
        self,
        channels: int = 32,
        num_features: int = 128,
        num_classes: int = 10,
        input_size: int = 16,
    ) -> None:
        super().__init__()
        for name, value in (
            ("channels", channels),
            ("num_features", num_features),
            ("num_classes", num_classes),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if input_size < 4 or input_size % 4:
            raise ValueError(f"input_size must be a positive multiple of 4, got {input_size}")
        self.channels = channels
        self.num_features = num_features
        self.num_classes = num_classes
        self.input_size = input_size
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.feature_layer = nn.Sequential(
            nn.Linear(2 * channels * (input_size // 4) ** 2, num_features), nn.ReLU()
        )
        self.head = nn.Linear(num_features, num_classes)

    def config(self) -> dict[str, int]:
        """The constructor arguments, stored next to the weights so they can be rebuilt."""
        return {
            "channels": self.channels,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "input_size": self.input_size,
        }

    def features(self, x: Tensor) -> Tensor:
        """Images (N, 1, H, W) in [-1, 1] -> penultimate activations (N, num_features)."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"DigitClassifier needs images (N, 1, H, W), got {tuple(x.shape)}")
        return self.feature_layer(self.conv(resize_images(x, self.input_size)))

    def forward(self, x: Tensor) -> Tensor:
        """Images (N, 1, H, W) in [-1, 1] -> class logits (N, num_classes)."""
        return self.head(self.features(x))


def save_digit_classifier(
    model: DigitClassifier, path: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Writes ``{"config", "state_dict", "metadata"}`` (plain tensors / numbers / strings).

    Returns:
        The path written (parent folders are created).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    torch.save({"config": model.config(), "state_dict": state, "metadata": metadata or {}}, path)
    return path


def resolve_digit_weights(path: str | Path | None) -> Path:
    """The digit-classifier weights file to load, checked to exist.

    Args:
        path: a local file; None means the shipped :data:`DEFAULT_WEIGHTS`.

    Raises:
        FileNotFoundError: naming the expected path and the command that regenerates it.
    """
    expected = Path(path).expanduser() if path is not None else DEFAULT_WEIGHTS
    if expected.is_file():
        return expected
    raise FileNotFoundError(
        f"digit-classifier weights not found at {expected}. Regenerate them (well under 2 "
        f"minutes on CPU, no download) with `{REGENERATE_COMMAND} --out {expected}`"
    )


def load_digit_classifier(
    path: str | Path | None = None,
) -> tuple[DigitClassifier, dict[str, Any]]:
    """Rebuilds the classifier from a file written by :func:`save_digit_classifier`.

    Args:
        path: weights file; None means the shipped :data:`DEFAULT_WEIGHTS`.

    Returns:
        ``(model, metadata)``, the model in eval mode on the CPU.
    """
    file = resolve_digit_weights(path)
    checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{file} is not a digit-classifier file written by {REGENERATE_COMMAND}")
    model = DigitClassifier(**checkpoint.get("config", {}))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), dict(checkpoint.get("metadata", {}))
