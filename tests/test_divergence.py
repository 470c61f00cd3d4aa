"""Divergence stops the run with the step, the setting to change and the last good checkpoint,
which is never overwritten by a non-finite state."""

from functools import partial

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from callbacks import DivergenceGuard
from callbacks.divergence import NonFiniteLossError, _optimizer_advice
from datamodules import MoonsDataModule
from lebm.models import DDPM, LatentEBM
from lebm.nets import ConditionalMLP
from lebm.samplers import Langevin
from lebm.samplers.base import SamplerDivergenceError
from tests.conftest import checkpointing_trainer, tiny_latent_ebm_args


class PoisonAt(Callback):
    """From global step ``step`` on, sets the first parameter to NaN (a diverged update), or
    scales it so that the model's next loss overflows."""

    def __init__(self, step: int, value: float = float("nan")) -> None:
        self.step, self.value = step, value

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(self.value)


def fit(model, root, *callbacks, max_epochs=3):
    trainer = checkpointing_trainer(root, [DivergenceGuard(), *callbacks], max_epochs=max_epochs)
    trainer.fit(model, datamodule=MoonsDataModule(num_samples=200, batch_size=32))
    return trainer


def test_non_finite_loss_stops_with_step_setting_and_last_good_checkpoint(tmp_path):
    L.seed_everything(0, verbose=False)
    model = DDPM(num_timesteps=25, net=partial(ConditionalMLP, hidden=16, depth=1))
    # 5 batches an epoch: epoch 0 ends at step 5 with last.ckpt; the loss goes NaN at step 7
    with pytest.raises(NonFiniteLossError) as error:
        fit(model, tmp_path, PoisonAt(7))
    message = str(error.value)
    last = tmp_path / "last.ckpt"
    assert "The training loss is nan" in message
    assert "epoch 1, batch 2, global step 7" in message
    assert "--model.init_args.lr=" in message
    assert f"--ckpt_path {last}" in message
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 5  # not overwritten since
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def test_sampler_divergence_names_the_chains_and_the_config_key(tmp_path):
    L.seed_everything(0, verbose=False)
    args = tiny_latent_ebm_args(hidden=8, steps=3)
    args["posterior_sampler"] = Langevin(3, 1e30)  # explodes on the first step
    model = LatentEBM(**args)
    with pytest.raises(SamplerDivergenceError) as error:
        fit(model, tmp_path, max_epochs=1)
    message = str(error.value)
    assert "chains became non-finite" in message  # the sampler's own text is kept
    assert "The posterior_sampler chains diverged" in message
    assert "--model.init_args.posterior_sampler.init_args.step_size=1e+30" in message
    assert "No checkpoint was written before this point" in message
    assert not (tmp_path / "last.ckpt").exists()


def test_a_non_finite_state_is_never_checkpointed(tmp_path):
    """Parameters that go non-finite outside the loss (here set by a callback) are caught at
    the end of the batch, before the epoch-end save."""
    L.seed_everything(0, verbose=False)
    model = LatentEBM(**tiny_latent_ebm_args(hidden=8, steps=3))
    guard = DivergenceGuard()
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        inference_mode=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[guard],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=MoonsDataModule(num_samples=200, batch_size=32))
    with torch.no_grad():
        next(model.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="Refusing to write a checkpoint"):
        trainer.save_checkpoint(tmp_path / "bad.ckpt")
    assert not (tmp_path / "bad.ckpt").exists()


def test_optimizer_advice_sets_an_absent_gradient_clip_and_lowers_a_present_one():
    advice = _optimizer_advice({"energy_lr": 1e-3, "generator_lr": 5e-4, "grad_clip": None})
    assert advice[:2] == [
        "lower --model.init_args.energy_lr=0.001",
        "lower --model.init_args.generator_lr=0.0005",
    ]
    assert advice[2].startswith("set --model.init_args.grad_clip (")
    assert _optimizer_advice({"lr": 0.1, "grad_clip": 2.0}) == [
        "lower --model.init_args.lr=0.1",
        "lower --model.init_args.grad_clip=2.0",
    ]
