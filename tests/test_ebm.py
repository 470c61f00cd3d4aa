"""The data-space EBM (lebm.models.EBM) against closed forms, and its evaluation helpers.

On Gaussian data N(mu, Sigma) with a quadratic energy ``f(x) = -||L^T (x - m)||^2 / 2``
(precision ``L L^T``), every objective has a known minimiser:

* score matching (exact and sliced): the Gaussian family's score-matching estimator is the
  sample mean and covariance (the MLE), so training must reach them;
* denoising score matching with noise sigma: the data blurred by N(0, sigma^2 I), so the mean
  and the covariance ``Sigma_hat + sigma^2 I``;
* NCE: the MLE again, and the learned ``log Z`` equals the true normaliser of the learned f,
  ``D/2 log(2 pi) - log det L``;
* contrastive divergence with exact (MALA) chains: the MLE, up to SGD noise.

Targets are the sample moments of the training data (the estimators' exact minimisers), so
only optimisation and objective errors remain; each tolerance says what it allows.
"""

import math
from functools import partial

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from callbacks import DensityMap, SamplePlotter
from datamodules import MoonsDataModule
from lebm.density import GaussianNoise, grid_log_normalizer, grid_points, kde_log_density
from lebm.models import EBM
from lebm.models.ebm import EnergyDivergenceError
from lebm.samplers import MALA, Langevin, RandomWalkMetropolis, SamplerDivergenceError
from tests.conftest import quiet_trainer


class QuadraticEnergy(nn.Module):
    """``f(x) = -||L^T (x - m)||^2 / 2``, L lower triangular with a positive diagonal."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim))
        self.raw = nn.Parameter(torch.zeros(dim, dim))

    def cholesky(self) -> torch.Tensor:
        return torch.tril(self.raw, -1) + torch.diag(self.raw.diagonal().exp())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * ((x - self.mean) @ self.cholesky()).pow(2).sum(1)

    def covariance(self) -> torch.Tensor:
        chol = self.cholesky()
        return torch.linalg.inv(chol @ chol.T)

    def log_normalizer(self) -> float:
        """``D/2 log(2 pi) - log det L``: the exact log Z of exp(f)."""
        dim = len(self.mean)
        return 0.5 * dim * math.log(2 * math.pi) - self.raw.diagonal().sum().item()


MU = torch.tensor([1.0, -0.5])
SIGMA = torch.tensor([[1.0, 0.6], [0.6, 0.8]])
DATA = MU + torch.randn(8192, 2, generator=torch.Generator().manual_seed(0)) @ (
    torch.linalg.cholesky(SIGMA).T
)
MEAN_HAT, COV_HAT = DATA.mean(0), torch.cov(DATA.T, correction=0)


def errors(model: EBM, extra_cov: float = 0.0) -> tuple[float, float]:
    """Largest error of the learned mean and covariance against the data's."""
    energy = model.energy
    target = COV_HAT + extra_cov * torch.eye(2)
    return (
        (energy.mean - MEAN_HAT).abs().max().item(),
        (energy.covariance() - target).abs().max().item(),
    )


def train_full_batch(model: EBM, steps: int = 400, lr: float = 0.05) -> EBM:
    """Adam with cosine decay on the model's per-sample losses over all of DATA."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        loss = model.learning_losses(DATA, generator)["energy"].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model


# objective settings, blur added to the covariance, tolerances (mean, covariance)
SCORE_MATCHING = {
    # the minimiser is the sample moments exactly: what is left is the optimiser (seen: 3e-6)
    "exact": ({}, 0.0, 1e-3, 1e-3),
    # one Gaussian direction per point and step: the trace estimate's noise (seen: 0.004)
    "sliced": ({"num_projections": 1}, 0.0, 0.01, 0.02),
    # sigma = 0.3: the blurred data's covariance Sigma_hat + 0.09 I (seen: 0.003)
    "denoising": ({"dsm_sigma": 0.3}, 0.09, 0.01, 0.02),
}


@pytest.mark.parametrize("kind", SCORE_MATCHING)
def test_score_matching_recovers_gaussian(kind):
    settings, blur, mean_tol, cov_tol = SCORE_MATCHING[kind]
    model = EBM(
        energy=QuadraticEnergy, objective="score_matching", score_objective=kind, **settings
    )
    mean_error, cov_error = errors(train_full_batch(model), blur)
    assert mean_error < mean_tol and cov_error < cov_tol, (mean_error, cov_error)


def test_nce_recovers_gaussian_and_its_log_normalizer():
    """Given noise N(0, 2^2 I), nu = 4: mean within 0.02, covariance within 0.02 (seen 0.005,
    0.002); the learned log Z within 0.01 of the exact normaliser of the learned f (seen:
    2e-5) and of the data's Gaussian; the grid's log Z within 0.005 of the exact one."""
    noise = partial(GaussianNoise, fit=False, mean=0.0, std=2.0)
    model = train_full_batch(
        EBM(energy=QuadraticEnergy, objective="nce", noise=noise, noise_ratio=4)
    )
    mean_error, cov_error = errors(model)
    assert mean_error < 0.02 and cov_error < 0.02, (mean_error, cov_error)
    learned = model.log_normalizer.value.item()
    assert abs(learned - model.energy.log_normalizer()) < 0.01
    true_data = math.log(2 * math.pi) + 0.5 * torch.logdet(COV_HAT).item()
    assert abs(learned - true_data) < 0.01
    assert abs(model.grid_log_normalizer().item() - model.energy.log_normalizer()) < 0.005


def fit_loader(model: EBM, tmp_path, epochs: int, data=DATA, batch_size=256, **trainer_args):
    trainer = quiet_trainer(tmp_path, max_epochs=epochs, limit_val_batches=0, **trainer_args)
    trainer.fit(model, DataLoader(data, batch_size=batch_size, shuffle=True))
    return trainer


def test_nce_default_noise_is_a_gaussian_fitted_to_the_training_data(tmp_path):
    """The default noise is fitted once, when training starts, to the training data's mean and
    full covariance (to float precision); a second fit does not refit it."""
    torch.manual_seed(0)
    model = EBM(energy=QuadraticEnergy, objective="nce", noise_fit_points=4096)
    assert not bool(model.noise.fitted)
    fit_loader(model, tmp_path, 1, limit_train_batches=3)
    assert bool(model.noise.fitted)
    scale_tril = model.noise.scale_tril
    fitted_cov = scale_tril @ scale_tril.T
    # the first 4096 points in loader order: a permutation's prefix, so compare moments
    # against the whole set within their sampling error (about 0.02 / 0.03)
    assert (model.noise.loc - MEAN_HAT).abs().max() < 0.05
    assert (fitted_cov - COV_HAT).abs().max() < 0.06
    before = model.noise.loc.clone()
    fit_loader(model, tmp_path, 2, limit_train_batches=1)
    assert torch.equal(model.noise.loc, before)
    y = model.noise.sample(20_000, torch.Generator().manual_seed(0))
    assert (y.mean(0) - model.noise.loc).abs().max() < 0.03
    reference = torch.distributions.MultivariateNormal(model.noise.loc, scale_tril=scale_tril)
    assert torch.allclose(model.noise.log_prob(y[:50]), reference.log_prob(y[:50]), atol=1e-4)


@pytest.mark.slow
def test_cd_with_mala_chains_recovers_gaussian(tmp_path):
    """Persistent CD (a 2048-chain buffer, 6 MALA steps of s = 0.05 per batch), Adam 0.01,
    20 epochs of 32 batches: mean within 0.05, covariance within 0.1 (seen: 0.027, 0.028; SGD
    noise at a constant learning rate is most of it)."""
    torch.manual_seed(0)
    model = EBM(
        energy=QuadraticEnergy,
        objective="cd",
        train_sampler=MALA(6, 0.05),
        buffer_size=2048,
        reinit_fraction=0.0,
        lr=0.01,
    )
    fit_loader(model, tmp_path, 20)
    mean_error, cov_error = errors(model)
    assert mean_error < 0.05 and cov_error < 0.1, (mean_error, cov_error)


# ----------------------------------------------------------------- buffer and samplers
def test_replay_buffer_is_written_by_training_steps_only():
    torch.manual_seed(0)
    model = EBM(
        energy=QuadraticEnergy,
        train_sampler=Langevin(3, 0.01),
        buffer_size=64,
        reinit_fraction=0.0,
        init_scale=2.0,
    )
    assert model.replay_buffer.shape == (64, 2)
    assert model.replay_buffer.abs().max() <= 2.0  # uniform on [-2, 2]^2
    start = model.replay_buffer.clone()
    model.learning_losses(DATA[:16], torch.Generator().manual_seed(0))
    assert torch.equal(model.replay_buffer, start)  # observers never move the chains
    model.training_step(DATA[:16], 0)
    changed = (model.replay_buffer != start).any(1)
    assert changed.sum() == 16  # 16 distinct rows drawn, run and written back
    with pytest.raises(ValueError, match="buffer_size"):
        model.negatives(65)


def test_any_sampler_draws_negatives_and_sampling_has_its_own_sampler():
    """Random-walk Metropolis trains (the lecture's first sampler); ``sample`` runs ``sampler``,
    not ``train_sampler``: with zero steps it returns the uniform starts."""
    torch.manual_seed(0)
    model = EBM(
        energy=QuadraticEnergy,
        chain_init="noise",
        train_sampler=RandomWalkMetropolis(5, 0.05),
        sampler=Langevin(0, 0.01),
        init_scale=0.5,
    )
    assert model.replay_buffer is None
    loss = model.learning_losses(DATA[:32])["energy"]
    assert loss.shape == (32,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert model.energy.mean.grad is not None
    x = model.sample(100, torch.Generator().manual_seed(0))
    assert x.shape == (100, 2) and x.abs().max() <= 0.5


def test_energy_for_vector_data_and_images_by_class_path():
    """Vector data: ``energy(d)`` (EnergyMLP); images: ``energy(data_shape)`` (ConvEnergy)."""
    mlp = EBM(energy={"class_path": "lebm.nets.EnergyMLP", "init_args": {"hidden": 8}})
    assert mlp.log_density(torch.zeros(3, 2)).shape == (3,)
    conv = EBM(
        data_shape=(1, 8, 8),
        energy={"class_path": "lebm.nets.ConvEnergy", "init_args": {"base_width": 4}},
        objective="score_matching",
        score_objective="sliced",
        spectral_norm=True,
    )
    assert conv.log_density(torch.zeros(3, 1, 8, 8)).shape == (3,)
    assert any("parametrizations" in name for name, _ in conv.energy.named_modules())
    assert not conv.gridded
    assert conv.learning_losses(torch.zeros(3, 1, 8, 8))["energy"].shape == (3,)


# ----------------------------------------------------------------- errors
def test_bad_hyperparameters_name_the_argument():
    with pytest.raises(ValueError, match="objective must be one of.*'ml'"):
        EBM(objective="ml")
    with pytest.raises(ValueError, match="noise_ratio must be an int >= 1, got 0"):
        EBM(objective="nce", noise_ratio=0)
    with pytest.raises(ValueError, match="reinit_fraction must be in \\[0, 1\\], got 1.5"):
        EBM(reinit_fraction=1.5)
    with pytest.raises(ValueError, match="grid_bounds must be two finite numbers"):
        EBM(grid_bounds=(4.0, -4.0))
    with pytest.raises(ValueError, match="energy_l2 must be >= 0"):
        EBM(energy_l2=-1.0)
    with pytest.raises(ValueError, match="lr_decay .* must be in \\(0, 1\\], got 1.5"):
        EBM(lr_decay=1.5)


class NaNAfter(nn.Module):
    """An energy (and its gradient) that turns NaN beyond |x| > 1 (an overflowing network)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        f = -(self.weight * x.pow(2)).sum(1)
        return f * torch.where(x.abs().amax(1) > 1, torch.nan, 1.0)


def test_non_finite_losses_and_chains_stop_training_naming_the_setting():
    x = torch.full((8, 2), 3.0)
    nce = EBM(energy=NaNAfter, objective="nce", noise=partial(GaussianNoise, fit=False))
    with pytest.raises(EnergyDivergenceError, match="nce.*model.init_args.lr"):
        nce.training_step(x, 0)
    sm = EBM(energy=NaNAfter, objective="score_matching", score_objective="denoising")
    with pytest.raises(EnergyDivergenceError, match="score_objective: denoising"):
        sm.training_step(x, 0)
    cd = EBM(energy=NaNAfter, train_sampler=Langevin(3, 0.01), init_scale=3.0)
    with pytest.raises(SamplerDivergenceError, match="train_sampler.init_args.step_size"):
        cd.training_step(torch.zeros(8, 2), 0)
    with pytest.raises(EnergyDivergenceError, match="log Z on the grid"):
        cd.grid_log_normalizer()


# ----------------------------------------------------------------- grid and KDE
def test_grid_normaliser_matches_closed_form_in_1d_and_2d():
    """Unnormalised Gaussians: the grid's log Z is within 1e-4 of the exact one."""
    cov = torch.tensor([[0.5, 0.2], [0.2, 0.3]])
    precision = torch.linalg.inv(cov)

    def log_density_2d(x):
        return -0.5 * ((x @ precision) * x).sum(1) + 3.0

    exact_2d = 3.0 + math.log(2 * math.pi) + 0.5 * torch.logdet(cov).item()
    assert abs(grid_log_normalizer(log_density_2d, 2, (-4, 4), 400).item() - exact_2d) < 1e-4
    exact_1d = 0.5 * math.log(2 * math.pi * 0.25)
    log_z_1d = grid_log_normalizer(lambda x: -2.0 * x[:, 0] ** 2, 1, (-4, 4), 2000)
    assert abs(log_z_1d.item() - exact_1d) < 1e-4
    points, cell = grid_points(2, (0, 1), 4)
    assert cell == 1 / 16 and torch.allclose(
        points.view(4, 4, 2)[1, 2], torch.tensor([0.625, 0.375])
    )


def test_kde_baseline_on_gaussian_data_is_near_the_true_entropy():
    """N(0, I) in 2-D, 2000 training points: the held-out KDE NLL lies within 0.1 nats above
    the entropy log(2 pi e) = 2.838 (a KDE smooths, so it cannot beat the truth by more than
    sampling error, about 0.02 for 2000 test points)."""
    g = torch.Generator().manual_seed(0)
    train, val, test = (torch.randn(n, 2, generator=g) for n in (2000, 500, 2000))
    log_p, bandwidth = kde_log_density(train, val, test)
    entropy = math.log(2 * math.pi * math.e)
    assert -0.03 < -log_p.mean().item() - entropy < 0.1
    assert 0.1 < bandwidth < 1.0
    # the same estimate as scikit-learn's (exact tolerances) at the chosen bandwidth
    from sklearn.neighbors import KernelDensity

    reference = KernelDensity(bandwidth=bandwidth).fit(train.double().numpy())
    expected = torch.from_numpy(reference.score_samples(test[:200].double().numpy()))
    assert torch.allclose(log_p[:200].double(), expected, atol=1e-4)


# ----------------------------------------------------------------- evaluation and the callback
def test_density_map_logs_nll_beside_the_kde_and_draws_the_heat_map(tmp_path):
    torch.manual_seed(0)
    data = MoonsDataModule(num_samples=600, standardize=True, batch_size=100)
    model = EBM(
        energy=partial(__import__("lebm.nets", fromlist=["EnergyMLP"]).EnergyMLP, hidden=16),
        objective="score_matching",
        sampler=Langevin(5, 0.01),
        grid_size=100,
    )
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=1,
        callbacks=[DensityMap(resolution=40), SamplePlotter(num_samples=50)],
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=data)
    metrics = trainer.callback_metrics
    for key in ("val/nll", "val/kde_nll", "val/mmd", "val/f_data"):
        assert torch.isfinite(metrics[key]), key
    assert (tmp_path / "density.png").exists() and (tmp_path / "density" / "epoch=000.png").exists()
    # the logged NLL is the grid-normalised one, nats per held-out point
    val = data.split("val")
    expected = -model.normalized_log_density(val).mean()
    assert torch.isclose(metrics["val/nll"], expected, atol=1e-4)
    trainer.test(model, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["test/kde_nll"])
    assert torch.isfinite(trainer.callback_metrics["test/nll"])


def test_density_map_refuses_a_model_without_a_density(tmp_path):
    from lebm.models import VAE

    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[DensityMap()])
    with pytest.raises(TypeError, match="DensityMap needs a model"):
        trainer.fit(VAE(), datamodule=MoonsDataModule(num_samples=100))


def test_checkpoint_rebuilds_the_model_with_its_noise_and_buffer(tmp_path):
    torch.manual_seed(0)
    model = EBM(
        energy={"class_path": "lebm.nets.EnergyMLP", "init_args": {"hidden": 8}},
        objective="nce",
        noise_ratio=2,
    )
    fit_loader(model, tmp_path, 1, limit_train_batches=2, enable_checkpointing=True)
    path = next(tmp_path.rglob("*.ckpt"))
    loaded = EBM.load_from_checkpoint(path)
    x = DATA[:5]
    assert torch.allclose(loaded.log_density(x), model.log_density(x))
    assert torch.equal(loaded.noise.loc, model.noise.loc) and bool(loaded.noise.fitted)
    assert torch.equal(loaded.log_normalizer.value, model.log_normalizer.value)
    cd = EBM(
        energy={"class_path": "lebm.nets.EnergyMLP", "init_args": {"hidden": 8}}, buffer_size=300
    )
    fit_loader(cd, tmp_path / "cd", 1, limit_train_batches=1, enable_checkpointing=True)
    reloaded = EBM.load_from_checkpoint(next((tmp_path / "cd").rglob("*.ckpt")))
    assert torch.equal(reloaded.replay_buffer, cd.replay_buffer)


@pytest.mark.slow
def test_cd_with_a_replay_buffer_learns_moons(tmp_path):
    """Persistent CD on standardised moons (4,000 training points, 2-64-64-1 SiLU MLP, 15
    Langevin steps of s = 0.005 from a 4,000-chain buffer, 5% restarts, energy L2 0.01, Adam
    5e-3, 500 iterations of 256): held-out NLL (grid-normalised) below 2.0 nats, where the
    data's own Gaussian fit scores above 2.5 and a KDE about 1.2 (seen: 1.74; 20 s on a loaded
    2-core machine)."""
    torch.manual_seed(0)
    data = MoonsDataModule(
        num_samples=5000, standardize=True, batch_size=256, test_fraction=0.0, val_fraction=0.2
    )
    model = EBM(
        energy={
            "class_path": "lebm.nets.EnergyMLP",
            "init_args": {"hidden": 64, "activation": "silu"},
        },
        train_sampler=Langevin(15, 0.005),
        buffer_size=4000,
        energy_l2=0.01,
        lr=5e-3,
        grid_size=200,
    )
    trainer = quiet_trainer(tmp_path, max_steps=500, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    val = data.split("val")
    nll = -model.normalized_log_density(val).mean().item()
    cov = torch.cov(data.split("train").T)
    gaussian = -torch.distributions.MultivariateNormal(torch.zeros(2), cov).log_prob(val).mean()
    assert gaussian > 2.5  # the bar is well below what a Gaussian can do
    assert nll < 2.0, nll
