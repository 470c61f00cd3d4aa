"""scikit-learn's bundled 8x8 handwritten digits as an image datamodule (no files needed)."""

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from datamodules.base import check_split_fractions, check_split_name
from datamodules.image_base import ImageDataModule, seeded_split_indices


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled handwritten digits: 1,797 grey 8x8 images, held in memory.

    Pixel values 0..16 are mapped to [-1, 1] by ``x / 8 - 1``; with ``image_size != 8`` the
    whole tensor is resized once (bilinear, antialiased) and clamped to [-1, 1]. The images
    are cut by a seeded permutation into train / val / test (default 0.8 / 0.1 / 0.1, seed 0:
    1437 / 180 / 180 images). Nothing is read from ``root`` or downloaded (``download`` is
    ignored). See :class:`~datamodules.image_base.ImageDataModule` for the other arguments.

    Args:
        test_fraction: Fraction of images in the test split; in [0, 1), and
            ``val_fraction + test_fraction < 1``.
    """

    channels = 1
    default_image_size = 8
    default_val_fraction = 0.1
    #: Number of images in ``sklearn.datasets.load_digits``.
    num_images: ClassVar[int] = 1797

    def __init__(self, *, test_fraction: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert self.val_fraction is not None
        check_split_fractions(self.val_fraction, test_fraction)
        self.test_fraction = float(test_fraction)
        self._images: dict[str, torch.Tensor] | None = None
        self._labels: dict[str, torch.Tensor] | None = None

    def _ensure_data(self) -> None:
        if self._images is not None:
            return
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 8 - 1
        if self.image_size != images.shape[-1]:
            images = F.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            ).clamp_(-1, 1)
        labels = torch.as_tensor(digits.target, dtype=torch.int64)
        parts = seeded_split_indices(
            len(images), self.val_fraction or 0.0, self.test_fraction, self.seed
        )
        self._images = {name: images[idx].contiguous() for name, idx in parts.items()}
        self._labels = {name: labels[idx] for name, idx in parts.items()}

    def split(self, name: str) -> torch.Tensor:
        """The images of the ``"train"``, ``"val"`` or ``"test"`` split.

        Returns:
            Float32 tensor of shape (N_split, 1, image_size, image_size) in [-1, 1].
        """
        check_split_name(name)
        self._ensure_data()
        assert self._images is not None
        return self._images[name]

    def labels(self, name: str) -> torch.Tensor:
        """The digit classes (0..9) of split ``name``, in the order of :meth:`split`.

        Returns:
            Int64 tensor of shape (N_split,).
        """
        check_split_name(name)
        self._ensure_data()
        assert self._labels is not None
        return self._labels[name]

    def _load_split(self, name: str) -> Dataset:
        return self.split(name)  # type: ignore[return-value]  # a tensor is a map-style data set
