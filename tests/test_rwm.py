"""Random-walk Metropolis against closed forms.

The Metropolis test with a symmetric proposal leaves the target invariant, so on a Gaussian
N(mu, Sigma) the chains reach mu and Sigma exactly (no step-size bias); what is left is Monte
Carlo error and the distance still to travel. With N independent chains the standard error of
a mean is sqrt(Sigma_ii / N), of a covariance entry sqrt((Sigma_ii Sigma_jj + Sigma_ij^2) / N);
the tolerances below are about 4 of those.

In stationarity on N(0, 1) with proposal std sigma the expected acceptance rate has the closed
form (2 / pi) arctan(2 / sigma) (the probability that |x'| < |x| or the ratio test passes,
integrated over the joint Gaussian law of x and x' - x).
"""

import math

import pytest
import torch

from lebm.components import as_instance, to_config
from lebm.samplers import (
    RandomWalkMetropolis,
    Sampler,
    SamplerDivergenceError,
    random_walk_metropolis,
)
from tests.test_samplers import CASES, gaussian_log_prob

N_CHAINS = 10_000

# step size s (proposal std sqrt(2 s)), proposals, tolerances on the mean and the covariance
SETTINGS = {
    # N(mu, 0.25 I) in 3-D: proposal std 0.6 (about 2.4 sigma / sqrt(d), the classic optimum);
    # standard errors 0.005 (mean) and 0.0035 (covariance)
    "isotropic": (0.18, 300, 0.02, 0.015),
    # correlation 0.95: proposal std 0.3, set by the narrow direction (std 0.22); the wide one
    # (std 1.4) is crossed by a random walk in about (1.4 / 0.3)^2 / acceptance = 60 proposals,
    # so 1500 are 25 crossings. Standard errors 0.01 (mean) and 0.014 (covariance).
    "correlated": (0.045, 1500, 0.04, 0.06),
}


@pytest.mark.parametrize("case", CASES)
def test_recovers_gaussian(case):
    mean, cov = CASES[case]
    step_size, steps, mean_tol, cov_tol = SETTINGS[case]
    g = torch.Generator().manual_seed(0)
    log_prob, _ = gaussian_log_prob(mean, cov)
    z0 = torch.randn(N_CHAINS, len(mean), generator=g)
    result = random_walk_metropolis(log_prob, z0, steps, step_size, generator=g)
    z = result.sample
    assert (z.mean(0) - mean).abs().max() < mean_tol
    assert (torch.cov(z.T) - cov).abs().max() < cov_tol
    assert 0.15 < result.acceptance_rate.mean() < 0.7
    assert torch.allclose(result.log_prob, log_prob(z))


@pytest.mark.parametrize("sigma", [0.5, 2.4, 6.0])
def test_acceptance_rate_matches_closed_form(sigma):
    """Stationary start on N(0, 1): acceptance (2 / pi) arctan(2 / sigma) within 0.01 (the
    standard error of 20,000 chains x 20 proposals is below 0.003)."""
    g = torch.Generator().manual_seed(1)
    z0 = torch.randn(20_000, 1, generator=g)
    log_prob = lambda z: -0.5 * z.pow(2).sum(1)  # noqa: E731
    result = random_walk_metropolis(log_prob, z0, 20, sigma**2 / 2, generator=g)
    expected = 2 / math.pi * math.atan(2 / sigma)
    assert abs(result.acceptance_rate.mean().item() - expected) < 0.01
    assert abs(result.sample.var().item() - 1.0) < 0.04


def test_rejects_proposals_outside_the_support_and_raises_at_a_bad_start():
    """Uniform on [0, 1]^2 (log-density -inf outside): chains never leave it, and their law stays
    uniform (means 0.5, variances 1/12); a chain starting outside raises, naming the sampler."""

    def log_prob(z):
        inside = ((z >= 0) & (z <= 1)).all(1)
        return torch.where(inside, 0.0, -math.inf)

    g = torch.Generator().manual_seed(2)
    z0 = torch.rand(8000, 2, generator=g)
    result = random_walk_metropolis(log_prob, z0, 50, 0.02, generator=g)
    z = result.sample
    assert ((z >= 0) & (z <= 1)).all()
    assert (z.mean(0) - 0.5).abs().max() < 0.02
    assert (z.var(0) - 1 / 12).abs().max() < 0.01
    assert 0.3 < result.acceptance_rate.mean() < 0.9
    with pytest.raises(SamplerDivergenceError, match="RandomWalkMetropolis.*initial"):
        random_walk_metropolis(log_prob, z0 + 2.0, 3, 0.02, generator=g)


def test_per_chain_step_sizes_and_no_gradient_work():
    """A (B,) step size gives each chain its own proposal width (the tiny one accepts almost
    always, the huge one almost never); no .grad reaches a parameter of the log-density."""
    weight = torch.nn.Parameter(torch.ones(2))
    log_prob = lambda z: -0.5 * (weight * z.pow(2)).sum(1)  # noqa: E731
    g = torch.Generator().manual_seed(3)
    z0 = torch.randn(2000, 2, generator=g)
    s = torch.cat([torch.full((1000,), 1e-6), torch.full((1000,), 1e3)])
    result = random_walk_metropolis(log_prob, z0, 20, s, generator=g)
    assert result.acceptance_rate[:1000].mean() > 0.99
    assert result.acceptance_rate[1000:].mean() < 0.05
    assert weight.grad is None and not result.sample.requires_grad
    assert "grad_norm" not in result.diagnostics()
    assert set(result.diagnostics()) == {"log_prob_start", "log_prob_end", "acceptance_rate"}


def test_seeded_runs_are_reproducible_and_trajectory_has_every_state():
    log_prob = lambda z: -0.5 * z.pow(2).sum(1)  # noqa: E731
    z0 = torch.zeros(16, 3)
    a = random_walk_metropolis(
        log_prob, z0, 7, 0.1, generator=torch.Generator().manual_seed(4), return_trajectory=True
    )
    b = random_walk_metropolis(log_prob, z0, 7, 0.1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.sample, b.sample)
    assert a.trajectory.shape == (8, 16, 3) and torch.equal(a.trajectory[-1], a.sample)


def test_sampler_object_by_class_path_and_bad_arguments():
    sampler = as_instance(
        {"class_path": "lebm.samplers.RandomWalkMetropolis", "init_args": {"n_steps": 5}},
        Sampler,
    )
    assert sampler == RandomWalkMetropolis(5, 0.01)
    assert to_config(sampler) == {
        "class_path": "lebm.samplers.objects.RandomWalkMetropolis",
        "init_args": {
            "n_steps": 5,
            "step_size": 0.01,
            "jump_prob": 0.0,
            "jump_distribution": "gaussian",
            "jump_scale": 1.0,
            "compile": False,
        },
    }
    result = sampler(lambda z: -z.pow(2).sum(1), torch.zeros(4, 2), n_steps=3)
    assert result.sample.shape == (4, 2) and result.acceptance_rate.shape == (4,)
    with pytest.raises(ValueError, match="step_size must be > 0"):
        RandomWalkMetropolis(5, 0.0)
    with pytest.raises(ValueError, match="jump_prob must be in"):
        RandomWalkMetropolis(5, 0.1, jump_prob=1.5)
    with pytest.raises(ValueError, match="jump_distribution must be"):
        RandomWalkMetropolis(5, 0.1, jump_prob=0.1, jump_distribution="cauchy")
    with pytest.raises(ValueError, match="jump_scale must be > 0"):
        random_walk_metropolis(lambda z: -z.pow(2).sum(1), torch.zeros(2, 1), 1, 0.1, jump_scale=0)
    with pytest.raises(ValueError, match="n_steps must be an int >= 0"):
        random_walk_metropolis(lambda z: -z.pow(2).sum(1), torch.zeros(2, 1), -1, 0.1)
    with pytest.raises(ValueError, match="one value per chain"):
        random_walk_metropolis(lambda z: -z.pow(2), torch.zeros(2, 3), 1, 0.1)


# 0.8 N(-4, 0.3^2) + 0.2 N(1.5, 0.3^2): the modes are 18 sds apart, so a local chain never
# crosses; placed asymmetrically about q's centre, so that a sampler leaving out the Hastings
# ratio q(z) / q(z') of the Gaussian jumps gets the weights wrong (q(-4) / q(1.5) = 0.47 at
# scale 3: the right mode would hold about a third of the mass)
def _two_modes(z):
    x = z[:, 0]
    left = math.log(0.8) - 0.5 * ((x + 4) / 0.3) ** 2
    right = math.log(0.2) - 0.5 * ((x - 1.5) / 0.3) ** 2
    return torch.logaddexp(left, right)


@pytest.mark.parametrize(("distribution", "scale"), [("gaussian", 3.0), ("uniform", 6.0)])
def test_jumps_move_mass_between_separated_modes(distribution, scale):
    """Every chain starts in the left mode. Plain random-walk Metropolis leaves the right mode
    empty; with independence jumps the chains reach the true weights 0.8 / 0.2 (standard error
    of 10,000 chains 0.004; tolerance 0.02) and each mode keeps its shape (mean within 0.02,
    std within 0.02 of 0.3). Jumps land in one of the modes' cores (+-2 sds) 7-14% (Gaussian q)
    or 10% (uniform q) of the time, so the weights relax within tens of steps and 600 steps
    are many relaxation times."""
    g = torch.Generator().manual_seed(0)
    z0 = -4.0 + 0.3 * torch.randn(N_CHAINS, 1, generator=g)
    plain = random_walk_metropolis(_two_modes, z0, 600, 0.02, generator=g)
    assert (plain.sample[:, 0] > 0).float().mean() < 0.001
    jumped = random_walk_metropolis(
        _two_modes,
        z0,
        600,
        0.02,
        jump_prob=0.2,
        jump_distribution=distribution,
        jump_scale=scale,
        generator=g,
    )
    x = jumped.sample[:, 0]
    right = x > 0
    assert abs(right.float().mean().item() - 0.2) < 0.02
    for side, centre in ((right, 1.5), (~right, -4.0)):
        assert abs(x[side].mean().item() - centre) < 0.02
        assert abs(x[side].std().item() - 0.3) < 0.02
    assert torch.allclose(jumped.log_prob, _two_modes(jumped.sample))


def test_uniform_jumps_never_leave_from_outside_their_box():
    """q(z) = 0 outside [-a, a]^D, so the Hastings ratio q(z) / q(z') is 0 there: a chain
    outside the box never jumps (here every proposal is a jump, so it stays where it is)."""
    g = torch.Generator().manual_seed(1)
    z0 = torch.full((500, 2), 3.0)
    result = random_walk_metropolis(
        lambda z: torch.zeros(len(z)),
        z0,
        50,
        1e-8,
        jump_prob=1.0,
        jump_distribution="uniform",
        jump_scale=2.0,
        generator=g,
    )
    assert torch.equal(result.sample, z0) and result.acceptance_rate.max() == 0
