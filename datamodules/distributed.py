"""How lebm's evaluation and prediction loaders split their items across DDP ranks.

Lightning's default for val / test / predict under DDP is a strided ``DistributedSampler``
(rank r gets items r, r + W, r + 2W, ...) that pads the last round with repeated items. lebm's
datamodules use :class:`BlockDistributedSampler` instead: each rank gets one contiguous block
of items, a whole number of batches long whenever the data allow it, and no item is repeated.
Then

* every rank's batches are exactly batches of the single-process run (same items, same order),
  so a model that seeds each evaluation batch by its *global* batch index
  (:func:`global_batch_offset`) draws the same samples as one process does, and the
  validation metrics under DDP equal the single-process ones up to float summation order;
* concatenating the ranks' results in rank order gives the single-process order (the
  metrics' ``cat`` states, ``lebm predict``'s one output file).

Training keeps Lightning's shuffling ``DistributedSampler`` (seeded by the run's seed and the
epoch, so DDP data order depends on (seed, epoch) only and resumes exactly).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from torch.utils.data import DistributedSampler


def block_bounds(num_items: int, num_replicas: int, rank: int, batch_size: int) -> tuple[int, int]:
    """``(start, end)`` of rank ``rank``'s contiguous block of ``num_items`` items.

    Blocks are ``batch_size * ceil(num_items / (num_replicas * batch_size))`` items long (whole
    batches, so every rank's batches are single-process batches) when that still leaves every
    rank at least one item; otherwise ``ceil(num_items / num_replicas)`` items. The last ranks'
    blocks may be shorter.

    Raises:
        ValueError: fewer items than ranks (a rank would have nothing to evaluate).
    """
    if num_items < num_replicas:
        raise ValueError(
            f"cannot split {num_items} evaluation / prediction items over {num_replicas} "
            "processes (each needs at least one): use more items (e.g. a larger val_fraction "
            "or num_predict_samples) or fewer devices"
        )
    aligned = batch_size * math.ceil(num_items / (num_replicas * batch_size))
    block = (
        aligned if aligned * (num_replicas - 1) < num_items else math.ceil(num_items / num_replicas)
    )
    start = min(rank * block, num_items)
    return start, min(start + block, num_items)


class BlockDistributedSampler(DistributedSampler):
    """Rank ``rank`` iterates over its contiguous block of ``range(len(dataset))`` in order
    (:func:`block_bounds`); no shuffling, no padding, so ranks may hold different counts.

    A ``DistributedSampler`` subclass, so Lightning keeps it instead of injecting its own.

    Args:
        dataset: the data set (only its length is used).
        num_replicas: number of processes (the world size).
        rank: this process's global rank.
        batch_size: the loader's batch size (block boundaries fall on batch boundaries).

    Attributes:
        start, end: the block, items ``start .. end - 1``.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, batch_size: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        self.batch_size = batch_size
        self.start, self.end = block_bounds(len(dataset), num_replicas, rank, batch_size)
        self.num_samples = self.end - self.start

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start


def global_batch_offset(loader) -> int | None:
    """Index, in the single-process run, of the first batch of ``loader`` on this rank.

    0 for a loader without a distributed sampler (one process); ``start / batch_size`` for a
    :class:`BlockDistributedSampler` whose block starts on a batch boundary; None otherwise
    (a strided sampler, or a block not aligned with batches: this rank's batches are not
    single-process batches).
    """
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, BlockDistributedSampler):
        batch_size = getattr(loader, "batch_size", None) or sampler.batch_size
        return sampler.start // batch_size if sampler.start % batch_size == 0 else None
    if isinstance(sampler, DistributedSampler):
        return None
    return 0
