"""Shared machinery for small in-memory datamodules.

:class:`ToyDataModule` holds everything a low-dimensional point-cloud datamodule needs
(argument validation, seeded generation, shuffling and splitting, optional standardization
and the four dataloaders), so a concrete data set only sets :attr:`ToyDataModule.data_shape`
and implements :meth:`ToyDataModule._generate`.

:class:`SampleRequests` is the data set behind every ``predict_dataloader``: its items are
just indices, and a model's ``predict_step`` draws ``len(batch)`` samples per batch.
"""

import abc
import inspect
from typing import ClassVar

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datamodules.distributed import BlockDistributedSampler

SPLITS: tuple[str, ...] = ("train", "val", "test")


class SampleRequests(Dataset):
    """A data set of sample requests: item ``i`` is the 0-d tensor ``torch.tensor(i)``.

    Used by predict dataloaders. Batched by a ``DataLoader`` it yields index tensors of
    shape (B,), and a model's ``predict_step`` generates ``len(batch)`` samples per batch,
    so one pass over the loader asks for ``num_samples`` samples in total.

    Args:
        num_samples: Number of requests (items); must be >= 0.
    """

    def __init__(self, num_samples: int) -> None:
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples!r}")
        self.num_samples = int(num_samples)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> torch.Tensor:
        """Returns ``torch.tensor(index)``, a 0-d int64 tensor."""
        if not -self.num_samples <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} requests")
        return torch.tensor(index % self.num_samples)


def check_split_name(name: str) -> None:
    """Raises ``ValueError`` unless ``name`` is one of :data:`SPLITS`."""
    if name not in SPLITS:
        raise ValueError(f"split name must be one of {list(SPLITS)}, got {name!r}")


def check_split_fractions(val_fraction: float, test_fraction: float = 0.0) -> None:
    """Raises ``ValueError`` unless the held-out fractions are valid.

    Each fraction must lie in [0, 1) (NaN is rejected) and ``val_fraction + test_fraction``
    must be < 1. Whether the resulting train split is non-empty depends on the number of
    points (see :func:`split_sizes`) and is for the caller to check.

    Args:
        val_fraction: Fraction of points held out for validation.
        test_fraction: Fraction of points held out for testing (0 for a data set whose test
            split is its own).
    """
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} must be in [0, 1), got {fraction!r}")
    if not val_fraction + test_fraction < 1:
        raise ValueError(
            "val_fraction + test_fraction must be < 1, got "
            f"val_fraction={val_fraction!r} + test_fraction={test_fraction!r}"
        )


def split_sizes(
    num_samples: int, val_fraction: float, test_fraction: float
) -> tuple[int, int, int]:
    """Sizes of the train / val / test splits of ``num_samples`` points.

    The val and test sizes are ``round(fraction * num_samples)``, raised to 1 when the fraction
    is positive; the train split takes the rest.

    Returns:
        ``(n_train, n_val, n_test)``, summing to ``num_samples``.
    """
    n_val = round(val_fraction * num_samples)
    n_test = round(test_fraction * num_samples)
    if val_fraction > 0:
        n_val = max(n_val, 1)
    if test_fraction > 0:
        n_test = max(n_test, 1)
    return num_samples - n_val - n_test, n_val, n_test


class SplitDataLoaders:
    """The four dataloaders (and the repr) of a datamodule holding train / val / test splits.

    The host class stores ``batch_size``, ``num_workers``, ``seed`` and ``num_predict_samples``
    through :meth:`_init_loader_settings` and implements :meth:`_split_data`. Train batches
    are shuffled with a generator seeded from ``seed`` and drop the last partial batch when
    the split holds more than ``batch_size`` points; val / test keep a fixed order (``[]``
    when empty); predict yields index batches of shape (B,) over :class:`SampleRequests`.
    """

    batch_size: int
    num_workers: int
    seed: int
    num_predict_samples: int

    def _init_loader_settings(
        self, batch_size: int, num_workers: int, seed: int, num_predict_samples: int
    ) -> None:
        """Validates and stores the settings the dataloaders read (called from ``__init__``).

        Raises:
            ValueError: ``batch_size < 1``, ``num_workers < 0`` or ``num_predict_samples < 1``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers!r}")
        if num_predict_samples < 1:
            raise ValueError(f"num_predict_samples must be >= 1, got {num_predict_samples!r}")
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.num_predict_samples = int(num_predict_samples)

    def _split_data(self, name: str) -> Dataset | torch.Tensor:
        """The ``"train"``, ``"val"`` or ``"test"`` split, indexable and sized."""
        raise NotImplementedError

    def _loader(self, data: Dataset | torch.Tensor, shuffle: bool = False, **kwargs) -> DataLoader:
        return DataLoader(
            data,  # type: ignore[arg-type]  # a tensor is indexable and sized
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of shape (B, *data_shape); drops the last partial batch when the
        train split holds more than ``batch_size`` points. Shuffling is seeded from ``seed``:
        epoch k's order is the k-th permutation the generator draws, and a run resumed from a
        checkpoint continues the generator's stream (see :meth:`state_dict`)."""
        train = self._split_data("train")
        generator = torch.Generator().manual_seed(self.seed)
        restored = getattr(self, "_restored_generator_state", None)
        if restored is not None:
            generator.set_state(restored)
            self._restored_generator_state = None
        self._train_generator = generator
        return self._loader(
            train,
            shuffle=True,
            drop_last=len(train) > self.batch_size,  # type: ignore[arg-type]
            generator=generator,
        )

    def state_dict(self) -> dict:
        """What a checkpoint keeps of the datamodule: the state of the train-shuffling generator
        (a uint8 tensor) once a train loader exists, so a resumed run draws the data order the
        uninterrupted run would have drawn next. Saved by Lightning at checkpoint time."""
        generator = getattr(self, "_train_generator", None)
        return {} if generator is None else {"train_generator": generator.get_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores :meth:`state_dict`; applied to the next train loader built (Lightning loads
        the datamodule's state before it asks for the loaders)."""
        state = state_dict.get("train_generator")
        if state is not None:
            self._restored_generator_state = state

    def _eval_loader(self, data: Dataset | torch.Tensor) -> DataLoader:
        """A fixed-order loader; under DDP each rank reads one contiguous block of whole
        batches (:class:`datamodules.distributed.BlockDistributedSampler`), so the ranks'
        batches are the single-process batches and no item is repeated."""
        trainer = getattr(self, "trainer", None)
        connector = getattr(trainer, "_accelerator_connector", None)
        if (
            trainer is not None
            and trainer.world_size > 1
            and getattr(connector, "use_distributed_sampler", True)
        ):
            sampler = BlockDistributedSampler(
                data, trainer.world_size, trainer.global_rank, self.batch_size
            )
            return self._loader(data, sampler=sampler)
        return self._loader(data)

    def val_dataloader(self) -> DataLoader | list:
        """Batches of shape (B, *data_shape) in fixed order; ``[]`` when the split is empty.
        Under DDP each rank reads a contiguous block of whole batches (see
        :mod:`datamodules.distributed`)."""
        val = self._split_data("val")
        return self._eval_loader(val) if len(val) else []  # type: ignore[arg-type]

    def test_dataloader(self) -> DataLoader | list:
        """Batches of shape (B, *data_shape) in fixed order; ``[]`` when the split is empty.
        Under DDP each rank reads a contiguous block of whole batches."""
        test = self._split_data("test")
        return self._eval_loader(test) if len(test) else []  # type: ignore[arg-type]

    def predict_dataloader(self) -> DataLoader:
        """Index batches of shape (B,) over ``SampleRequests(num_predict_samples)``; under DDP
        each rank requests a contiguous block of whole batches."""
        return self._eval_loader(SampleRequests(self.num_predict_samples))

    @classmethod
    def _init_parameter_names(cls) -> list[str]:
        """Names of all constructor arguments: the base's first, then each subclass's own."""
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            init = vars(klass).get("__init__")
            if not issubclass(klass, SplitDataLoaders) or init is None:
                continue
            for p in list(inspect.signature(init).parameters.values())[1:]:
                if p.kind is not inspect.Parameter.VAR_KEYWORD and p.name not in names:
                    names.append(p.name)
        return names

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k, '?')!r}" for k in self._init_parameter_names())
        return f"{type(self).__name__}({args})"


class ToyDataModule(SplitDataLoaders, L.LightningDataModule, abc.ABC):
    """Abstract base for in-memory, low-dimensional point-cloud datamodules.

    On first use (``setup`` or any accessor) ``num_samples`` points of shape ``data_shape``
    are drawn with ``numpy.random.default_rng(seed)``, converted to float32, shuffled by a
    permutation drawn from the same generator and cut into train / val / test tensors, so
    two instances built with the same arguments hold identical data. Generation happens once;
    later calls are no-ops.

    If ``standardize`` is true every split is mapped through ``(x - mean) / std`` with the
    per-coordinate mean and (population) standard deviation of the *train* split; otherwise
    ``mean`` is zeros and ``std`` ones. The stored splits (:meth:`split`, the dataloaders) are
    always the transformed data; :meth:`destandardize` maps model-space points back.

    Dataloaders yield plain float32 tensors of shape (B, *data_shape), not tuples. The
    predict dataloader yields index tensors of shape (B,) from :class:`SampleRequests`.

    Subclasses set the class attributes :attr:`data_shape` and :attr:`default_noise` and
    implement :meth:`_generate`. A subclass with arguments of its own declares only those
    (keyword-only, typed, with defaults) in ``def __init__(self, *, extra: float = ...,
    **kwargs)`` and passes ``**kwargs`` on to ``super().__init__``; jsonargparse (hence
    LightningCLI) follows ``**kwargs`` into this signature, so every argument stays visible
    and validated.

    Args:
        num_samples: Total number of points over all splits; >= 10.
        noise: Data-set specific noise level; >= 0 (see the subclass for its meaning).
            ``None`` (the default) means the subclass's :attr:`default_noise`.
        seed: Seed for generation, the split permutation and train shuffling.
        batch_size: Batch size of every dataloader; >= 1.
        val_fraction: Fraction of points in the validation split; >= 0.
        test_fraction: Fraction of points in the test split; >= 0, and
            ``val_fraction + test_fraction < 1`` with at least one train point left.
        standardize: Standardize all splits with the train-split mean / std.
        num_predict_samples: Number of samples the predict dataloader requests; >= 1.
        num_workers: DataLoader worker processes; >= 0 (persistent when > 0).
    """

    #: Shape of one data point, e.g. ``(2,)``; available before ``setup``.
    data_shape: ClassVar[tuple[int, ...]] = (2,)

    #: The ``noise`` used when the argument is ``None``; set by every concrete subclass.
    default_noise: ClassVar[float]

    def __init__(
        self,
        num_samples: int = 10_000,
        noise: float | None = None,
        seed: int = 0,
        batch_size: int = 256,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        standardize: bool = False,
        num_predict_samples: int = 1000,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if noise is None:
            noise = getattr(type(self), "default_noise", None)
            if noise is None:
                raise TypeError(f"{type(self).__name__} sets no default_noise; pass noise")
        if num_samples < 10:
            raise ValueError(f"num_samples must be >= 10, got {num_samples!r}")
        if not noise >= 0:  # also rejects NaN
            raise ValueError(f"noise must be >= 0, got {noise!r}")
        check_split_fractions(val_fraction, test_fraction)
        sizes = split_sizes(num_samples, val_fraction, test_fraction)
        if sizes[0] < 1:
            raise ValueError(
                f"val_fraction={val_fraction!r} and test_fraction={test_fraction!r} leave no "
                f"training points out of num_samples={num_samples!r} (split sizes "
                f"train/val/test = {sizes}); lower the fractions or raise num_samples"
            )
        self._init_loader_settings(batch_size, num_workers, seed, num_predict_samples)

        # No ``save_hyperparameters()``: Lightning refuses to log when a datamodule and its model
        # share an hparam name with different values (``seed``, ``noise``, ``batch_size`` ...),
        # and LightningCLI already records the full config.
        self.num_samples = int(num_samples)
        self.noise = float(noise)
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.standardize = bool(standardize)
        self.split_sizes: tuple[int, int, int] = sizes

        self._splits: dict[str, torch.Tensor] | None = None
        self._mean: torch.Tensor | None = None
        self._std: torch.Tensor | None = None

    # ------------------------------------------------------------------ generation

    @abc.abstractmethod
    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draws ``n`` raw (unstandardized) points.

        Args:
            n: Number of points.
            rng: The generator to take every random draw from (seeded from ``seed``).

        Returns:
            Array of shape (n, *data_shape); any float dtype.
        """

    @staticmethod
    def _sklearn_seed(rng: np.random.Generator) -> int:
        """An int ``random_state`` for scikit-learn generators, drawn from ``rng``."""
        return int(rng.integers(0, 2**31 - 1))

    def _ensure_data(self) -> dict[str, torch.Tensor]:
        """Generates, shuffles, splits and (optionally) standardizes the data, once."""
        if self._splits is not None:
            return self._splits
        rng = np.random.default_rng(self.seed)
        raw = np.asarray(self._generate(self.num_samples, rng))
        expected = (self.num_samples, *self.data_shape)
        if raw.shape != expected:
            raise RuntimeError(
                f"{type(self).__name__}._generate returned shape {raw.shape}, expected {expected}"
            )
        data = torch.from_numpy(raw.astype(np.float32, copy=False)).contiguous()
        data = data[torch.from_numpy(rng.permutation(self.num_samples))]

        n_train, n_val, _ = self.split_sizes
        train, val, test = data[:n_train], data[n_train : n_train + n_val], data[n_train + n_val :]
        if self.standardize:
            mean = train.mean(dim=0)
            std = train.std(dim=0, correction=0) if n_train > 1 else torch.ones_like(mean)
            std = torch.where(std > 0, std, torch.ones_like(std))
        else:
            mean = torch.zeros(self.data_shape)
            std = torch.ones(self.data_shape)
        self._mean, self._std = mean, std
        self._splits = {
            name: ((x - mean) / std).contiguous()
            for name, x in zip(SPLITS, (train, val, test), strict=True)
        }
        return self._splits

    def setup(self, stage: str | None = None) -> None:
        """Generates the data (idempotent); ``stage`` is ignored."""
        self._ensure_data()

    # ------------------------------------------------------------------ accessors

    @property
    def mean(self) -> torch.Tensor:
        """Per-coordinate shift, shape ``data_shape`` (zeros unless standardizing)."""
        self._ensure_data()
        assert self._mean is not None
        return self._mean

    @property
    def std(self) -> torch.Tensor:
        """Per-coordinate scale, shape ``data_shape`` (ones unless standardizing)."""
        self._ensure_data()
        assert self._std is not None
        return self._std

    def destandardize(self, x: torch.Tensor) -> torch.Tensor:
        """Maps model-space points back to the raw data scale: ``x * std + mean``.

        Args:
            x: Tensor of shape (..., *data_shape).

        Returns:
            Tensor of the same shape (on ``x``'s device and dtype).
        """
        return x * self.std.to(x) + self.mean.to(x)

    def split(self, name: str) -> torch.Tensor:
        """The whole ``"train"``, ``"val"`` or ``"test"`` split (generating it if needed).

        Returns:
            Float32 tensor of shape (N_split, *data_shape), standardized if ``standardize``.
            Empty (N_split = 0) for a split whose fraction is 0.
        """
        check_split_name(name)
        return self._ensure_data()[name]

    def _split_data(self, name: str) -> torch.Tensor:
        return self.split(name)
