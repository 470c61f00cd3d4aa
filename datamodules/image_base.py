"""The base of the image datamodules and the helpers its families share.

:class:`ImageDataModule` holds the arguments, the per-stage split building and (through
:class:`~datamodules.base.SplitDataLoaders`) the four dataloaders; each family lives in a module
of its own (:mod:`datamodules.digits`, :mod:`datamodules.torchvision_sets`,
:mod:`datamodules.folder`) and :mod:`datamodules.images` gathers them all.
"""

import abc
from typing import ClassVar

import lightning as L
import torch
from torch.utils.data import Dataset
from torchvision import transforms

from datamodules.base import (
    SPLITS,
    SplitDataLoaders,
    check_split_fractions,
    check_split_name,
    split_sizes,
)

_STAGE_SPLITS: dict[str | None, tuple[str, ...]] = {
    "fit": ("train", "val"),
    "validate": ("val",),
    "test": ("test",),
    "predict": (),
    None: SPLITS,
}


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


def signed_unit_tensor() -> transforms.Compose:
    """PIL image (uint8, mode L or RGB) -> float32 tensor (C, H, W) in [-1, 1]: x / 127.5 - 1."""
    return transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])


def resize_shorter_side(size: int) -> transforms.Resize:
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
        if self.has_official_val:
            if val_fraction is not None:
                raise ValueError(
                    f"{name} uses its data set's official validation split, so val_fraction "
                    f"must be left unset (None), got {val_fraction!r}"
                )
        else:
            if val_fraction is None:
                val_fraction = self.default_val_fraction
            check_split_fractions(val_fraction)
        self._init_loader_settings(batch_size, num_workers, seed, num_predict_samples)

        # No ``save_hyperparameters()``: Lightning refuses to log when a datamodule and its model
        # share an hparam name with different values, and LightningCLI records the config.
        self.root = str(root)
        self.image_size = int(image_size)
        self.val_fraction = None if val_fraction is None else float(val_fraction)
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
        check_split_name(name)
        if name not in self._datasets:
            self._datasets[name] = self._load_split(name)
        return self._datasets[name]

    def _split_data(self, name: str) -> Dataset:
        return self.dataset(name)
