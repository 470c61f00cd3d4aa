"""The base every lebm generative model inherits: what they all share, written once.

:class:`GenerativeModel` owns

* the contract: ``sample(num_samples, generator=None)`` returns data-space samples of shape
  (num_samples, *data_shape); the per-sample ``learning_losses(x, generator)`` and
  ``gradient_groups()`` protocol of :mod:`lebm.grad_stats` (the gradient-variance callback);
* evaluation: every validation / test batch is compared with as many fresh samples (MMD^2 and
  sliced Wasserstein distance, :class:`lebm.metrics.SampleQuality`, DDP-correct), drawn with a
  generator seeded by the batch's index in the single-process run, so that epochs compare,
  evaluation leaves the training random stream untouched and, with lebm's datamodules (one
  contiguous block of whole batches per rank, :mod:`datamodules.distributed`), DDP ranks draw
  exactly the samples one process draws; a model adds
  its own per-batch metrics in :meth:`evaluation_metrics`;
* ``predict_step`` (``lebm predict``: sample requests in, samples out), each batch drawn with a
  generator seeded by the run's seed and the index of its first request, so predictions do not
  depend on the number of processes;
* hyperparameters: every ``__init__`` argument of the model and its parents, with components
  (network factories, sampler objects) stored as ``{"class_path", "init_args"}`` plain data,
  so ``Model.load_from_checkpoint(path)`` needs no other argument (:mod:`lebm.components`).

A model calls ``super().__init__(data_shape)`` first; hooks to override are :meth:`sample`,
:meth:`learning_losses`, :meth:`gradient_groups` and, optionally, :meth:`evaluation_metrics`.
"""

from __future__ import annotations

import inspect
import os

import lightning as L
import torch
from lightning.pytorch.core.mixins import HyperparametersMixin
from lightning.pytorch.utilities.parsing import collect_init_args
from torch import Tensor, nn

from datamodules.distributed import global_batch_offset
from lebm.checkpoints import check_checkpoint_matches
from lebm.components import class_path, to_config
from lebm.data import batch_data
from lebm.metrics import SampleQuality

_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


def check_data_shape(data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``data_shape`` as a tuple of ints, or a ValueError naming the value."""
    shape = tuple(data_shape)
    if len(shape) == 0 or any(int(d) != d or d < 1 for d in shape):
        raise ValueError(f"data_shape must be a non-empty tuple of positive sizes, got {shape}")
    return tuple(int(d) for d in shape)


class GenerativeModel(L.LightningModule):
    """Base LightningModule of every lebm model (see the module docstring).

    Args:
        data_shape: shape of one data point; linked from the datamodule by the CLI.
    """

    def __init__(self, data_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.data_shape = check_data_shape(data_shape)
        # the arguments of every __init__ up the call chain (this one and the subclasses'),
        # components as plain data (checkpoints load with torch.load(weights_only=True))
        init_args: dict = {}
        frames = collect_init_args(inspect.currentframe(), [], classes=(HyperparametersMixin,))
        for local_args in frames:
            init_args.update(local_args)
        hparams = {name: to_config(v) for name, v in init_args.items()}
        # what LightningCLI stores for a model chosen by class path, so that both
        # `Model.load_from_checkpoint(path)` and `lebm test --ckpt_path path` rebuild it
        hparams |= {"_class_path": class_path(type(self)), "_instantiator": _INSTANTIATOR}
        self.save_hyperparameters(hparams)
        self.val_quality = SampleQuality()
        self.test_quality = SampleQuality()

    # ----------------------------------------------------------------- the contract
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Data-space samples, shape (num_samples, *data_shape)."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample()")

    def learning_losses(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Per-sample training losses on batch x, ``{name: (B,)}``; each batch mean is a loss
        the optimizer minimises and :meth:`gradient_groups` names the network it trains."""
        raise NotImplementedError(f"{type(self).__name__} must implement learning_losses()")

    def gradient_groups(self) -> dict[str, nn.Module]:
        """Loss name (a key of :meth:`learning_losses`) -> the network that loss trains."""
        raise NotImplementedError(f"{type(self).__name__} must implement gradient_groups()")

    def evaluation_metrics(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Extra per-batch metrics on held-out data (e.g. reconstruction error), 0-d tensors."""
        return {}

    # ----------------------------------------------------------------- Lightning
    def _eval_seed(self, batch_idx: int, stage: str) -> int:
        """The seed of an evaluation batch: its index in the single-process run when this
        rank's batches are single-process batches (one process, or lebm's block sampler under
        DDP), else ``batch_idx * world_size + rank`` (distinct per rank)."""
        trainer = self._trainer
        if trainer is None or trainer.world_size == 1:
            return batch_idx
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        offset = global_batch_offset(loader)
        if offset is not None:
            return offset + batch_idx
        return batch_idx * trainer.world_size + trainer.global_rank

    def _eval_step(self, batch, batch_idx: int, stage: str) -> None:
        x = batch_data(batch)
        generator = torch.Generator(self.device).manual_seed(self._eval_seed(batch_idx, stage))
        for name, value in self.evaluation_metrics(x, generator).items():
            self.log(f"{stage}/{name}", value, sync_dist=True)
        quality = self.val_quality if stage == "val" else self.test_quality
        quality.update(x, self.sample(len(x), generator))

    def _eval_epoch_end(self, stage: str) -> None:
        quality = self.val_quality if stage == "val" else self.test_quality
        values = quality.compute()
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=stage == "val")
        quality.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint of another model class or configuration, naming both."""
        path = self._trainer.ckpt_path if self._trainer is not None else None
        check_checkpoint_matches(checkpoint, self, str(path or "the checkpoint"))

    def predict_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        """``batch`` holds sample indices (datamodules.SampleRequests); returns len(batch) samples.

        Drawn with a generator seeded by the run's seed (``seed_everything``) and the index of
        the batch's first request, so a batch's samples do not depend on which rank draws it.
        """
        first = int(batch[0]) if len(batch) else 0
        run_seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) % 2**31
        generator = torch.Generator(self.device).manual_seed(run_seed * 2**32 + first % 2**32)
        return self.sample(len(batch), generator)
