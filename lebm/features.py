"""Feature extractors for FID / KID: each maps data (N, *data_shape) to features (N, d).

``callbacks.FIDCallback(features=...)`` takes any ``nn.Module`` with an int ``num_features``
attribute (d), chosen in a config by class path::

    features:
      class_path: lebm.features.DigitFeatures
      init_args: {weights_path: null}

The same modules plug into torchmetrics' ``FrechetInceptionDistance(feature=module)`` /
``KernelInceptionDistance(feature=module)`` once their ``num_features`` is known. The
extractors here subclass :class:`FeatureExtractor`: always in eval mode, no gradients, and
weights files are read by :meth:`FeatureExtractor.setup` (which ``FIDCallback`` calls at the
setup of ``fit`` / ``validate``, before any training step), not on construction, so a config
naming a missing file still builds for ``test`` / ``predict``:

* :class:`FlattenFeatures` ("identity features") for low-dimensional data; d = the number of
  values per point, learnt from the first batch;
* :class:`InceptionFeatures`, the FID Inception v3 (torch-fidelity's, TF-compatible resize) on
  images in [-1, 1], from a local weights file (nothing is ever downloaded);
* :class:`DigitFeatures` ("FID in digit-classifier feature space"), the 128-d penultimate
  layer of the small CNN of :mod:`lebm.nets.digit_classifier` trained on sklearn's digits and
  shipped with the package: offline features for 1-channel digit images in [-1, 1] of any size
  (8 x 8 digits, 28 x 28 MNIST); values are not comparable with Inception FIDs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lebm.nets.digit_classifier import DigitClassifier, load_digit_classifier

INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
"""torch-fidelity's FID Inception v3 weights; pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
is the same conversion of the TF 2015-12-05 graph (same hash suffix)."""
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILENAME
)


class FeatureExtractor(nn.Module):
    """Base of the extractors here: always in eval mode, no gradients, files read by :meth:`setup`.

    Subclasses implement ``forward``: (N, *data_shape) -> (N, num_features). A module need not
    subclass this to serve as FID features (any ``nn.Module`` with an int ``num_features``
    does); subclassing adds the :meth:`setup` hook and allows ``num_features`` to stay None
    until the first batch.

    Attributes:
        num_features: int d, or None while it is still to be learnt from the data.
    """

    num_features: int | None = None

    def setup(self) -> FeatureExtractor:
        """Reads whatever files the extractor needs (idempotent); returns ``self``.

        ``FIDCallback`` calls it at the setup of ``fit`` / ``validate`` so a missing file fails
        before any training step; ``forward`` calls it too, so a standalone extractor needs no
        extra call. Raises ``FileNotFoundError`` naming the missing path and how to get it.
        """
        return self

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)


def float64_features(features: Tensor) -> Tensor:
    """``features`` in float64 (float32 on MPS, which has no float64): FID's covariance
    arithmetic is sensitive to round-off."""
    return features.float() if features.device.type == "mps" else features.double()


class FlattenFeatures(FeatureExtractor):
    """Identity features: (N, *shape) -> (N, d) with ``d = prod(shape) = num_features``, float64.

    Args:
        num_features: d, the number of values per data point; None learns it from the first
            batch (later batches must match), so a config never types the data size.
    """

    def __init__(self, num_features: int | None = None) -> None:
        super().__init__()
        if num_features is not None and num_features < 1:
            raise ValueError(f"num_features must be >= 1 (or None), got {num_features}")
        self.num_features = num_features

    def forward(self, x: Tensor) -> Tensor:
        """(N, *shape) -> (N, num_features)."""
        size = math.prod(x.shape[1:])
        if self.num_features is None:
            self.num_features = size
        if size != self.num_features:
            raise ValueError(f"expected {self.num_features} values per point, got {size}")
        return float64_features(x.reshape(len(x), size))


def default_inception_weights() -> Path:
    """Where torch hub would cache the weights: ``<torch.hub.get_dir()>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME


def resolve_inception_weights(path: str | Path | None) -> Path:
    """The Inception weights file to load, checked to exist (without touching the network).

    Args:
        path: a local file; None means :func:`default_inception_weights`.

    Raises:
        FileNotFoundError: naming the expected path and where to get the file.
    """
    expected = Path(path).expanduser() if path is not None else default_inception_weights()
    if expected.is_file():
        return expected
    raise FileNotFoundError(
        f"FID Inception v3 weights not found at {expected}. They cannot be downloaded here (no "
        f"internet access is assumed), so place the file there yourself: torch-fidelity's "
        f"{INCEPTION_FILENAME} from {INCEPTION_URL} (the same weights as pytorch-fid's "
        f"pt_inception-2015-12-05-6726825d.pth), then pass its path, e.g. in the config's "
        f"FIDCallback `features: {{class_path: lebm.features.InceptionFeatures, init_args: "
        f"{{weights_path: /path/to/{INCEPTION_FILENAME}}}}}`"
    )


class InceptionFeatures(FeatureExtractor):
    """2048-d pool features of the FID Inception v3 for images in [-1, 1].

    Images (N, C, H, W) with C = 1 or 3 are mapped to uint8 by ``round((x + 1) / 2 * 255)``
    (clamped), 1-channel images are repeated to RGB, and torch-fidelity's
    ``FeatureExtractorInceptionV3`` resizes to 299 x 299 the way TF 1.x did (the standard for
    reported FIDs). Output float32.

    Args:
        weights_path: local weights file (see :func:`resolve_inception_weights`); None means
            torch hub's cache path. Checked by :meth:`setup` before the network is built, so a
            missing file never leads to a download attempt.
    """

    num_features = 2048

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__()
        self.weights_path = weights_path
        self.net: nn.Module | None = None

    def setup(self) -> InceptionFeatures:
        if self.net is None:
            path = resolve_inception_weights(self.weights_path)
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
            ).requires_grad_(False)
            self.eval()
        return self

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, 2048) float32."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"Inception features need images (N, 1|3, H, W), got {tuple(x.shape)}")
        net = _ready(self, x.device)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        pixels = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return net(pixels)[0].reshape(len(x), -1).float()


class DigitFeatures(FeatureExtractor):
    """Penultimate-layer features of the shipped digit classifier, for FID / KID of digits.

    Images (N, C, H, W) with C = 1, or C = 3 (averaged over channels to grey), in [-1, 1] and of
    any size, are clamped to [-1, 1] (as the uint8 conversion before Inception does) and mapped
    to the classifier's ``num_features`` (128) post-ReLU activations, in float64 like
    :class:`FlattenFeatures`.

    Compare generated digits with the *val* or *test* split (``FIDCallback``'s default
    ``real_split="val"``): the classifier was trained on the train split and maps those images
    a little differently from unseen ones (KID against val: about 54 for train, -2 for test).

    Args:
        weights_path: weights file written by ``python -m lebm.experiments.train_digit_classifier``;
            None means the shipped ``lebm/assets/digit_classifier.pt``. Read by :meth:`setup`; a
            missing file raises ``FileNotFoundError`` naming the path and the command that
            regenerates it.

    Attributes:
        num_features: int, the feature dimension d (128 for the shipped file); None before
            :meth:`setup` reads the file.
        metadata: what the training script stored (accuracies, seed, epochs, torch version);
            empty before :meth:`setup`.
    """

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__()
        self.weights_path = weights_path
        self.net: DigitClassifier | None = None
        self.num_features = None
        self.metadata: dict[str, Any] = {}

    def setup(self) -> DigitFeatures:
        if self.net is None:
            self.net, self.metadata = load_digit_classifier(self.weights_path)
            self.net.requires_grad_(False)
            self.num_features = int(self.net.num_features)
            self.eval()
        return self

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """(N, 1 | 3, H, W) in [-1, 1] -> (N, num_features) float64."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(
                f"digit features need images (N, 1, H, W) or (N, 3, H, W), got {tuple(x.shape)}"
            )
        net = _ready(self, x.device)
        if x.shape[1] == 3:
            x = x.mean(1, keepdim=True)
        return float64_features(net.features(x.to(net.head.weight).clamp(-1, 1)))


def _ready(extractor: InceptionFeatures | DigitFeatures, device: torch.device) -> nn.Module:
    """The extractor's network, read by ``setup`` (and moved to ``device``) on first use."""
    if extractor.net is None:
        extractor.setup().to(device)
    assert extractor.net is not None
    return extractor.net
