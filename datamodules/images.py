"""Image datamodules: scikit-learn's 8x8 digits, torchvision sets and a folder of your own images.

Every class here is an :class:`ImageDataModule`. They share the base's arguments (``root``,
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

import abc
import functools
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import datasets as tv_datasets
from torchvision import transforms

from datamodules.base import SPLITS, SplitDataLoaders, split_sizes

#: File extensions (lower case) that :class:`ImageFolderDataModule` reads.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

#: What the missing-file errors tell users who have network access.
DOWNLOAD_HINT = "--data.init_args.download=true"

_STAGE_SPLITS: dict[str | None, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": (),
    None: SPLITS,
}


def _check_split_name(name: str) -> None:
    if name not in SPLITS:
        raise ValueError(f"split name must be one of {list(SPLITS)}, got {name!r}")


def seeded_split_indices(
    num_items: int, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, torch.Tensor]:
    """Cuts ``range(num_items)`` into train / val / test index sets by a seeded permutation.

    The sizes are :func:`~datamodules.base.split_sizes`; the permutation is
    ``torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))``, so the same
    arguments always give the same split. Each index set is sorted (items keep their order in
    the source).

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``, int64 tensors of shapes (N_train,),
        (N_val,), (N_test,), disjoint, together covering ``range(num_items)``.
    """
    n_train, n_val, _ = split_sizes(num_items, val_fraction, test_fraction)
    permutation = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    parts = {
        "train": permutation[:n_train],
        "val": permutation[n_train : n_train + n_val],
        "test": permutation[n_train + n_val :],
    }
    return {name: part.sort().values for name, part in parts.items()}


def _signed_unit_tensor() -> transforms.Compose:
    """PIL image (uint8, mode L or RGB) -> float32 tensor (C, H, W) in [-1, 1]: x / 127.5 - 1."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


def _resize(size: int) -> transforms.Resize:
    """Bilinear, antialiased resize of the shorter side to ``size``."""
    return transforms.Resize(
        size, interpolation=transforms.InterpolationMode.BILINEAR, antialias=True
    )


class ImagesOnly(Dataset):
    """A view of an (image, label) data set that returns only the image.

    Item ``i`` is ``dataset[indices[i]][0]`` (``dataset[i][0]`` when ``indices`` is ``None``).

    Args:
        dataset: Any map-style data set whose items are ``(image, target)`` pairs.
        indices: Optional int64 tensor of shape (N,) selecting and ordering the items.
    """

    def __init__(self, dataset: Dataset, indices: torch.Tensor | None = None) -> None:
        self.dataset = dataset
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> torch.Tensor:
        """Returns the image of item ``index``: float32 tensor (C, H, W) in [-1, 1]."""
        if self.indices is not None:
            index = int(self.indices[index])
        return self.dataset[index][0]


class ImageDataModule(SplitDataLoaders, L.LightningDataModule, abc.ABC):
    """Abstract base of the image datamodules: arguments, splits and the four dataloaders.

    Every loader yields plain float32 tensors of shape (B, *data_shape) with values in
    [-1, 1] (labels are dropped). The train loader shuffles with a ``torch.Generator`` seeded
    from ``seed`` and drops the last partial batch when the split holds more than
    ``batch_size`` images; val / test loaders keep a fixed order (``[]`` when the split is
    empty). The predict loader yields index tensors of shape (B,) over
    ``SampleRequests(num_predict_samples)``.

    A subclass sets the class attributes :attr:`channels`, :attr:`default_image_size`,
    :attr:`default_val_fraction` (and :attr:`has_official_val` when its source has a
    validation split) and implements :meth:`_load_split`. A subclass with arguments of its own
    declares only those (keyword-only, typed, with defaults) and forwards ``**kwargs`` to this
    constructor; jsonargparse (hence LightningCLI) follows ``**kwargs`` into this signature.

    Args:
        root: Folder holding the data set's files (see the subclass for the layout).
        image_size: Side length S of the square images the loaders yield; >= 8. ``None`` (the
            default) means the subclass's :attr:`default_image_size`.
        batch_size: Batch size of every dataloader; >= 1.
        num_workers: DataLoader worker processes; >= 0 (persistent when > 0).
        seed: Seed of the train / val(/ test) split where the data set has none of its own,
            and of train shuffling.
        val_fraction: Fraction held out for validation where the source has no official
            validation split; in [0, 1). ``None`` (the default) means the subclass's
            :attr:`default_val_fraction`. Must stay ``None`` for sets with an official one.
        num_predict_samples: Number of samples the predict dataloader requests; >= 1.
        download: Download missing files (needs network). Off by default: nothing is fetched
            unless asked for.
    """

    #: Number of image channels C.
    channels: ClassVar[int] = 1
    #: The ``image_size`` used when the argument is ``None``.
    default_image_size: ClassVar[int] = 32
    #: The ``val_fraction`` used when the argument is ``None``.
    default_val_fraction: ClassVar[float] = 0.05
    #: Whether the source has its own validation split (then ``val_fraction`` is unused).
    has_official_val: ClassVar[bool] = False

    def __init__(
        self,
        root: str = "data",
        image_size: int | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float | None = None,
        num_predict_samples: int = 1000,
        download: bool = False,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if image_size is None:
            image_size = self.default_image_size
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers!r}")
        if self.has_official_val:
            if val_fraction is not None:
                raise ValueError(
                    f"{name} uses its data set's official validation split, so val_fraction "
                    f"must be left unset (None), got {val_fraction!r}"
                )
        else:
            if val_fraction is None:
                val_fraction = self.default_val_fraction
            if not 0 <= val_fraction < 1:
                raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        if num_predict_samples < 1:
            raise ValueError(f"num_predict_samples must be >= 1, got {num_predict_samples!r}")

        # No ``save_hyperparameters()``: Lightning refuses to log when a datamodule and its model
        # share an hparam name with different values, and LightningCLI records the config.
        self.root = str(root)
        self.image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.val_fraction = None if val_fraction is None else float(val_fraction)
        self.num_predict_samples = int(num_predict_samples)
        self.download = bool(download)
        self._datasets: dict[str, Dataset] = {}

    @property
    def data_shape(self) -> tuple[int, int, int]:
        """Shape of one image, ``(C, image_size, image_size)``; available before ``setup``."""
        return (self.channels, self.image_size, self.image_size)

    # ------------------------------------------------------------------ data

    @abc.abstractmethod
    def _load_split(self, name: str) -> Dataset:
        """Builds split ``name`` (checking for its files first).

        Returns:
            A data set whose items are float32 tensors of shape ``data_shape`` in [-1, 1].
        """

    def _ensure_files(self) -> None:
        """Raises ``FileNotFoundError`` if the data set's files are missing (downloading them
        first when ``download`` is true). Nothing to check by default."""

    def prepare_data(self) -> None:
        """Checks that the files are present, downloading them first if ``download``."""
        self._ensure_files()

    def setup(self, stage: str | None = None) -> None:
        """Builds the splits ``stage`` needs (all three for ``None``; none for predict)."""
        if stage not in _STAGE_SPLITS:
            raise ValueError(f"stage must be one of {list(_STAGE_SPLITS)}, got {stage!r}")
        for name in _STAGE_SPLITS[stage]:
            self.dataset(name)

    def dataset(self, name: str) -> Dataset:
        """The ``"train"``, ``"val"`` or ``"test"`` split (built on first use, then cached).

        Returns:
            A data set of float32 tensors of shape ``data_shape`` in [-1, 1], no labels.
        """
        _check_split_name(name)
        if name not in self._datasets:
            self._datasets[name] = self._load_split(name)
        return self._datasets[name]

    def _split_data(self, name: str) -> Dataset:
        return self.dataset(name)


# ====================================================================== scikit-learn digits


class DigitsDataModule(ImageDataModule):
    """scikit-learn's bundled handwritten digits: 1,797 grey 8x8 images, held in memory.

    Pixel values 0..16 are mapped to [-1, 1] by ``x / 8 - 1``; with ``image_size != 8`` the
    whole tensor is resized once (bilinear, antialiased) and clamped to [-1, 1]. The images
    are cut by a seeded permutation into train / val / test (default 0.8 / 0.1 / 0.1, seed 0:
    1437 / 180 / 180 images). Nothing is read from ``root`` or downloaded (``download`` is
    ignored). See :class:`ImageDataModule` for the other arguments.

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
        if not 0 <= test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
        super().__init__(**kwargs)
        assert self.val_fraction is not None
        if not self.val_fraction + test_fraction < 1:
            raise ValueError(
                "val_fraction + test_fraction must be < 1, got "
                f"val_fraction={self.val_fraction!r} + test_fraction={test_fraction!r}"
            )
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
        _check_split_name(name)
        self._ensure_data()
        assert self._images is not None
        return self._images[name]

    def labels(self, name: str) -> torch.Tensor:
        """The digit classes (0..9) of split ``name``, in the order of :meth:`split`.

        Returns:
            Int64 tensor of shape (N_split,).
        """
        _check_split_name(name)
        self._ensure_data()
        assert self._labels is not None
        return self._labels[name]

    def _load_split(self, name: str) -> Dataset:
        return self.split(name)  # type: ignore[return-value]  # a tensor is a map-style data set


# ====================================================================== torchvision sets


class TorchvisionDataModule(ImageDataModule):
    """Shared machinery of the datamodules over a ``torchvision.datasets`` class.

    Before torchvision is called, the files it needs are checked here, so a missing file
    raises ``FileNotFoundError`` with a message naming the folder, the files and their
    origin; torchvision's own reading code then loads them. The official test split is the
    test split; the official validation split is used where there is one, otherwise a seeded
    ``val_fraction`` of the official train split is held out (the rest is the train split).

    A subclass implements :meth:`data_folder`, :meth:`expected_files`, :meth:`origin`,
    :meth:`_torchvision_dataset` and :meth:`_download_files`, and sets :attr:`native_size`.
    """

    #: Side length of the stored images; other ``image_size`` values resize.
    native_size: ClassVar[int] = 32

    @abc.abstractmethod
    def data_folder(self) -> Path:
        """The folder the files must lie in (absolute)."""

    @abc.abstractmethod
    def expected_files(self) -> list[str]:
        """Names of the files (and folders, ending in ``/``) :meth:`data_folder` must hold."""

    @abc.abstractmethod
    def origin(self) -> str:
        """Where the files come from, in words, for error messages."""

    @abc.abstractmethod
    def _torchvision_dataset(self, split: str, download: bool = False) -> Dataset:
        """The torchvision data set of official split ``split`` ("train", "val" or "test"),
        with :meth:`_transform`; its items are (image tensor, target) pairs."""

    def _download_files(self) -> None:
        """Downloads the files through torchvision."""
        for split in ("train", "test"):
            self._torchvision_dataset(split, download=True)

    def _transform(self) -> transforms.Compose:
        """PIL image -> float32 tensor (C, image_size, image_size) in [-1, 1]."""
        steps: list = []
        if self.image_size != self.native_size:
            steps.append(_resize(self.image_size))
        return transforms.Compose([*steps, *_signed_unit_tensor().transforms])

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
    default_val_fraction = 0.05
    #: The torchvision class read through (its ``resources`` and ``mirrors`` name the files).
    torchvision_class: ClassVar[type] = tv_datasets.MNIST

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

    def _torchvision_dataset(self, split: str, download: bool = False) -> Dataset:
        return self.torchvision_class(
            self.root, train=split == "train", transform=self._transform(), download=download
        )

    def _download_files(self) -> None:
        self._torchvision_dataset("train", download=True)  # fetches all four files


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
    default_val_fraction = 0.05

    def data_folder(self) -> Path:
        return Path(self.root, tv_datasets.CIFAR10.base_folder).absolute()

    def expected_files(self) -> list[str]:
        cls = tv_datasets.CIFAR10
        return [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]

    def origin(self) -> str:
        return (
            f"{tv_datasets.CIFAR10.url} (torchvision.datasets.CIFAR10): extract it in "
            f"{Path(self.root).absolute()}, which creates {tv_datasets.CIFAR10.base_folder}/"
        )

    def _torchvision_dataset(self, split: str, download: bool = False) -> Dataset:
        return tv_datasets.CIFAR10(
            self.root, train=split == "train", transform=self._transform(), download=download
        )

    def _download_files(self) -> None:
        self._torchvision_dataset("train", download=True)  # fetches and extracts everything


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
    default_val_fraction = 0.05
    #: Subfolder of ``root`` passed to torchvision as its root.
    subfolder: ClassVar[str] = "svhn"

    def data_folder(self) -> Path:
        return Path(self.root, self.subfolder).absolute()

    def expected_files(self) -> list[str]:
        return [tv_datasets.SVHN.split_list[split][1] for split in ("train", "test")]

    def origin(self) -> str:
        urls = " and ".join(tv_datasets.SVHN.split_list[split][0] for split in ("train", "test"))
        return f"{urls} (torchvision.datasets.SVHN)"

    def _torchvision_dataset(self, split: str, download: bool = False) -> Dataset:
        return tv_datasets.SVHN(
            str(Path(self.root, self.subfolder)),
            split=split,
            transform=self._transform(),
            download=download,
        )


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
    _official_names: ClassVar[dict[str, str]] = {"train": "train", "val": "valid", "test": "test"}
    homepage: ClassVar[str] = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"

    def __init__(self, *, crop_size: int = 140, **kwargs: Any) -> None:
        if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 8:
            raise ValueError(f"crop_size must be an int >= 8, got {crop_size!r}")
        super().__init__(**kwargs)
        self.crop_size = int(crop_size)

    def data_folder(self) -> Path:
        return Path(self.root, tv_datasets.CelebA.base_folder).absolute()

    def expected_files(self) -> list[str]:
        names = [name for _, _, name in tv_datasets.CelebA.file_list if name.endswith(".txt")]
        return ["img_align_celeba/", *names]

    def origin(self) -> str:
        return (
            "the aligned-and-cropped CelebA release (torchvision.datasets.CelebA): "
            "img_align_celeba.zip, unzipped in place, and the annotation files, from the "
            f"Google Drive folder linked at {self.homepage} (torchvision's download needs the "
            "gdown package and often meets Google Drive's daily quota)"
        )

    def _transform(self) -> transforms.Compose:
        steps = [transforms.CenterCrop(self.crop_size), _resize(self.image_size)]
        return transforms.Compose([*steps, *_signed_unit_tensor().transforms])

    def _torchvision_dataset(self, split: str, download: bool = False) -> Dataset:
        return tv_datasets.CelebA(
            self.root,
            split=self._official_names[split],
            target_type=[],
            transform=self._transform(),
            download=download,
        )

    def _download_files(self) -> None:
        self._torchvision_dataset("train", download=True)  # fetches every file


# ====================================================================== a folder of images


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
        if not 0 <= test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
        super().__init__(**kwargs)
        if self.download:
            raise ValueError(
                "ImageFolderDataModule reads your own images and cannot download any; "
                "set download=False (the default)"
            )
        assert self.val_fraction is not None
        if not self.val_fraction + test_fraction < 1:
            raise ValueError(
                "val_fraction + test_fraction must be < 1, got "
                f"val_fraction={self.val_fraction!r} + test_fraction={test_fraction!r}"
            )
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
                _resize(self.image_size),
                transforms.CenterCrop(self.image_size),
                *_signed_unit_tensor().transforms,
            ]
        )
        chosen = [paths[int(i)] for i in parts[name]]
        return ImagesOnly(_ImageFiles(chosen, "L" if self.channels == 1 else "RGB", transform))
