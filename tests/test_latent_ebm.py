"""LatentEBM: validation, densities, objectives, one training step, and learning on moons."""

import math

import lightning as L
import pytest
import torch

from datamodules import MoonsDataModule
from lebm.losses import gaussian_log_likelihood
from lebm.metrics import BANDWIDTH_FACTORS, median_pairwise_distance, mmd_rbf
from lebm.models import LatentEBM
from lebm.samplers import HMC, MALA, Langevin, RandomWalkMetropolis
from tests.conftest import quiet_trainer, tiny_latent_ebm_args

SMALL = tiny_latent_ebm_args()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"likelihood_sigma": 0.0}, "likelihood_sigma must be > 0"),
        ({"betas": (0.5, 1.0)}, "betas must be two numbers in"),
        ({"lr_decay": 1.5}, r"lr_decay \(ExponentialLR gamma\) must be in \(0, 1\]"),
        ({"grad_clip": 0.0}, "grad_clip must be > 0 or None"),
        ({"energy_l2": -0.1}, "energy_l2 must be >= 0"),
        ({"data_shape": ()}, "data_shape must be a non-empty tuple"),
        ({"latent_dim": 0}, "latent_dim must be > 0"),
    ],
)
def test_bad_hyperparameters_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LatentEBM(**kwargs)
    with pytest.raises(TypeError, match=r"prior_sampler must be an instance of lebm.samplers"):
        LatentEBM(prior_sampler="langevin")
    with pytest.raises(TypeError, match="generator must be a network class"):
        LatentEBM(generator=3)
    with pytest.raises(ValueError, match="Langevin: step_size must be > 0, got -1"):
        Langevin(5, -1.0)
    with pytest.raises(ValueError, match="MALA: n_steps must be an int >= 0, got -2"):
        MALA(-2, 0.1)


def test_densities_and_shapes():
    model = LatentEBM(data_shape=(3,), latent_dim=4, **SMALL)
    z, x = torch.randn(7, 4), torch.randn(7, 3)
    expected_prior = model.energy(z) - z.pow(2).sum(1) / 2
    assert torch.allclose(model.log_prior(z), expected_prior)
    expected_lik = torch.distributions.Normal(model.generator(z), 0.3).log_prob(x).sum(1)
    assert torch.allclose(model.log_likelihood(x, z), expected_lik, atol=1e-5)
    assert model.sample(5).shape == (5, 3)
    assert model.reconstruct(x).shape == (7, 3)
    assert model.sample_posterior(x).sample.shape == (7, 4)


def test_losses_are_per_sample_and_reach_only_their_network():
    model = LatentEBM(data_shape=(2,), latent_dim=2, **SMALL)
    x, z_pos, z_neg = torch.randn(6, 2), torch.randn(6, 2), torch.randn(6, 2)
    losses = model.losses_from_latents(x, z_pos, z_neg)
    assert losses["energy"].shape == losses["generator"].shape == (6,)
    assert torch.allclose(losses["energy"], model.energy(z_neg) - model.energy(z_pos))
    nll = -gaussian_log_likelihood(x, model.generator(z_pos), 0.3)
    assert torch.allclose(losses["generator"], nll)
    losses["energy"].mean().backward()
    assert all(p.grad is None for p in model.generator.parameters())
    assert all(p.grad is not None for p in model.energy.parameters())


@pytest.mark.parametrize("model_class", ["LatentEBM", "ThermoLatentEBM"])
def test_energy_l2_adds_the_magnitude_penalty_to_the_energy_loss_only(model_class):
    from lebm import models

    model = getattr(models, model_class)(data_shape=(2,), latent_dim=2, energy_l2=0.3, **SMALL)
    x, z_neg = torch.randn(6, 2), torch.randn(6, 2)
    posterior = model.posterior(x)  # TI: the whole ladder; its t = 1 chains are the positives
    losses = model._objectives(x, posterior, z_neg)[0]
    f_pos, f_neg = model.energy(posterior.z), model.energy(z_neg)
    expected = f_neg - f_pos + 0.3 * (f_pos.square() + f_neg.square())
    torch.testing.assert_close(losses["energy"], expected)
    model.hparams.energy_l2 = 0.0
    torch.testing.assert_close(model._objectives(x, posterior, z_neg)[0]["energy"], f_neg - f_pos)


def test_gaussian_log_likelihood_constant():
    x = torch.zeros(1, 5)
    value = gaussian_log_likelihood(x, x, sigma=0.5)
    assert math.isclose(
        value.item(), -5 * (math.log(0.5) + 0.5 * math.log(2 * math.pi)), rel_tol=1e-6
    )


@pytest.mark.parametrize("sampler", [Langevin, MALA, HMC, RandomWalkMetropolis])
def test_training_steps_update_both_networks_and_log(sampler, tmp_path):
    args = SMALL | dict(prior_sampler=sampler(5, 0.1), posterior_sampler=sampler(5, 0.01))
    model = LatentEBM(data_shape=(2,), grad_clip=1.0, lr_decay=0.9, **args)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = MoonsDataModule(num_samples=200, batch_size=32)
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
    )
    trainer.fit(model, data)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert any(k.startswith("energy.") for k in changed)
    assert any(k.startswith("generator.") for k in changed)
    logged = set(trainer.callback_metrics)
    for key in ["loss_ebm", "loss_gen", "mse", "en_pos", "en_neg", "prior_log_prob_end"]:
        assert f"train/{key}" in logged
    # a gradient-free sampler has no gradient norm to log
    gradient_free = sampler is RandomWalkMetropolis
    assert ("train/posterior_grad_norm" in logged) != gradient_free
    assert {"val/mmd", "val/swd", "val/mse"} <= logged
    assert ("train/posterior_acceptance_rate" in logged) == (sampler is not Langevin)
    # lr_decay is applied once per epoch to both optimizers
    for opt, lr in zip(trainer.optimizers, (2e-5, 1e-4), strict=True):
        assert math.isclose(opt.param_groups[0]["lr"], 0.9 * lr, rel_tol=1e-6)


# Quality bar on standardized moons (see README): a Gaussian fitted to the data's mean and
# covariance scores about 0.09 in this metric; 8 epochs of the moons config must beat MMD_BAR.
MMD_BAR = 0.05


@pytest.mark.slow
def test_learns_moons_beyond_a_gaussian_fit(tmp_path):
    L.seed_everything(0)
    data = MoonsDataModule(num_samples=10_000, batch_size=128, standardize=True)
    model = LatentEBM(
        data_shape=(2,),
        latent_dim=2,
        likelihood_sigma=0.1,
        prior_sampler=Langevin(100, 0.05),
        energy_lr=5e-4,
        generator_lr=5e-4,
        lr_decay=0.85,
    )
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=6,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(model, data)

    real = data.split("test")
    h = median_pairwise_distance(real).item()
    bandwidths = [f * h for f in BANDWIDTH_FACTORS]
    samples = model.sample(len(real), generator=torch.Generator().manual_seed(1))
    gaussian = torch.distributions.MultivariateNormal(real.mean(0), torch.cov(real.T))
    baseline = gaussian.sample((len(real),))
    model_mmd = mmd_rbf(real, samples, bandwidths).item()
    baseline_mmd = mmd_rbf(real, baseline, bandwidths).item()
    assert baseline_mmd > MMD_BAR, f"the bar must separate: Gaussian fit scores {baseline_mmd:.4f}"
    assert model_mmd < MMD_BAR, f"LatentEBM MMD {model_mmd:.4f} >= bar {MMD_BAR}"
