"""Langevin autoencoder: amortised Langevin dynamics against the exact posterior of a
linear-Gaussian model, MH against an unadjusted step that is visibly biased, the training
step's bookkeeping, bad arguments, and the evaluation bounds shared with the VAE."""

import math
from functools import partial

import pytest
import torch
from torch import nn

from datamodules import MoonsDataModule
from lebm.models import VAE, LangevinAutoencoder
from lebm.nets import EncoderMLP, GeneratorMLP
from lebm.samplers import MALA, Langevin
from tests.conftest import quiet_trainer

# x = W z + b + sigma eps, z ~ N(0, I): the posterior of each z_i is N(m_i, P^-1) with precision
# P = I + W^T W / sigma^2 and mean m_i = P^-1 W^T (x_i - b) / sigma^2.
W = torch.tensor([[2.0, 0.0], [0.0, 0.7], [0.0, 0.0]], dtype=torch.float64)
B = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
SIGMA = 0.5
N_POINTS, FEATURES = 4, 16


class LinearDecoder(nn.Module):
    """The fixed decoder ``z W^T + b`` (no parameters: it stays fixed)."""

    def __init__(self, latent_dim=None, data_shape=None) -> None:
        super().__init__()
        self.register_buffer("w", W.clone())
        self.register_buffer("b", B.clone())

    def forward(self, z):
        return z @ self.w.T + self.b


class RandomFeatures(nn.Module):
    """Fixed features ``cos(x A^T + c)`` of high frequency: linearly independent across a few
    distinct points (rank n, as ALD's theorem needs), no parameters."""

    def __init__(self, data_shape=None, out_features: int = FEATURES) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer(
            "a", 3.0 * torch.randn(out_features, 3, generator=g, dtype=torch.float64)
        )
        self.register_buffer(
            "c", 2 * math.pi * torch.rand(out_features, generator=g, dtype=torch.float64)
        )

    def forward(self, x):
        return torch.cos(x @ self.a.T + self.c)


def _exact_posterior(x):
    precision = torch.eye(2, dtype=torch.float64) + W.T @ W / SIGMA**2
    cov = torch.linalg.inv(precision)
    return (x - B) @ W @ cov / SIGMA**2, cov


def _linear_gaussian_lae(sampler, **extra):
    """LAE with fixed random features and the linear decoder W z + B (float64): its codes'
    exact posterior is ``_exact_posterior``."""
    return LangevinAutoencoder(
        data_shape=(3,),
        latent_dim=2,
        features=FEATURES,
        encoder=RandomFeatures,
        decoder=LinearDecoder,
        likelihood_sigma=SIGMA,
        sampler=sampler,
        burn_in=1,
        **extra,
    ).double()


def _ald_draws(sampler, iterations: int, seed: int):
    """Codes ``Phi_t g(x_i)`` of every kept ALD state over ``iterations`` calls on a fixed batch
    (the decoder and features fixed, Phi carried over as in training): (draws, n, 2), and the
    data x."""
    model = _linear_gaussian_lae(sampler)
    g = torch.Generator().manual_seed(seed)
    x = B + torch.randn(N_POINTS, 3, generator=g, dtype=torch.float64) * 1.5
    features = model.features_of(x)
    assert torch.linalg.matrix_rank(features) == N_POINTS  # the theorem's condition holds
    draws, accept = [], []
    for _ in range(iterations):
        states, result = model.amortized_langevin(x, features, generator=g)
        model.phi.copy_(result.sample[0])
        draws.append(torch.einsum("bf,tdf->tbd", features, states))
        if result.acceptance_rate is not None:
            accept.append(result.acceptance_rate)
    draws = torch.cat(draws)[iterations // 10 :]  # drop the first tenth (from Phi's start)
    return draws, x, (torch.cat(accept).mean().item() if accept else None)


# The stiff direction of the posterior has precision 1 + 4 / 0.25 = 17 (sd 0.24), the soft one
# 1 + 0.49 / 0.25 = 2.96 (sd 0.58); the features' Gram matrix has eigenvalues around
# FEATURES / 2 = 8. At s = 5e-3 each code moves with an effective step of about s * 8 = 0.04,
# and s * 8 * 17 ~ 0.7 on the stiff direction: unadjusted Langevin inflates its variance by
# 1 / (1 - 0.7 / 2) ~ 1.5 (measured 1.5-1.8 over seeds 0-2), MALA (acceptance 0.6-0.7) keeps it
# within 4%.
STEP = 5e-3
ITERATIONS = 800  # x (1 burn-in + 4 kept) steps: about 5 s per chain


def _moments(draws, x):
    mean, cov = _exact_posterior(x)
    centred = draws - draws.mean(0)
    pooled = torch.einsum("tbi,tbj->ij", centred, centred) / (centred.shape[0] * centred.shape[1])
    return draws.mean(0), mean, pooled, cov


@pytest.fixture(scope="module")
def mala_draws():
    return _ald_draws(MALA(4, STEP), ITERATIONS, seed=0)


def test_ald_codes_follow_the_exact_gaussian_posterior(mala_draws):
    """MALA on Phi: each point's code mean within 0.35 posterior sds of the exact mean (Monte
    Carlo error about 0.1-0.2 sd at this chain length: the soft direction mixes slowly), the
    pooled covariance's variances within 10% of the exact ones (measured within 4%) and its
    off-diagonal (exactly 0) below 5% of the smaller variance."""
    draws, x, acceptance = mala_draws
    mean_hat, mean, cov_hat, cov = _moments(draws, x)
    assert 0.4 < acceptance < 0.9
    assert ((mean_hat - mean).abs() / cov.diagonal().sqrt()).max() < 0.35
    assert torch.allclose(cov_hat.diagonal(), cov.diagonal(), rtol=0.10)
    assert abs(cov_hat[0, 1]) < 0.05 * cov.diagonal().min()


def test_unadjusted_ald_is_visibly_biased_where_mh_is_not(mala_draws):
    """At the same step, unadjusted Langevin over-disperses the stiff direction by >= 30%;
    MALA's variance there is within 10% of the exact one."""
    ula, x, _ = _ald_draws(Langevin(4, STEP), ITERATIONS, seed=0)
    exact = _exact_posterior(x)[1][0, 0]
    assert _moments(ula, x)[2][0, 0] > 1.3 * exact
    assert abs(_moments(mala_draws[0], x)[2][0, 0] / exact - 1) < 0.10


# --------------------------------------------------------------------------- the model
TINY = dict(
    features=32,
    encoder=partial(EncoderMLP, hidden=16),
    decoder=partial(GeneratorMLP, hidden=16),
    sampler=MALA(2, 1e-5),
)


def test_training_moves_phi_by_mcmc_and_the_networks_by_gradient(tmp_path):
    model = LangevinAutoencoder(**TINY)
    phi0 = model.phi.clone()
    decoder0 = [p.detach().clone() for p in model.decoder.parameters()]
    assert all(p is not model.phi for p in model.parameters())  # no optimizer touches Phi
    dm = MoonsDataModule(num_samples=256, batch_size=32)
    quiet_trainer(tmp_path, max_steps=4, limit_val_batches=0).fit(model, dm)
    assert not torch.equal(model.phi, phi0)
    assert all(
        not torch.equal(p, q) for p, q in zip(model.decoder.parameters(), decoder0, strict=True)
    )
    assert "phi" in model.state_dict()


def test_learning_losses_leave_phi_unchanged_and_train_both_groups():
    model = LangevinAutoencoder(**TINY)
    x = torch.randn(8, 2)
    phi0 = model.phi.clone()
    losses = model.learning_losses(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.phi, phi0)
    assert set(losses) == set(model.gradient_groups()) == {"encoder", "decoder"}
    assert losses["encoder"].shape == (8,)
    losses["encoder"].mean().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_kept_states_are_the_last_t_of_burn_in_plus_t():
    model = LangevinAutoencoder(**TINY | {"sampler": Langevin(3, 1e-5), "burn_in": 2})
    x = torch.randn(8, 2)
    g = torch.Generator().manual_seed(0)
    states, result = model.amortized_langevin(x, model.features_of(x), generator=g)
    assert states.shape == (3, 2, 32)
    assert result.trajectory.shape == (6, 1, 2, 32)  # start + 2 burn-in + 3 kept
    assert torch.equal(states[-1], result.sample[0])


def test_a_batch_wider_than_the_features_is_warned_about():
    model = LangevinAutoencoder(**TINY | {"features": 4})
    with pytest.warns(UserWarning, match="features >= batch size"):
        model._check_width(8)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"features": 0}, "features must be > 0"),
        ({"burn_in": -1}, "burn_in must be an int >= 0"),
        ({"sampler": MALA(0, 1e-5)}, "sampler.n_steps is T"),
        ({"likelihood": "poisson"}, "likelihood must be one of"),
        ({"fixed_q_sigma": 0.0}, "fixed_q_sigma must be > 0"),
        ({"target_acceptance": 1.0}, "target_acceptance must be in"),
        ({"phi_prior_std": 0.0}, "phi_prior_std must be > 0"),
    ],
)
def test_bad_arguments_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        LangevinAutoencoder(**TINY | args)


def test_evaluation_uses_the_fixed_q_around_the_encoder_output():
    """The LAE's q is N(Phi g(x), 0.05^2 I): its elbo and elbo_fixed_q are the same bound, and
    the VAE's elbo_fixed_q is the ELBO of the fixed q around its mean."""
    lae = LangevinAutoencoder(**TINY)
    x = torch.randn(16, 2)
    mu, logvar = lae.encode(x)
    assert torch.allclose(logvar, torch.full_like(mu, 2 * math.log(0.05)))
    g = torch.Generator()
    metrics = lae.evaluation_metrics(x, g.manual_seed(0))
    expected = -lae.negative_elbo(x, g.manual_seed(0)).mean()
    assert torch.allclose(metrics["elbo"], expected)
    vae = VAE(encoder=partial(EncoderMLP, hidden=16), decoder=partial(GeneratorMLP, hidden=16))
    q = vae.fixed_q(x)
    assert torch.equal(q[0], vae.encode(x)[0])
    assert torch.allclose(q[1].exp(), torch.full_like(q[1], 0.05**2))


def test_interpolation_ends_are_the_reconstructions():
    model = LangevinAutoencoder(**TINY)
    x_a, x_b = torch.randn(3, 2), torch.randn(3, 2)
    path = model.interpolate(x_a, x_b, num_points=5)
    assert path.shape == (3, 5, 2)
    assert torch.allclose(path[:, 0], model.reconstruct(x_a), atol=1e-6)
    assert torch.allclose(path[:, -1], model.reconstruct(x_b), atol=1e-6)


def test_fourier_features_meet_the_rank_condition_where_an_mlp_does_not():
    """On 128 moons points, an MLP's 384 features have a Gram matrix whose 60th eigenvalue is
    below 1e-3 of the largest (numerically rank-deficient: ALD cannot move the batch's codes
    independently); FourierEncoder's smallest eigenvalue stays above 1e-4 of the largest."""
    from lebm.nets import FourierEncoder

    torch.manual_seed(0)
    dm = MoonsDataModule(num_samples=1000, batch_size=128, standardize=True)
    dm.setup("fit")
    x = next(iter(dm.train_dataloader()))
    x = x[0] if isinstance(x, (list, tuple)) else x
    with torch.no_grad():
        for encoder, check in (
            (EncoderMLP((2,), 384), lambda ev: ev[59] < 1e-3 * ev[0]),
            (FourierEncoder((2,), 384), lambda ev: ev[-1] > 1e-4 * ev[0]),
        ):
            h = encoder(x).double()
            eigenvalues = torch.linalg.eigvalsh(h @ h.T).flip(0)
            assert check(eigenvalues), (type(encoder).__name__, eigenvalues[[0, 59, -1]])
    with pytest.raises(ValueError, match="must exceed 2 \\* num_frequencies"):
        FourierEncoder((2,), 256, num_frequencies=128)


def test_step_size_adapts_towards_the_target_acceptance(tmp_path):
    """Started far too large (every proposal rejected), the adapted step size falls; the
    unadapted one stays; adaptation without an MH test is refused."""
    dm = MoonsDataModule(num_samples=512, batch_size=32)
    adapted = LangevinAutoencoder(**TINY | {"sampler": MALA(2, 1.0), "target_acceptance": 0.6})
    fixed = LangevinAutoencoder(**TINY | {"sampler": MALA(2, 1.0)})
    for model in (adapted, fixed):
        quiet_trainer(tmp_path, max_steps=10, limit_val_batches=0).fit(model, dm)
    assert adapted.step_size < 0.9 and fixed.step_size == 1.0
    with pytest.raises(ValueError, match="has no MH test"):
        LangevinAutoencoder(**TINY | {"sampler": Langevin(2, 1e-5), "target_acceptance": 0.6})


def test_phi_prior_makes_the_unseen_directions_of_phi_gaussian():
    """With phi_prior_std sigma, the directions of Phi that the batch's features do not see
    (F - n of them) feel only the prior: their entries follow N(0, sigma^2) (sd within 15%),
    while with the paper's flat prior they random-walk (sd grows well past sigma); the codes
    still follow the exact posterior closely (sigma large against their Phi spread)."""
    sigma, iterations = 0.3, 100
    g = torch.Generator().manual_seed(1)
    spreads = {}
    for prior in (sigma, None):
        model = _linear_gaussian_lae(MALA(4, STEP), phi_prior_std=prior)
        x = B + torch.randn(N_POINTS, 3, generator=g, dtype=torch.float64) * 1.5
        features = model.features_of(x)
        # orthonormal basis of the features' null space: (F - n) columns
        null = torch.linalg.svd(features, full_matrices=True).Vh[N_POINTS:].T
        unseen = []
        for _ in range(iterations):
            _, result = model.amortized_langevin(x, features, generator=g)
            model.phi.copy_(result.sample[0])
            unseen.append(model.phi @ null)
        spreads[prior] = torch.stack(unseen[iterations // 4 :]).pow(2).mean().sqrt().item()
    assert abs(spreads[sigma] / sigma - 1) < 0.15, spreads
    assert spreads[None] > 2 * sigma, spreads
