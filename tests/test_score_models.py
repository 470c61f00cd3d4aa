"""DDPM and NCSN as LightningModules: losses, sampling, EMA, objectives, callbacks, learning.

The math they are built from (schedules, samplers, score-matching objectives) is tested
against closed forms in test_schedules.py, test_annealed_langevin.py and
test_score_matching.py; here the models are checked to wire it up correctly and to learn.
"""

import csv
import math
from functools import partial

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from callbacks import FIDCallback, GradientVariance
from datamodules import DigitsDataModule, MoonsDataModule, TwoModesDataModule
from lebm.models import DDPM, NCSN
from lebm.nets import ConditionalMLP, UNet
from tests.conftest import quiet_trainer

TINY_NCSN = dict(steps_per_level=5, num_levels=4, sigma_max=2.0)
TINY_UNET = partial(UNet, base_channels=8, channel_mults=(1, 2), groups=4)


def test_ddpm_loss_is_per_sample_noise_regression():
    torch.manual_seed(0)
    model = DDPM(num_timesteps=50)
    x = torch.randn(16, 2)
    loss = model.per_sample_loss(x, torch.Generator().manual_seed(1))
    assert loss.shape == (16,) and (loss > 0).all()
    # A network that returns the true noise has zero loss: rebuild x_t with the same draws.
    generator = torch.Generator().manual_seed(1)
    t = model.schedule.sample_timesteps(16, generator)
    eps = torch.randn(x.shape, generator=generator)
    x_t = model.schedule.add_noise(x, eps, t)
    mean_coef, std = model.schedule.marginal(t, like=x)

    def oracle(x_in, t_in):  # the noise that produced x_in from x
        return (x_in - mean_coef * x) / std

    assert torch.allclose(oracle(x_t, t.float()), eps, atol=1e-5)
    zero = model.per_sample_loss(x, torch.Generator().manual_seed(1), net=oracle)
    assert zero.abs().max() < 1e-8


def test_ddpm_and_ncsn_build_the_right_network_and_sample_shapes():
    assert isinstance(DDPM().net, ConditionalMLP) and isinstance(NCSN().net, ConditionalMLP)
    for cls, extra in ((DDPM, dict(num_timesteps=30)), (NCSN, TINY_NCSN)):
        model = cls(data_shape=(1, 8, 8), net=TINY_UNET, **extra)
        assert isinstance(model.net, UNet)
        images = model.sample(3, generator=torch.Generator().manual_seed(0))
        assert images.shape == (3, 1, 8, 8) and torch.isfinite(images).all()
        assert model.per_sample_loss(torch.zeros(2, 1, 8, 8)).shape == (2,)
    clipped = DDPM(data_shape=(1, 8, 8), net=TINY_UNET, num_timesteps=30, clip_x0=1.0)
    assert clipped.sample(4).abs().max() <= 1.0


def test_ema_tracks_the_trained_weights_and_is_used_for_sampling():
    model = DDPM(ema_decay=0.5)
    assert model.sampling_net is model.ema.module
    first = next(model.ema.module.parameters()).detach().clone()
    with torch.no_grad():
        for p in model.net.parameters():
            p.add_(1.0)
    model.on_train_batch_end(None, None, 0)  # first update copies the weights
    model.on_train_batch_end(None, None, 1)
    moved = next(model.ema.module.parameters())
    assert torch.allclose(moved, first + 1.0, atol=1e-6)
    assert not any(p.requires_grad for p in model.ema.parameters())
    assert DDPM(ema_decay=None).sampling_net is not None


@pytest.mark.parametrize(
    "objective,parameterization",
    [("denoising", "score"), ("sliced", "score"), ("exact", "score"), ("denoising", "energy")],
)
def test_ncsn_objectives_give_finite_losses_with_gradients(objective, parameterization):
    torch.manual_seed(0)
    model = NCSN(objective=objective, parameterization=parameterization, **TINY_NCSN)
    loss = model.per_sample_loss(torch.randn(8, 2), torch.Generator().manual_seed(0))
    assert loss.shape == (8,) and torch.isfinite(loss).all()
    loss.mean().backward()
    grads = [p.grad for p in model.net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    assert model.sample(5).shape == (5, 2)


def test_ncsn_energy_score_is_minus_the_energy_gradient():
    torch.manual_seed(0)
    model = NCSN(parameterization="energy", **TINY_NCSN)
    x = torch.randn(4, 2, requires_grad=True)
    sigma = torch.full((4,), 0.5)
    energy = (x - model.net(x, sigma.log())).pow(2).sum(1) / (2 * 0.25)
    (grad,) = torch.autograd.grad(energy.sum(), x)
    assert torch.allclose(model.score_fn()(x, sigma), -grad, atol=1e-5)


@pytest.mark.parametrize(
    "cls,kwargs,message",
    [
        (DDPM, dict(variance="medium"), "variance must be 'large' or 'small'"),
        (DDPM, dict(schedule="quadratic"), "unknown noise schedule 'quadratic'; choose 'linear'"),
        (DDPM, dict(clip_x0=0.0), "clip_x0 must be > 0"),
        (DDPM, dict(lr=0.0), "lr must be > 0"),
        (DDPM, dict(ema_decay=1.0), "ema_decay must be in"),
        (DDPM, dict(net=UNet), r"UNet needs images, data_shape \(C, H, W\), got \(2,\)"),
        (NCSN, dict(objective="nce"), "objective must be"),
        (NCSN, dict(parameterization="logit"), "parameterization must be"),
        (NCSN, dict(steps_per_level=0), "steps_per_level must be >= 1"),
        (NCSN, dict(sigma_min=2.0), "sigma_min <= sigma_max"),
    ],
)
def test_bad_hyperparameters_name_the_argument(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


@pytest.mark.parametrize("cls,extra", [(DDPM, dict(num_timesteps=30)), (NCSN, TINY_NCSN)])
def test_gradient_variance_and_fid_callbacks_run_on_score_models(cls, extra, tmp_path):
    model = cls(**extra)
    data = MoonsDataModule(num_samples=400, batch_size=32, standardize=True)
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        logger=CSVLogger(tmp_path, name="run"),
        callbacks=[
            GradientVariance(every_n_steps=2, probe_size=8, num_redraws=3),
            FIDCallback(num_samples=40, kid_subset_size=20),
        ],
    )
    trainer.fit(model, datamodule=data)
    metrics = trainer.callback_metrics
    for key in ("val/fid", "val/kid", "val/mmd", "val/loss"):
        assert key in metrics and math.isfinite(float(metrics[key])), key
    with open(tmp_path / "run" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("grad_var/per_sample/network/variance")]
    assert len(rows) == 2  # batches 1 and 3
    for source in ("per_sample", "mcmc"):
        assert float(rows[0][f"grad_var/{source}/network/variance"]) > 0


def test_digits_batches_train_a_unet_ddpm(tmp_path):
    model = DDPM(data_shape=(1, 8, 8), net=partial(UNet, channel_mults=(1, 2)), num_timesteps=30)
    data = DigitsDataModule(batch_size=16)
    trainer = quiet_trainer(tmp_path, max_steps=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 3 and torch.isfinite(trainer.callback_metrics["train/loss"])


# --------------------------------------------------------------------------- learning


def _fit_and_test(model, data, tmp_path, epochs: int) -> dict[str, float]:
    torch.manual_seed(0)
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, gradient_clip_val=1.0, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    (result,) = trainer.test(model, datamodule=data, verbose=False)
    return result


@pytest.mark.slow
def test_ddpm_learns_moons(tmp_path):
    """Quality bar stated in the README: test MMD^2 < 0.015 after 50 epochs (3,100 steps) at
    lr 3e-3 and EMA 0.99 (the Gaussian fit scores about 0.09 on the same split)."""
    data = MoonsDataModule(num_samples=10_000, batch_size=128, standardize=True)
    result = _fit_and_test(DDPM(lr=3e-3, ema_decay=0.99), data, tmp_path, epochs=50)
    assert result["test/mmd"] < 0.015, result


@pytest.mark.slow
def test_ncsn_learns_moons(tmp_path):
    """Quality bar stated in the README: test MMD^2 < 0.01 after 40 epochs at lr 2e-3."""
    data = MoonsDataModule(num_samples=10_000, batch_size=128, standardize=True)
    model = NCSN(sigma_max=3.0, lr=2e-3)
    result = _fit_and_test(model, data, tmp_path, epochs=40)
    assert result["test/mmd"] < 0.01, result


@pytest.mark.slow
def test_ncsn_learns_the_two_mode_weights(tmp_path):
    """The NCSN paper's toy: the learned score with annealed Langevin puts 0.8 +- 0.05 of its
    samples in the (5, 5) mode."""
    data = TwoModesDataModule(num_samples=10_000, batch_size=128)
    model = NCSN(sigma_max=20.0, num_levels=20, steps_per_level=50, step_lr=5e-5)
    torch.manual_seed(0)
    trainer = quiet_trainer(tmp_path, max_epochs=40, gradient_clip_val=1.0, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    samples = model.sample(4000, generator=torch.Generator().manual_seed(0))
    weight = (samples.sum(1) > 0).float().mean().item()
    assert abs(weight - 0.8) < 0.05, weight
