"""Image datamodules over ``torchvision.datasets`` classes: MNIST, Fashion-MNIST, CIFAR-10,
SVHN and CelebA.

Files are checked here before torchvision reads them, so a missing file raises
``FileNotFoundError`` naming the folder, the files expected there and where they come from.
Nothing is downloaded unless ``download=True``.
"""

import abc
import functools
import os
from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets
from torchvision import transforms

from datamodules.image_base import (
    ImageDataModule,
    ImagesOnly,
    resize_shorter_side,
    seeded_split_indices,
    signed_unit_tensor,
)

#: What the missing-file errors tell users who have network access.
DOWNLOAD_HINT = "--data.init_args.download=true"


class TorchvisionDataModule(ImageDataModule):
    """Shared machinery of the datamodules over a ``torchvision.datasets`` class.

    Before torchvision is called, the files it needs are checked here, so a missing file
    raises ``FileNotFoundError`` with a message naming the folder, the files and their
    origin; torchvision's own reading code then loads them. The official test split is the
    test split; the official validation split is used where there is one, otherwise a seeded
    ``val_fraction`` of the official train split is held out (the rest is the train split).

    A subclass sets :attr:`torchvision_class` and :attr:`native_size` and implements
    :meth:`expected_files` and :meth:`origin`. It overrides :meth:`data_folder` when its files
    do not lie in ``<root>/<torchvision_class.base_folder>``, :meth:`_torchvision_dataset` when
    its torchvision class picks the split by something other than a ``train`` flag, and
    :meth:`_download_files` when one download does not fetch every file.
    """

    #: The torchvision class read through.
    torchvision_class: ClassVar[type[Any]]
    #: Side length of the stored images; other ``image_size`` values resize.
    native_size: ClassVar[int] = 32
    #: A seeded 5% of the official train split is held out where there is no official val split.
    default_val_fraction = 0.05

    def data_folder(self) -> Path:
        """The folder the files must lie in (absolute); by default
        ``<root>/<torchvision_class.base_folder>``."""
        return Path(self.root, self.torchvision_class.base_folder).absolute()

    @abc.abstractmethod
    def expected_files(self) -> list[str]:
        """Names of the files (and folders, ending in ``/``) :meth:`data_folder` must hold."""

    @abc.abstractmethod
    def origin(self) -> str:
        """Where the files come from, in words, for error messages."""

    def _torchvision_dataset(self, split: str, download: bool = False) -> Dataset:
        """The torchvision data set of official split ``split`` ("train", "val" or "test"),
        with :meth:`_transform`; its items are (image tensor, target) pairs.

        This default suits the classes that take a ``train`` flag (MNIST, CIFAR-10, ...)."""
        return self.torchvision_class(
            self.root, train=split == "train", transform=self._transform(), download=download
        )

    def _download_files(self) -> None:
        """Downloads the files through torchvision; by default one call, which fetches them all."""
        self._torchvision_dataset("train", download=True)

    def _transform(self) -> transforms.Compose:
        """PIL image -> float32 tensor (C, image_size, image_size) in [-1, 1]."""
        steps: list = []
        if self.image_size != self.native_size:
            steps.append(resize_shorter_side(self.image_size))
        return transforms.Compose([*steps, *signed_unit_tensor().transforms])

    def missing_files(self) -> list[str]:
        """The entries of :meth:`expected_files` that are absent from :meth:`data_folder`."""
        folder = self.data_folder()
        missing = []
        for name in self.expected_files():
            path = folder / name
            present = (
                path.is_dir() and any(path.iterdir()) if name.endswith("/") else path.is_file()
            )
            if not present:
                missing.append(name)
        return missing

    def _missing_message(self, missing: list[str], error: BaseException | None) -> str:
        folder = self.data_folder()
        expected = self.expected_files()
        name = type(self).__name__
        if not folder.is_dir():
            first = f"{name} found no data: the folder {folder} does not exist."
        elif len(missing) == len(expected):
            first = f"{name} found no data: the folder {folder} holds none of its files."
        else:
            first = f"{name} found incomplete data: the folder {folder} lacks {', '.join(missing)}."
        lines = [
            first,
            f"Expected in {folder}: {', '.join(expected)} (layouts: README.md, section 'Image data').",
            f"They come from {self.origin()}.",
        ]
        if error is None:
            lines.append(
                "Put them there by hand, or, on a machine with network access, let torchvision "
                f"download them: {DOWNLOAD_HINT} (download=True in Python)."
            )
        else:
            lines.append(
                f"Downloading them failed ({type(error).__name__}: {error}); without network "
                "access, put them there by hand."
            )
        return "\n".join(lines)

    def _ensure_files(self) -> None:
        missing = self.missing_files()
        if not missing:
            return
        error: Exception | None = None
        if self.download:
            try:
                self._download_files()
            except Exception as err:  # no network, Google Drive quota, missing gdown, ...
                error = err
            missing = self.missing_files()
            if not missing:
                return
        raise FileNotFoundError(self._missing_message(missing, error)) from error

    @functools.cached_property
    def _full_train(self) -> Dataset:
        """The whole official train split (read once; train and val are views of it)."""
        return self._torchvision_dataset("train")

    def _load_split(self, name: str) -> Dataset:
        self._ensure_files()
        if name == "test" or self.has_official_val:
            return ImagesOnly(self._torchvision_dataset(name))
        full = self._full_train
        assert self.val_fraction is not None
        parts = seeded_split_indices(len(full), self.val_fraction, 0.0, self.seed)  # type: ignore[arg-type]
        if len(parts["train"]) == 0:
            raise ValueError(
                f"val_fraction={self.val_fraction!r} leaves no training images out of the "
                f"{len(full)} in {self.data_folder()}; lower val_fraction"  # type: ignore[arg-type]
            )
        return ImagesOnly(full, parts[name])


class MNISTDataModule(TorchvisionDataModule):
    """MNIST handwritten digits through ``torchvision.datasets.MNIST``: grey 28x28.

    Reads the four uncompressed IDX files from ``<root>/MNIST/raw/`` (60,000 train and
    10,000 test images); ``val_fraction`` (default 0.05) of the train images, chosen by
    ``seed``, form the val split. ``image_size`` other than 28 resizes (bilinear, antialiased).
    See :class:`ImageDataModule` for the arguments.
    """

    channels = 1
    native_size = 28
    default_image_size = 28
    #: Its ``resources`` and ``mirrors`` name the files.
    torchvision_class = tv_datasets.MNIST

    def data_folder(self) -> Path:
        return Path(self.root, self.torchvision_class.__name__, "raw").absolute()

    def expected_files(self) -> list[str]:
        return [os.path.splitext(name)[0] for name, _ in self.torchvision_class.resources]

    def origin(self) -> str:
        archives = ", ".join(name for name, _ in self.torchvision_class.resources)
        return (
            f"{self.torchvision_class.mirrors[0]} (torchvision.datasets."
            f"{self.torchvision_class.__name__}): download {archives} from there and gunzip "
            "them into that folder"
        )

    def missing_files(self) -> list[str]:
        # torchvision also accepts the legacy processed/training.pt + processed/test.pt.
        processed = self.data_folder().parent / "processed"
        legacy = [self.torchvision_class.training_file, self.torchvision_class.test_file]
        if all((processed / name).is_file() for name in legacy):
            return []
        return super().missing_files()


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST through ``torchvision.datasets.FashionMNIST``: grey 28x28 clothing images.

    Same format and arguments as :class:`MNISTDataModule`; the files live in
    ``<root>/FashionMNIST/raw/``.
    """

    torchvision_class = tv_datasets.FashionMNIST


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10 through ``torchvision.datasets.CIFAR10``: colour 32x32.

    Reads the python-pickle batches from ``<root>/cifar-10-batches-py/`` (50,000 train and
    10,000 test images); ``val_fraction`` (default 0.05) of the train images, chosen by
    ``seed``, form the val split. See :class:`ImageDataModule` for the arguments.
    """

    channels = 3
    native_size = 32
    default_image_size = 32
    torchvision_class = tv_datasets.CIFAR10

    def expected_files(self) -> list[str]:
        cls = self.torchvision_class
        return [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]

    def origin(self) -> str:
        cls = self.torchvision_class
        return (
            f"{cls.url} (torchvision.datasets.{cls.__name__}): extract it in "
            f"{Path(self.root).absolute()}, which creates {cls.base_folder}/"
        )


class SVHNDataModule(TorchvisionDataModule):
    """Street View House Numbers through ``torchvision.datasets.SVHN``: colour 32x32.

    Reads ``train_32x32.mat`` (73,257 images) and ``test_32x32.mat`` (26,032) from
    ``<root>/svhn/`` (the ``extra`` set is not used); ``val_fraction`` (default 0.05) of the
    train images, chosen by ``seed``, form the val split. See :class:`ImageDataModule` for
    the arguments.
    """

    channels = 3
    native_size = 32
    default_image_size = 32
    torchvision_class = tv_datasets.SVHN
    #: Subfolder of ``root`` passed to torchvision as its root.
    subfolder: ClassVar[str] = "svhn"

    def data_folder(self) -> Path:
        return Path(self.root, self.subfolder).absolute()

    def expected_files(self) -> list[str]:
        return [self.torchvision_class.split_list[split][1] for split in ("train", "test")]

    def origin(self) -> str:
        urls = " and ".join(
            self.torchvision_class.split_list[split][0] for split in ("train", "test")
        )
        return f"{urls} (torchvision.datasets.SVHN)"

    def _torchvision_dataset(self, split: str, download: bool = False) -> Dataset:
        return self.torchvision_class(
            str(Path(self.root, self.subfolder)),
            split=split,
            transform=self._transform(),
            download=download,
        )

    def _download_files(self) -> None:
        for split in ("train", "test"):  # one file per split
            self._torchvision_dataset(split, download=True)


class CelebADataModule(TorchvisionDataModule):
    """CelebA faces (aligned and cropped) through ``torchvision.datasets.CelebA``: colour.

    Each 178x218 image is center-cropped to ``crop_size`` x ``crop_size`` (default 140) and
    resized to ``image_size`` (default 64; bilinear, antialiased). Uses CelebA's official
    train / valid / test partitions (162,770 / 19,867 / 19,962 images), so ``val_fraction``
    must stay unset. Reads ``<root>/celeba/img_align_celeba/*.jpg`` and the five annotation
    ``.txt`` files beside it. See :class:`ImageDataModule` for the other arguments.

    Args:
        crop_size: Side of the central square cut from each image before resizing; >= 8.
    """

    channels = 3
    native_size = 140
    default_image_size = 64
    has_official_val = True
    torchvision_class = tv_datasets.CelebA
    _official_names: ClassVar[dict[str, str]] = {"train": "train", "val": "valid", "test": "test"}
    homepage: ClassVar[str] = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"

    def __init__(self, *, crop_size: int = 140, **kwargs: Any) -> None:
        if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 8:
            raise ValueError(f"crop_size must be an int >= 8, got {crop_size!r}")
        super().__init__(**kwargs)
        self.crop_size = int(crop_size)

    def expected_files(self) -> list[str]:
        names = [name for _, _, name in self.torchvision_class.file_list if name.endswith(".txt")]
        return ["img_align_celeba/", *names]

    def origin(self) -> str:
        return (
            "the aligned-and-cropped CelebA release (torchvision.datasets.CelebA): "
            "img_align_celeba.zip, unzipped in place, and the annotation files, from the "
            f"Google Drive folder linked at {self.homepage} (torchvision's download needs the "
            "gdown package and often meets Google Drive's daily quota)"
        )

    def _transform(self) -> transforms.Compose:
        steps = [transforms.CenterCrop(self.crop_size), resize_shorter_side(self.image_size)]
        return transforms.Compose([*steps, *signed_unit_tensor().transforms])

    def _torchvision_dataset(self, split: str, download: bool = False) -> Dataset:
        return self.torchvision_class(
            self.root,
            split=self._official_names[split],
            target_type=[],
            transform=self._transform(),
            download=download,
        )
