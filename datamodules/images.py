"""Image datamodules: scikit-learn's 8x8 digits, torchvision sets and a folder of your own images.

This module gathers the image families, each written in a module of its own:

* :mod:`datamodules.image_base` — :class:`ImageDataModule`, the base of them all, and the
  helpers they share (:class:`ImagesOnly`, :func:`seeded_split_indices`).
* :mod:`datamodules.digits` — :class:`DigitsDataModule`.
* :mod:`datamodules.torchvision_sets` — :class:`TorchvisionDataModule` and the MNIST,
  Fashion-MNIST, CIFAR-10, SVHN and CelebA datamodules.
* :mod:`datamodules.folder` — :class:`ImageFolderDataModule`.

Every class is an :class:`ImageDataModule`. They share the base's arguments (``root``,
``image_size``, ``batch_size``, ``num_workers``, ``seed``, ``val_fraction``,
``num_predict_samples``, ``download``) and differ in where the images come from, their channel
count and their defaults. All loaders yield plain float32 tensors of shape
(B, C, image_size, image_size) with values in [-1, 1]; labels are dropped. The predict loader
yields index batches of shape (B,) over :class:`~datamodules.base.SampleRequests`.

Summary (``data_shape`` at the default ``image_size``; split sources):

* :class:`DigitsDataModule` — (1, 8, 8); scikit-learn's bundled ``load_digits`` (1,797
  images, no files needed), seeded train / val / test split (0.8 / 0.1 / 0.1).
* :class:`MNISTDataModule` — (1, 28, 28); official train / test, val carved from train.
* :class:`FashionMNISTDataModule` — (1, 28, 28); official train / test, val carved from train.
* :class:`CIFAR10DataModule` — (3, 32, 32); official train / test, val carved from train.
* :class:`SVHNDataModule` — (3, 32, 32); official train / test, val carved from train.
* :class:`CelebADataModule` — (3, 64, 64); official train / valid / test partitions, images
  center-cropped to 140 x 140, then resized.
* :class:`ImageFolderDataModule` — (channels, 64, 64); every image under ``root``, seeded
  train / val / test split (0.8 / 0.1 / 0.1).

Files are looked for only in ``prepare_data`` / ``setup`` (or on first use of a split), never
in ``__init__``, so configs instantiate without data. A missing file raises
``FileNotFoundError`` naming the folder, the files expected there and where they come from.
Nothing is downloaded unless ``download=True``. The README section "Image data" gives the
layouts.
"""

from datamodules.digits import DigitsDataModule
from datamodules.folder import IMAGE_EXTENSIONS, ImageFolderDataModule
from datamodules.image_base import ImageDataModule, ImagesOnly, seeded_split_indices
from datamodules.torchvision_sets import (
    DOWNLOAD_HINT,
    CelebADataModule,
    CIFAR10DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SVHNDataModule,
    TorchvisionDataModule,
)

__all__ = [
    "DOWNLOAD_HINT",
    "IMAGE_EXTENSIONS",
    "CelebADataModule",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "ImagesOnly",
    "MNISTDataModule",
    "SVHNDataModule",
    "TorchvisionDataModule",
    "seeded_split_indices",
]
