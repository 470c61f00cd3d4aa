import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest-xdist worker per core: one intra-op thread each, so the
    # workers do not oversubscribe the cores (results never depend on the thread count)
    import torch

    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# Keep CLI tests tiny: a few batches, short chains.
FAST = [
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_model_summary=false",
    "--model.init_args.prior_sampler.n_steps=5",
    "--model.init_args.posterior_sampler.n_steps=5",
]


def tiny_latent_ebm_args(hidden: int = 16, steps: int = 5) -> dict:
    """LatentEBM / ThermoLatentEBM arguments for fast tests: narrow MLPs, short Langevin chains
    (Pang's step sizes)."""
    from functools import partial

    from lebm.nets import EnergyMLP, GeneratorMLP
    from lebm.samplers import Langevin

    return dict(
        energy=partial(EnergyMLP, hidden=hidden),
        generator=partial(GeneratorMLP, hidden=hidden),
        prior_sampler=Langevin(steps, 0.08),
        posterior_sampler=Langevin(steps, 0.005),
    )


@pytest.fixture
def run_cli():
    """Run the lebm CLI in-process (importing lightning once per session, not per test)."""
    from lebm.cli import run_cli as _run_cli

    return _run_cli


def quiet_trainer(tmp_path, **overrides):
    """A CPU Trainer for in-process tests: MCMC-ready (no inference mode), no checkpoints,
    progress bar, model summary or logger unless ``overrides`` say otherwise."""
    import lightning as L

    settings = dict(
        inference_mode=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return L.Trainer(**{**settings, **overrides})


def checkpointing_trainer(root, callbacks=(), checkpoint_args=None, **overrides):
    """``quiet_trainer`` that resumes exactly and writes ``last.ckpt`` (and one checkpoint per
    training epoch) under ``root``; no validation. Callbacks run in the order ExactResume,
    ``callbacks``, ModelCheckpoint."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from callbacks import ExactResume

    checkpoint = ModelCheckpoint(
        dirpath=root, save_last=True, save_on_train_epoch_end=True, **(checkpoint_args or {})
    )
    settings = dict(limit_val_batches=0, enable_checkpointing=True)
    return quiet_trainer(
        root, callbacks=[ExactResume(), *callbacks, checkpoint], **{**settings, **overrides}
    )
