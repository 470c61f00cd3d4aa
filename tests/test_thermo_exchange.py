"""Adaptive temperature ladder, replica exchange and chunked chains (REFERENCE §12), against
closed forms; ThermoLatentEBM with them on: logging, exact resume, divergence messages."""

import math

import pytest
import torch

from lebm.models import ThermoLatentEBM
from lebm.samplers import MALA, Langevin
from lebm.samplers.base import SamplerDivergenceError
from lebm.thermo import (
    TemperatureLadder,
    adapt_temperatures,
    expected_log_likelihoods,
    replica_exchange,
    sample_power_posteriors,
)
from tests.conftest import tiny_latent_ebm_args
from tests.test_resume import assert_identical, fit, training_state
from tests.test_thermo import D_LATENT, X, exact_log_evidence, log_lik, log_prior

# ----------------------------------------------------------------- replica exchange


def test_swap_probability_is_the_metropolis_hastings_one():
    """Two temperatures, fixed log-likelihoods: the swap frequency of each column is
    min(1, exp((t_0 - t_1)(l_1 - l_0))), and swapped states carry their log-likelihoods."""
    t = torch.tensor([0.2, 0.7])
    m = 20_000
    loglik = torch.tensor([[-1.0, -3.0, 0.0], [-2.0, -1.0, -0.5]]).repeat_interleave(m, 1)
    z = torch.stack([torch.zeros(3 * m, 1), torch.ones(3 * m, 1)])
    z_new, ll_new, accepted = replica_exchange(
        z, loglik, t, odd=False, generator=torch.Generator().manual_seed(0)
    )
    rate = accepted[0].float().view(3, m).mean(1)
    l0, l1 = loglik[0, ::m], loglik[1, ::m]
    expected = ((t[0] - t[1]) * (l1 - l0)).exp().clamp(max=1)  # [1, e^-1, 1]
    assert 0.3 < expected[1] < 0.4
    assert torch.allclose(rate, expected, atol=0.015), (rate, expected)
    swapped = accepted[0]
    assert torch.equal(z_new[0, :, 0], swapped.float())  # the t = 0.2 row took the other state
    assert torch.equal(ll_new[0], torch.where(swapped, loglik[1], loglik[0]))
    # odd pairs of a 2-rung ladder: none to try
    _, _, none = replica_exchange(z, loglik, t, odd=True)
    assert not none.any()


# a 1-D latent whose power posteriors turn bimodal: prior N(A, 1) (unnormalised), likelihood
# N(XV; z^2, SIG^2). At t = 1 the modes sit near z = +-2 with a ~32-nat barrier between them and
# weights about 0.8 / 0.2 (quadrature below), while chains started from N(0, 1) split ~50/50.
A, XV, SIG = 0.35, 4.0, 0.5


def bimodal_log_prior(z):
    return -0.5 * z[:, 0] ** 2 + A * z[:, 0]


def bimodal_log_lik(x, z):
    return -((x[:, 0] - z[:, 0] ** 2) ** 2) / (2 * SIG**2)


def positive_mode_weight(t: float) -> float:
    """Mass of z > 0 under the power posterior at t, by quadrature on a fine grid."""
    z = torch.linspace(-8, 8, 200_001, dtype=torch.float64)
    lp = -0.5 * z**2 + A * z - t * (XV - z**2) ** 2 / (2 * SIG**2)
    p = (lp - lp.max()).exp()
    return (p[z > 0].sum() / p.sum()).item()


def test_replica_exchange_recovers_the_mode_weights_independent_chains_miss():
    exact = positive_mode_weight(1.0)
    assert 0.75 < exact < 0.85  # the construction is what the docstring says
    ladder = TemperatureLadder(10, power=3.0)
    step_sizes = (0.3 / (1 + 60 * ladder.t)).float()  # smaller where the likelihood is sharp
    x = torch.full((400, 1), XV)  # 400 independent populations on the same data point
    weights = {}
    for swap_every in (None, 2):  # the same sampler budget: 300 MALA steps per chain
        samples = sample_power_posteriors(
            bimodal_log_prior,
            bimodal_log_lik,
            x,
            (1,),
            ladder,
            MALA(300, 0.01),
            step_sizes=step_sizes,
            swap_every=swap_every,
            generator=torch.Generator().manual_seed(0),
        )
        weights[swap_every] = (samples.z[-1, 0, :, 0] > 0).float().mean().item()
    # 400 chains: binomial sd 0.02
    assert abs(weights[2] - exact) < 0.06, (weights, exact)
    assert abs(weights[None] - exact) > 0.2, (weights, exact)
    assert samples.swap_rate.shape == (9,) and bool((samples.swap_rate > 0.3).all())


# ----------------------------------------------------------------- adaptive ladder


def test_adapted_ladder_equalises_the_symmetrised_kl():
    """E(t) = -c / (1 + a t) (steep near t = 0, like a log-likelihood); iterating the update
    gives segments with equal J_i = (t_{i+1} - t_i)(E_{i+1} - E_i)."""

    def expected(t):
        return -50.0 / (1 + 30.0 * t)

    t = TemperatureLadder(8).t
    j_uniform = t.diff() * expected(t).diff()
    for _ in range(30):
        t = adapt_temperatures(t, expected(t), rate=1.0, floor=1e-6)
    j = t.diff() * expected(t).diff()
    assert t[0] == 0 and t[-1] == 1 and bool((t.diff() > 0).all())
    assert j.max() / j.min() < 1.05, j
    assert j_uniform.max() / j_uniform.min() > 50  # it was far from equal
    # rate < 1 moves part of the way; the ladder stays valid
    half = adapt_temperatures(TemperatureLadder(8).t, expected(TemperatureLadder(8).t), rate=0.5)
    assert bool((half.diff() > 0).all())
    with pytest.raises(ValueError, match="rate must be in"):
        adapt_temperatures(t, expected(t), rate=0.0)


def test_ti_with_adaptive_ladder_and_replica_exchange_matches_linear_gaussian():
    """Adapt the ladder on the chains' own estimates (5 rounds), then TI with replica exchange:
    |TI - log p(x)| < 0.3 nats, as for the fixed p = 4 ladder in test_thermo.py."""
    g = torch.Generator().manual_seed(1)
    ladder = TemperatureLadder(12)
    kwargs = dict(swap_every=2, generator=g)
    for _ in range(5):  # short, cheap rounds for the ladder
        samples = sample_power_posteriors(
            log_prior, log_lik, X, (D_LATENT,), ladder, MALA(60, 0.01), num_chains=50, **kwargs
        )
        ladder = TemperatureLadder(
            temperatures=adapt_temperatures(ladder.t, expected_log_likelihoods(samples))
        )
    assert ladder.t[1] < 0.02  # the adapted ladder packs temperatures near 0
    samples = sample_power_posteriors(
        log_prior, log_lik, X, (D_LATENT,), ladder, MALA(150, 0.01), num_chains=200, **kwargs
    )
    error = (ladder.integrate(expected_log_likelihoods(samples)) - exact_log_evidence(X)).abs()
    assert error.max() < 0.3, (error, ladder)


# ----------------------------------------------------------------- chunking


def _same_seed_chains(*variants, **common):
    """MALA power-posterior chains (5 temperatures, 3 chains per point), one run per variant
    (keyword overrides of ``sample_power_posteriors``), all from the same seed; asserts the
    chains moved, so comparing runs is not comparing starting points."""
    runs = []
    for variant in variants:
        args = {"log_prior": log_prior, "num_chains": 3, **common, **variant}
        prior = args.pop("log_prior")
        runs.append(
            sample_power_posteriors(
                prior,
                log_lik,
                X,
                (D_LATENT,),
                TemperatureLadder(5, power=2.0),
                MALA(12, 0.05),
                generator=torch.Generator().manual_seed(4),
                **args,
            )
        )
    assert (runs[0].z - runs[0].z[:, :, :, :1]).abs().sum() > 0
    return runs


@pytest.mark.parametrize("swap_every", [None, 3])
def test_chunked_chains_are_the_unchunked_chains(swap_every):
    """Same seed, chunk_size 7 (not a divisor of the 5 x 3 x 3 = 45 chains) vs all at once."""
    runs = _same_seed_chains(dict(chunk_size=None), dict(chunk_size=7), swap_every=swap_every)
    assert torch.allclose(runs[0].z, runs[1].z, atol=1e-5)
    assert torch.allclose(runs[0].log_likelihood, runs[1].log_likelihood, atol=1e-4)
    assert torch.allclose(runs[0].acceptance_rate, runs[1].acceptance_rate)


@pytest.mark.parametrize("chunk", [None, 7])
def test_analytic_reference_term_gives_the_same_chains(chunk):
    """reference_sigma: the prior's Gaussian term differentiated analytically (fewer operations
    per step) gives the chains of the full log-prior through autograd, same seed."""

    def rest(z):  # log_prior without its Gaussian term (a constant)
        return z.new_full(z.shape[:1], -0.5 * D_LATENT * math.log(2 * math.pi))

    runs = _same_seed_chains(
        dict(log_prior=log_prior, reference_sigma=None),
        dict(log_prior=rest, reference_sigma=1.0),
        chunk_size=chunk,
    )
    assert torch.allclose(runs[0].z, runs[1].z, atol=1e-5)
    assert torch.allclose(runs[0].acceptance_rate, runs[1].acceptance_rate)


def test_chunked_model_gives_the_same_losses_and_gradients():
    args = tiny_latent_ebm_args(hidden=8, steps=4)
    models = []
    for chunk in (None, 5):
        torch.manual_seed(0)
        models.append(ThermoLatentEBM(num_temperatures=4, swap_every=2, chunk_size=chunk, **args))
    x = torch.randn(6, 2)
    grads = []
    for model in models:
        losses = model.learning_losses(x, torch.Generator().manual_seed(3))
        model.zero_grad()
        (losses["energy"].mean() + losses["generator"].mean()).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------- the model


def test_bad_ladder_arguments():
    for kwargs, msg in [
        ({"ladder": "learned"}, "ladder must be 'fixed' or 'adaptive'"),
        ({"adapt_every": 0}, "adapt_every must be an int >= 1"),
        ({"adapt_rate": 1.5}, "adapt_rate must be in"),
        ({"swap_every": 0}, "swap_every must be an int >= 1"),
        ({"swap_every": 2, "chain_init": "annealed"}, "needs chain_init='independent'"),
        ({"chunk_size": 0}, "chunk_size must be an int >= 1"),
    ]:
        with pytest.raises(ValueError, match=msg):
            ThermoLatentEBM(**kwargs)


def adaptive_model():
    return ThermoLatentEBM(
        num_temperatures=5,
        ladder="adaptive",
        adapt_every=2,
        swap_every=1,
        **tiny_latent_ebm_args(hidden=8, steps=3),
    )


def test_adaptive_ladder_moves_is_logged_and_resumes_exactly(tmp_path):
    """Five batches an epoch: the ladder moves (every 2 iterations), the temperatures and swap
    rates are logged, and a run resumed from epoch 2's checkpoint ends bit-identical to the
    uninterrupted one, ladder included."""
    trainer, model = fit(adaptive_model, tmp_path / "straight", max_epochs=3)
    uniform = TemperatureLadder(5).t
    assert int(model.ladder_updates) == 15
    assert (model.ladder_t - uniform).abs().max() > 1e-3, model.ladder_t
    assert torch.equal(model.ladder.t, model.ladder_t.cpu())
    metrics = trainer.callback_metrics
    for i in range(5):
        assert math.isclose(
            metrics[f"train/temperature/t{i:02d}"].item(), model.ladder_t[i].item(), abs_tol=0.3
        )
    assert all(f"train/swap_rate/p{i:02d}" in metrics for i in range(4))
    straight = training_state(trainer, model)
    fit(adaptive_model, tmp_path / "first", max_epochs=2)
    resumed = fit(
        adaptive_model, tmp_path / "resumed", 3, ckpt_path=tmp_path / "first" / "last.ckpt"
    )
    assert_identical(straight, training_state(*resumed), "adaptive ThermoLatentEBM")


def test_divergence_names_the_temperatures(tmp_path):
    """Langevin with a step so large that the likelihood's curvature (1 / sigma^2 = 10^4 at t = 1)
    blows up the t = 1 chains but not the prior's (t = 0): the message names that temperature,
    and the error keeps its type and the sampler's own text."""
    args = tiny_latent_ebm_args(hidden=8, steps=30)
    args["posterior_sampler"] = Langevin(30, 0.2)
    torch.manual_seed(0)
    model = ThermoLatentEBM(num_temperatures=3, likelihood_sigma=0.01, **args)
    x = 3 * torch.randn(8, 2)
    with pytest.raises(SamplerDivergenceError) as error:
        model.sample_power_posteriors(x, torch.Generator().manual_seed(0))
    message = str(error.value)
    assert "diverged at temperature(s) " in message, message
    assert "t_2 = 1 (8 of 8)" in message, message
    assert "t_0" not in message.split("temperature(s)")[1].split(";")[0], message
    assert "chains became non-finite" in message  # the sampler's text is kept
