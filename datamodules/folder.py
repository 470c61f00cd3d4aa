"""A folder of your own images as an image datamodule."""

import os
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import transforms

from datamodules.base import check_split_fractions
from datamodules.image_base import (
    ImageDataModule,
    ImagesOnly,
    resize_shorter_side,
    seeded_split_indices,
    signed_unit_tensor,
)

#: File extensions (lower case) that :class:`ImageFolderDataModule` reads.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class _ImageFiles(Dataset):
    """Image files read with PIL, converted to ``mode`` ("L" or "RGB") and transformed.

    Items are ``(image, 0)`` pairs, so :class:`ImagesOnly` drops the dummy target like a
    torchvision label.
    """

    def __init__(self, paths: list[str], mode: str, transform: transforms.Compose) -> None:
        self.paths = paths
        self.mode = mode
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image).convert(self.mode)
        except (OSError, ValueError) as err:
            raise OSError(f"could not read the image {path}: {err}") from err
        return self.transform(image), 0


class ImageFolderDataModule(ImageDataModule):
    """Your own images: every .png / .jpg / .jpeg / .bmp / .webp file under ``root``.

    Files are found recursively (any nesting; hidden files and folders are skipped;
    extensions match case-insensitively) and sorted by path. Each image is converted to grey
    (``channels=1``) or RGB (``channels=3``), its shorter side resized to ``image_size``
    (bilinear, antialiased) and center-cropped to ``image_size`` x ``image_size``. A seeded
    permutation cuts the files into train / val / test (default 0.8 / 0.1 / 0.1). Nothing is
    downloaded: ``download`` must stay false. See :class:`ImageDataModule` for the other
    arguments (``root`` is the image folder itself).

    Args:
        channels: 1 for grey, 3 for RGB.
        test_fraction: Fraction of images in the test split; in [0, 1), and
            ``val_fraction + test_fraction < 1``.
    """

    channels = 3  # overridden per instance by the ``channels`` argument
    default_image_size = 64
    default_val_fraction = 0.1

    def __init__(
        self,
        *,
        channels: Literal[1, 3] = 3,
        test_fraction: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")
        super().__init__(**kwargs)
        if self.download:
            raise ValueError(
                "ImageFolderDataModule reads your own images and cannot download any; "
                "set download=False (the default)"
            )
        assert self.val_fraction is not None
        check_split_fractions(self.val_fraction, test_fraction)
        self.channels = int(channels)  # type: ignore[misc]
        self.test_fraction = float(test_fraction)
        self._paths: list[str] | None = None

    def image_files(self) -> list[str]:
        """Paths of every image under ``root``, sorted (listed once, then cached).

        Raises:
            FileNotFoundError: ``root`` is not a folder, or holds no image files.
        """
        if self._paths is not None:
            return self._paths
        folder = Path(self.root).absolute()
        accepted = ", ".join(IMAGE_EXTENSIONS)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"ImageFolderDataModule: the image folder {folder} does not exist. Set root "
                f"(--data.init_args.root=...) to a folder holding your images ({accepted}; "
                "any nesting)."
            )
        paths = []
        for directory, subdirectories, files in os.walk(folder, followlinks=True):
            subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
            for file in files:
                if not file.startswith(".") and file.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(directory, file))
        if not paths:
            raise FileNotFoundError(
                f"ImageFolderDataModule: the image folder {folder} holds no images: no file "
                f"(searched recursively) ends in one of {accepted} (case-insensitive)."
            )
        self._paths = sorted(paths, key=lambda p: Path(p).relative_to(folder).as_posix())
        return self._paths

    def _ensure_files(self) -> None:
        self.image_files()

    def _load_split(self, name: str) -> Dataset:
        paths = self.image_files()
        assert self.val_fraction is not None
        parts = seeded_split_indices(len(paths), self.val_fraction, self.test_fraction, self.seed)
        if len(parts["train"]) == 0:
            raise ValueError(
                f"val_fraction={self.val_fraction!r} and test_fraction={self.test_fraction!r} "
                f"leave no training images out of the {len(paths)} in "
                f"{Path(self.root).absolute()}; lower the fractions or add images"
            )
        transform = transforms.Compose(
            [
                resize_shorter_side(self.image_size),
                transforms.CenterCrop(self.image_size),
                *signed_unit_tensor().transforms,
            ]
        )
        chosen = [paths[int(i)] for i in parts[name]]
        return ImagesOnly(_ImageFiles(chosen, "L" if self.channels == 1 else "RGB", transform))
