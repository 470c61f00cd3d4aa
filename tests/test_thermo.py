"""Thermodynamic integration against the linear-Gaussian closed form, and ThermoLatentEBM."""

import math

import lightning as L
import pytest
import torch

from datamodules import TwoModesDataModule
from lebm.models import ThermoLatentEBM
from lebm.models.latent_ebm import Posterior
from lebm.samplers import HMC, MALA, Langevin
from lebm.thermo import (
    PowerPosteriorSamples,
    TemperatureLadder,
    sample_power_posteriors,
    thermodynamic_log_evidence,
)
from tests.conftest import quiet_trainer, tiny_latent_ebm_args

# z ~ N(0, I_d), x | z ~ N(W z + b, sigma^2 I_D): log p(x) = log N(x; b, W W^T + sigma^2 I).
D_LATENT, D_DATA, SIGMA = 2, 3, 0.5
_g = torch.Generator().manual_seed(0)
W = torch.randn(D_DATA, D_LATENT, generator=_g)
B = torch.randn(D_DATA, generator=_g)
X = 1.5 * torch.randn(3, D_DATA, generator=_g)


def log_prior(z):
    return -0.5 * z.pow(2).sum(1) - 0.5 * D_LATENT * math.log(2 * math.pi)


def log_lik(x, z):
    return torch.distributions.Normal(z @ W.T + B, SIGMA).log_prob(x).sum(1)


def exact_log_evidence(x):
    cov = W @ W.T + SIGMA**2 * torch.eye(D_DATA)
    return torch.distributions.MultivariateNormal(B, cov).log_prob(x)


def ti_error(n_t, power, init, steps, seed=1, chains=400):
    g = torch.Generator().manual_seed(seed)
    est = thermodynamic_log_evidence(
        log_prior,
        log_lik,
        X,
        (D_LATENT,),
        TemperatureLadder(n_t, power),
        MALA(steps, 0.01),
        init=init,
        num_chains=chains,
        generator=g,
    )
    return (est - exact_log_evidence(X)).abs()


def test_ladder_schedule_weights_and_validation():
    ladder = TemperatureLadder(5, power=2.0)
    assert torch.allclose(
        ladder.t, torch.tensor([0, 1 / 16, 1 / 4, 9 / 16, 1], dtype=torch.float64)
    )
    assert math.isclose(ladder.weights.sum().item(), 1.0)
    # the trapezoid rule integrates t -> t exactly: 1/2
    assert math.isclose(ladder.integrate(ladder.t).item(), 0.5)
    assert torch.equal(
        TemperatureLadder(temperatures=[0, 0.3, 1]).t,
        torch.tensor([0, 0.3, 1.0], dtype=torch.float64),
    )
    for kwargs, msg in [
        ({"num_temperatures": 1}, "num_temperatures must be >= 2"),
        ({"power": 0.0}, "power must be > 0"),
        ({"temperatures": [0.0, 0.5, 0.4, 1.0]}, "strictly increasing"),
        ({"temperatures": [0.1, 1.0]}, "start at 0 and end at 1"),
        ({"temperatures": [0.0, 0.9]}, "start at 0 and end at 1"),
    ]:
        with pytest.raises(ValueError, match=msg):
            TemperatureLadder(**kwargs)


@pytest.mark.parametrize(("init", "steps"), [("independent", 200), ("annealed", 100)])
def test_ti_matches_linear_gaussian_log_evidence(init, steps):
    """|TI - log p(x)| < 0.3 nats (log p(x) is about -6 to -24 here) with 20 temperatures, p = 4."""
    error = ti_error(20, 4.0, init, steps)
    assert error.max() < 0.3, error


def test_ti_error_falls_as_the_ladder_grows():
    errors = [ti_error(n_t, 1.0, "independent", 150).mean().item() for n_t in (3, 6, 24)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.3


def test_all_temperatures_in_one_sampler_call():
    calls = []

    class CountingLangevin(Langevin):
        def __call__(self, log_prob, z0, **kwargs):
            calls.append((z0.shape, kwargs["step_size"].shape))
            return super().__call__(log_prob, z0, **kwargs)

    ladder = TemperatureLadder(7)
    samples = sample_power_posteriors(
        log_prior, log_lik, X, (D_LATENT,), ladder, CountingLangevin(3, 0.01), num_chains=2
    )
    n = 7 * 2 * len(X)  # every chain in one call, each with its temperature's step size
    assert calls == [(torch.Size([n, D_LATENT]), torch.Size([n]))]
    assert samples.z.shape == (7, 2, len(X), D_LATENT)
    assert samples.log_likelihood.shape == (7, 2, len(X))


def test_power_posterior_moments_match_closed_form():
    """At temperature t the power posterior is Gaussian with precision I + t W^T W / sigma^2."""
    ladder = TemperatureLadder(temperatures=[0.0, 0.5, 1.0])
    x = X[:1]
    g = torch.Generator().manual_seed(3)
    z = sample_power_posteriors(
        log_prior, log_lik, x, (D_LATENT,), ladder, MALA(400, 0.01), num_chains=4000, generator=g
    ).z
    for i, t in enumerate(ladder.t.tolist()):
        precision = torch.eye(D_LATENT) + t * W.T @ W / SIGMA**2
        cov = torch.linalg.inv(precision)
        mean = cov @ (t * W.T @ (x[0] - B) / SIGMA**2)
        zi = z[i, :, 0]
        assert torch.allclose(zi.mean(0), mean, atol=0.05)
        assert torch.allclose(torch.cov(zi.T), cov, atol=0.05)


SMALL = tiny_latent_ebm_args() | dict(num_temperatures=4)


def test_bad_ti_hyperparameters():
    with pytest.raises(ValueError, match="num_temperatures must be >= 2"):
        ThermoLatentEBM(num_temperatures=1)
    with pytest.raises(
        ValueError, match="num_chains must be >= 1 \\(>= 2 for generator_objective='exact'"
    ):
        ThermoLatentEBM(generator_objective="exact", num_chains=1)
    with pytest.raises(ValueError, match="generator_objective must be 'tempered', 'exact' or"):
        ThermoLatentEBM(generator_objective="fisher")
    with pytest.raises(ValueError, match="chain_init must be"):
        ThermoLatentEBM(chain_init="warm")
    with pytest.raises(ValueError, match="likelihood_sigma must be > 0"):
        ThermoLatentEBM(likelihood_sigma=-1.0)


def test_tempered_generator_gradient_is_the_weighted_sum_over_temperatures():
    model = ThermoLatentEBM(data_shape=(2,), **SMALL)
    x = torch.randn(5, 2)
    z = torch.randn(4, 1, 5, 2)
    ladder = PowerPosteriorSamples(z, torch.zeros(4, 1, 5), None, torch.zeros(()))
    loss, mse = model.generator_loss(x, Posterior(z[-1, 0], ladder))
    expected = -sum(
        w * model.log_likelihood(x, z[i, 0]) for i, w in enumerate(model.ladder.weights.tolist())
    )
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(mse, (model.generator(z[-1, 0]) - x).pow(2).mean())  # t = 1 chains


def test_posterior_objective_is_the_t1_chains_log_likelihood_alone():
    model = ThermoLatentEBM(data_shape=(2,), generator_objective="posterior", num_chains=3, **SMALL)
    x = torch.randn(5, 2)
    z = torch.randn(4, 3, 5, 2)
    ladder = PowerPosteriorSamples(z, torch.zeros(4, 3, 5), None, torch.zeros(()))
    loss, mse = model.generator_loss(x, Posterior(z[-1, 0], ladder))
    expected = -sum(model.log_likelihood(x, z[-1, c]) for c in range(3)) / 3
    assert torch.allclose(loss, expected, atol=1e-5)
    assert torch.allclose(mse, (model.generator(z[-1, 0]) - x).pow(2).mean())
    # the lower temperatures take no part: changing them leaves the loss unchanged
    z[:-1] += 5.0
    again, _ = model.generator_loss(x, Posterior(z[-1, 0], ladder))
    assert torch.equal(loss, again)


def test_exact_objective_recovers_the_exact_generator_gradient():
    """On the linear-Gaussian model with exact power-posterior samples, the covariance-corrected
    TI gradient for W matches grad_W log p(x) (closed form), and so does the t = 1 chains'
    (Fisher's identity, ``generator_objective="posterior"``); the tempered one does not."""
    torch.manual_seed(0)
    x = X[:1]
    ladder = TemperatureLadder(30, power=3.0)
    k = 20_000
    zs = []
    for t in ladder.t.tolist():
        precision = torch.eye(D_LATENT) + t * W.T @ W / SIGMA**2
        cov = torch.linalg.inv(precision)
        mean = cov @ (t * W.T @ (x[0] - B) / SIGMA**2)
        zs.append(torch.distributions.MultivariateNormal(mean, cov).sample((k,)))
    z = torch.stack(zs)  # (N_t, K, d)

    def grad_of(objective):
        w = W.clone().requires_grad_(True)
        loglik = torch.distributions.Normal(z @ w.T + B, SIGMA).log_prob(x).sum(-1)  # (N_t, K)
        if objective == "exact":
            held = loglik.detach()
            baseline = (held.sum(1, keepdim=True) - held) / (k - 1)
            loglik = loglik + ladder.t.float().view(-1, 1) * (held - baseline) * loglik
        if objective == "posterior":
            loglik[-1].mean().backward()
        else:
            ladder.integrate(loglik.mean(1)).backward()
        return w.grad

    w = W.clone().requires_grad_(True)
    exact_log_evidence_w = (
        torch.distributions.MultivariateNormal(B, w @ w.T + SIGMA**2 * torch.eye(D_DATA))
        .log_prob(x)
        .sum()
    )
    (true_grad,) = torch.autograd.grad(exact_log_evidence_w, w)
    exact, tempered = grad_of("exact"), grad_of("tempered")
    scale = true_grad.norm()
    assert (exact - true_grad).norm() / scale < 0.1
    assert (grad_of("posterior") - true_grad).norm() / scale < 0.05
    assert (tempered - true_grad).norm() / scale > 0.2


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"negatives": "ladder", "chain_init": "annealed", "steps_per_temperature": 3},
        {"generator_objective": "exact", "num_chains": 2, "posterior_sampler": MALA(20, 0.005)},
        {"posterior_sampler": HMC(5, 0.05, n_leapfrog=3)},
    ],
    ids=["independent-prior", "annealed-ladder", "exact-mala", "hmc"],
)
def test_ebm_learns_in_ti_mode(kwargs, tmp_path):
    """The EBM's parameters move and its loss responds (the JAX seed froze the EBM in TI runs)."""
    L.seed_everything(0)
    # data far from what the untrained generator produces, so posterior latents differ
    # from prior ones and the EBM has something to learn
    kwargs = {**SMALL, "posterior_sampler": Langevin(20, 0.005), **kwargs}
    model = ThermoLatentEBM(data_shape=(2,), energy_lr=1e-2, likelihood_sigma=0.1, **kwargs)
    before = [p.detach().clone() for p in model.energy.parameters()]
    data = TwoModesDataModule(num_samples=800, batch_size=32)
    x = data.split("val")[:64]
    # fixed latents of the kind the EBM loss uses: t = 1 chains (positives), prior draws (negatives)
    z_pos = model.sample_power_posteriors(x).z[-1, 0]
    z_neg = model.sample_prior(64).sample

    def ebm_loss():
        with torch.no_grad():
            return (model.energy(z_neg) - model.energy(z_pos)).mean().item()

    loss_before = ebm_loss()
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=2,
        limit_val_batches=0,
    )
    trainer.fit(model, data)
    moved = [
        (p.detach() - b).abs().max().item()
        for p, b in zip(model.energy.parameters(), before, strict=True)
    ]
    # every tensor but the output bias, to which f(z-) - f(z+) is blind
    assert min(moved[:-1]) > 1e-4, moved
    metrics = trainer.callback_metrics
    assert "train/log_px_ti" in metrics and torch.isfinite(metrics["train/log_px_ti"])
    assert all(f"train/expected_loglik/t{i:02d}" in metrics for i in range(4))
    # the EBM loss on posterior-vs-prior latents fell: f separates them
    assert ebm_loss() < loss_before - 0.05, (loss_before, ebm_loss())
