"""FID and KID (and their sample-size-free extrapolations FID∞ / KID∞) of model samples.

:class:`FIDCallback` compares ``pl_module.sample(n)`` with held-out data after validation
epochs and logs ``val/fid``, ``val/kid``, ``val/kid_std`` (and ``val/fid_inf``, ``val/kid_inf``).
Features come from any ``nn.Module`` with an integer ``num_features`` mapping (N, *data_shape)
to (N, num_features), given by class path in a config; :mod:`lebm.features` has the identity
(default), the FID Inception v3 and the shipped digit classifier. The math and the metric
(:class:`~lebm.metrics.FeatureDistances`) live in :mod:`lebm.metrics`; each data point's
features are computed once and kept there, so FID, KID and the FID∞ regression all come from
one pass.

Distributed runs: rank r generates ``num_samples // world_size`` points (the remainder goes to
the first ranks, so the total is ``num_samples``) from a generator seeded with ``seed + r``, and
takes the real points ``real[r::world_size]``; the metric's states are concatenated across ranks
(``dist_reduce_fx="cat"``) inside ``compute()``, which every rank calls, so no point is counted
twice. Rank 0's values are then broadcast and logged by every rank with ``sync_dist=False``,
so all ranks hold one identical value (usable by ``ModelCheckpoint(monitor="val/fid")``).
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

from lebm.data import batch_data
from lebm.features import FeatureExtractor, FlattenFeatures
from lebm.metrics import FeatureDistances

REAL_SPLITS: tuple[str, ...] = ("train", "val", "test")


def check_feature_module(features: object) -> None:
    """Checks that ``features`` can serve as FID features.

    Raises:
        TypeError: if it is not an ``nn.Module`` or has no int ``num_features`` >= 1 (None is
            allowed for a :class:`~lebm.features.FeatureExtractor` that learns it later).
    """
    name = type(features).__name__
    if not isinstance(features, nn.Module):
        raise TypeError(
            f"features must be a torch.nn.Module (a class path in a config), got {name}"
        )
    num = getattr(features, "num_features", None)
    if num is None and isinstance(features, FeatureExtractor):
        return
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise TypeError(
            f"features={name} needs an int attribute num_features >= 1, the width d of its "
            f"(N, d) output; got {num!r}"
        )


def _collect(loader: Iterable, n: int) -> Tensor:
    """The first n points yielded by a dataloader (tensors, or tuples whose first item is one)."""
    parts, count = [], 0
    for batch in loader:
        x = batch_data(batch)
        parts.append(x[: n - count])
        count += len(parts[-1])
        if count >= n:
            break
    if not parts:
        raise RuntimeError("the real-data dataloader yielded no batches")
    return torch.cat(parts)


class FIDCallback(Callback):
    """Log FID / KID of ``pl_module.sample`` against real data after validation epochs.

    Logged (epoch level, identical on every rank): ``val/fid``, ``val/kid``, ``val/kid_std``
    and, with ``fid_inf``, ``val/fid_inf`` and ``val/kid_inf``. The callback only observes:
    samples and features are computed without gradients, the metric state lives on the
    callback (not in the model or its checkpoints) and is moved to the model's device.

    Real points come from ``trainer.datamodule.split(real_split)`` when the datamodule has
    ``split``, else from its ``<real_split>_dataloader()`` (must give the same order on every
    rank); their features are computed once, at the first evaluation, and kept. Generated
    points are drawn with a generator seeded with ``seed`` (+ rank), so successive evaluations
    differ only by the model. See the module docstring for the multi-process split.

    Args:
        features: the feature extractor, (N, *data_shape) -> (N, num_features), with an int
            attribute ``num_features``; in a config a class path, e.g. ``{class_path:
            lebm.features.InceptionFeatures, init_args: {weights_path: null}}``. None means
            :class:`~lebm.features.FlattenFeatures` (raw values, for low-dimensional data). Run
            in eval mode without gradients. A :class:`~lebm.features.FeatureExtractor` reads
            its weights file in its ``setup()``, called at this callback's ``setup`` for ``fit``
            / ``validate``, so a missing file fails before any training step.
        num_samples: generated points per evaluation (summed over ranks); >= 2.
        num_real_samples: cap on the real points used (None: ``num_samples``).
        every_n_epochs: evaluate after every n-th validation epoch of ``fit`` (and always
            after the last; ``trainer.validate`` always evaluates).
        kid_subset_size: rows per KID subset; <= num_samples (lowered to the real count with a
            warning when there are fewer real points).
        kid_subsets: number of random KID subsets.
        fid_inf: also log FID∞ / KID∞ (Chong and Forsyth 2020).
        fid_inf_sizes: generated sample sizes for the 1/N regression; default five sizes
            ``num_samples * k / 5``, k = 1..5. Each in [2, num_samples].
        real_split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: points per ``sample`` / feature-extractor call.
        seed: seed of the sampling noise and of the KID / FID∞ subsets.
    """

    def __init__(
        self,
        features: nn.Module | None = None,
        num_samples: int = 1000,
        num_real_samples: int | None = None,
        every_n_epochs: int = 1,
        kid_subset_size: int = 100,
        kid_subsets: int = 100,
        fid_inf: bool = False,
        fid_inf_sizes: list[int] | None = None,
        real_split: str = "val",
        batch_size: int = 250,
        seed: int = 0,
    ) -> None:
        features = FlattenFeatures() if features is None else features
        check_feature_module(features)
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        if num_real_samples is not None and num_real_samples < 2:
            raise ValueError(f"num_real_samples must be >= 2 (or None), got {num_real_samples}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if not 2 <= kid_subset_size <= num_samples:
            raise ValueError(
                f"kid_subset_size must be in [2, num_samples={num_samples}], got {kid_subset_size}"
            )
        if kid_subsets < 1:
            raise ValueError(f"kid_subsets must be >= 1, got {kid_subsets}")
        checked = fid_inf or fid_inf_sizes is not None
        if fid_inf_sizes is None:
            fid_inf_sizes = [max(2, round(num_samples * k / 5)) for k in range(1, 6)]
        bad = any(not 2 <= n <= num_samples for n in fid_inf_sizes) or len(set(fid_inf_sizes)) < 2
        if checked and bad:
            raise ValueError(
                f"fid_inf_sizes must hold >= 2 distinct sizes in [2, num_samples={num_samples}], "
                f"got {fid_inf_sizes}"
            )
        if real_split not in REAL_SPLITS:
            raise ValueError(f"real_split must be one of {list(REAL_SPLITS)}, got {real_split!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.features = features
        self.num_samples = num_samples
        self.num_real_samples = num_real_samples or num_samples
        self.every_n_epochs = every_n_epochs
        self.kid_subset_size = kid_subset_size
        self.fid_inf = fid_inf
        self.fid_inf_sizes = sorted(set(fid_inf_sizes))
        self.real_split = real_split
        self.batch_size = batch_size
        self.seed = seed
        self.metric = FeatureDistances(
            kid_subset_size, kid_subsets, self.fid_inf_sizes if fid_inf else None, seed
        )
        self._has_real = False

    # ------------------------------------------------------------------ hooks

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Checks the rank split and sets up the feature extractor (weights files read).

        Only for ``fit`` and ``validate``: testing or predicting never needs the weights.
        """
        if stage not in (TrainerFn.FITTING, TrainerFn.VALIDATING):
            return
        if trainer.world_size > self.num_samples:
            raise ValueError(
                f"num_samples={self.num_samples} is fewer than the {trainer.world_size} processes"
            )
        if isinstance(self.features, FeatureExtractor):
            self.features.setup()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        standalone = trainer.state.fn == TrainerFn.VALIDATING  # trainer.validate(): always
        if (epoch + 1) % self.every_n_epochs and not last and not standalone:
            return
        for name, value in self.evaluate(trainer, pl_module).items():
            pl_module.log(
                f"val/{name}", value, on_epoch=True, sync_dist=False, rank_zero_only=False
            )

    # ------------------------------------------------------------------ work

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Real features (first call only), fresh samples, metric values; every rank calls it.

        Returns:
            ``{"fid", "kid", "kid_std"[, "fid_inf", "kid_inf"]}`` as floats, rank 0's values.
        """
        device = pl_module.device
        if not self._has_real:
            self._update_real(trainer, device)
        self.metric.to(device)
        rank, world = trainer.global_rank, trainer.world_size
        n_local = self.num_samples // world + (rank < self.num_samples % world)
        generator = torch.Generator(device).manual_seed(self.seed + rank)
        for start in range(0, n_local, self.batch_size):
            samples = pl_module.sample(min(self.batch_size, n_local - start), generator=generator)
            self._update(samples, real=False, device=device)
        try:
            values = {name: float(v) for name, v in self.metric.compute().items()}
        finally:
            self.metric.reset()
        return trainer.strategy.broadcast(values, src=0)

    @torch.no_grad()
    def _update(self, x: Tensor, real: bool, device: torch.device) -> None:
        self.features.eval().to(device)
        for chunk in x.split(self.batch_size):
            features = self.features(chunk.to(device))
            width = self.features.num_features
            if features.dim() != 2 or features.shape[1] != width:
                raise ValueError(
                    f"features={type(self.features).__name__} gave shape {tuple(features.shape)} "
                    f"for {len(chunk)} points; expected (N, num_features={width})"
                )
            self.metric.update(features, real=real)

    def _real_data(self, trainer: L.Trainer) -> Tensor:
        """Up to ``num_real_samples`` real points, shape (N, *data_shape), same on every rank."""
        dm = trainer.datamodule
        split = getattr(dm, "split", None)
        if callable(split):
            return split(self.real_split)[: self.num_real_samples]
        if dm is not None:
            loader = getattr(dm, f"{self.real_split}_dataloader")()
        elif self.real_split == "val":
            loader = trainer.val_dataloaders
        else:
            raise RuntimeError(f"real_split={self.real_split!r} needs a datamodule")
        if isinstance(loader, list | tuple):
            loader = loader[0] if loader else []
        return _collect(loader, self.num_real_samples)

    def _update_real(self, trainer: L.Trainer, device: torch.device) -> None:
        real = self._real_data(trainer)
        world = trainer.world_size
        if len(real) < max(2, world):
            raise RuntimeError(
                f"FID needs >= max(2, world_size={world}) real points from split "
                f"{self.real_split!r}, got {len(real)}"
            )
        self.metric.to(device)
        self._update(real[trainer.global_rank :: world], real=True, device=device)
        self._has_real = True
