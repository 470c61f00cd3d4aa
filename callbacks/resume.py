"""Exact resume: a run resumed from an epoch-end checkpoint ends bit-identical to the
uninterrupted run with the same seed.

Lightning's checkpoint holds the weights, optimizer and scheduler states, every registered
buffer (EMA copies, replay buffers, adaptive step sizes, ladders) and the loop position, but no
random-number state. Models draw their MCMC noise from the global generators, so a resumed run
otherwise continues with a fresh stream. :class:`ExactResume` adds

* the global random states (torch CPU, CUDA when available, numpy, Python's ``random``), taken
  when the checkpoint is written and put back at the start of the first resumed epoch, so the
  resumed run's next draw is the one the uninterrupted run made;
* a refusal to resume from a checkpoint written in the middle of an epoch (``every_n_train_steps``,
  ``val_check_interval < 1``, validation on a non-final batch): Lightning restores the loop
  position there but not the dataloader position or the epoch-end hooks, so the run would
  silently differ. The error names the checkpoint and what to use instead.

Under DDP (several processes):

* every rank's global generators start from a different, seed-determined state
  (:func:`distinct_rank_streams`, at ``setup``): Lightning seeds every process with the same
  seed, which would give every rank the same MCMC noise (identical negatives, prior chains and
  diffusion noise on each rank). Rank 0 keeps the single-process stream;
* a checkpoint holds the random states of every rank (gathered to rank 0, which writes the
  file) and each rank restores its own, so a resumed DDP run also continues exactly; a
  checkpoint written with a different number of processes resumes with a warning.

Checkpoints hold plain data only (components as ``{"class_path", "init_args"}``, random
states as tensors and ints) and load with ``torch.load(weights_only=True)``; a checkpoint of
another model class or configuration is refused by the model itself
(:func:`lebm.checkpoints.check_checkpoint_matches`).

The data order is the other half: lebm's datamodules (:class:`datamodules.base.SplitDataLoaders`)
save the state of their train-shuffling generator in the checkpoint (``state_dict``), so the
resumed run's first epoch draws the permutation the uninterrupted run's next epoch drew.

``lebm fit`` adds this callback by default (``--resume.strict false`` turns the mid-epoch
refusal into a warning) and writes its checkpoints at the end of each training epoch.
"""

from __future__ import annotations

import os
import random
import warnings

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

CHECKPOINT_KEY = "lebm_resume"
"""Top-level checkpoint key holding the random states and where in the epoch the save happened."""


class MidEpochResumeError(RuntimeError):
    """Raised when ``fit`` is asked to resume from a checkpoint written inside an epoch."""


def random_states() -> dict:
    """The global random states: torch CPU, CUDA (one per device, when available), numpy, Python."""
    states = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_as_tensors(np.random.get_state()),
        "python": random.getstate(),  # ints and None: loads with torch.load(weights_only=True)
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _numpy_state_as_tensors(state: tuple) -> tuple:
    """numpy's legacy state with its key array as an int64 tensor (no numpy in checkpoints)."""
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def set_random_states(states: dict) -> None:
    """Restore what :func:`random_states` returned (CUDA states only for as many devices as
    both the saving and the loading machine have)."""
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        for device, state in enumerate(states["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s global generators for a run seeded with ``seed``: ``seed``
    itself on rank 0, a hash of (seed, rank) on the others (numpy's SeedSequence)."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed % 2**32, rank]).generate_state(1)[0])


def distinct_rank_streams(rank: int) -> int:
    """Reseed torch, numpy and Python's ``random`` with :func:`rank_seed` of the run's seed
    (``PL_GLOBAL_SEED``, else torch's initial seed) for this rank; returns the seed used.
    Leaves ``PL_GLOBAL_SEED`` (which the distributed train sampler shares) untouched."""
    seed = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**32))
    seed = rank_seed(seed, rank)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # CUDA generators too
    return seed


def _gather_objects(trainer: L.Trainer, obj) -> list:
    """``obj`` of every rank, in rank order (every rank calls; [obj] with one process)."""
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return [obj]
    out: list = [None] * trainer.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


class ExactResume(Callback):
    """Stores the global random states in every checkpoint and restores them on resume.

    Args:
        strict: refuse (``MidEpochResumeError``) to resume ``fit`` from a checkpoint written
            inside an epoch; ``False`` resumes anyway with a warning that the run is not exact.
    """

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self._at_epoch_end = False
        self._pending: dict | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            distinct_rank_streams(trainer.global_rank)

    # ----------------------------------------------------------------- saving
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            # the first resumed epoch starts where the saved epoch's end left the generators
            set_random_states(self._pending)
            self._pending = None
        self._at_epoch_end = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self._at_epoch_end = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # non-monitoring callbacks run before the module's hook and before ModelCheckpoint
        self._at_epoch_end = True

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        # every rank builds the checkpoint (Lightning), so every rank takes part in the gather
        states = _gather_objects(trainer, random_states())
        checkpoint[CHECKPOINT_KEY] = {
            "random_states": states[0],
            "random_states_per_rank": states,
            "epoch_end": self._at_epoch_end,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
        }

    # ----------------------------------------------------------------- loading
    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return  # test / validate / predict from any checkpoint
        saved = checkpoint.get(CHECKPOINT_KEY)
        path = trainer.ckpt_path or "the checkpoint"
        if saved is None:
            warnings.warn(
                f"{path} holds no random states (written without lebm's ExactResume callback); "
                "the resumed run continues with a fresh random stream and will not match an "
                "uninterrupted run.",
                stacklevel=2,
            )
            return
        if not saved["epoch_end"]:
            message = (
                f"{path} was written in the middle of epoch {saved['epoch']} (global step "
                f"{saved['global_step']}); resuming there would not replay the rest of that "
                "epoch's data order, so the run would differ from an uninterrupted one. Resume "
                "from an epoch-end checkpoint instead (last.ckpt written by `lebm fit`'s default "
                "checkpoint callback, which saves at the end of every training epoch), or pass "
                "--resume.strict false to resume anyway, not exactly."
            )
            if self.strict:
                raise MidEpochResumeError(message)
            warnings.warn(message, stacklevel=2)
        per_rank = saved.get("random_states_per_rank", [saved["random_states"]])
        if len(per_rank) != trainer.world_size:
            warnings.warn(
                f"{path} was written by {len(per_rank)} process(es) and is resumed by "
                f"{trainer.world_size}; rank {trainer.global_rank} continues from "
                f"{'its own' if trainer.global_rank < len(per_rank) else 'a fresh'} random "
                "stream, and the run will not match an uninterrupted one.",
                stacklevel=2,
            )
            if trainer.global_rank >= len(per_rank):
                return
        self._pending = per_rank[trainer.global_rank]
