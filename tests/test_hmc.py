"""Hamiltonian Monte Carlo against closed forms.

HMC with a Metropolis-Hastings test on the Hamiltonian leaves the target invariant, so on a
Gaussian N(mu, Sigma) its chains reach mu and Sigma exactly (no step-size bias, unlike ULA);
what is left is Monte Carlo error. With N independent chains the standard error of a mean is
sqrt(Sigma_ii / N), of a covariance entry sqrt((Sigma_ii Sigma_jj + Sigma_ij^2) / N); the
tolerances below are about 4 of those.
"""

import math

import pytest
import torch
from torch import nn

from lebm.samplers import SamplerDivergenceError, hmc, mala
from lebm.samplers.hmc import leapfrog
from tests.test_samplers import CASES, gaussian_log_prob

N_CHAINS = 10_000


def run(mean, cov, steps, step_size, n_leapfrog, mass=1.0, seed=0, n=N_CHAINS):
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, len(mean), generator=g)
    log_prob, _ = gaussian_log_prob(mean, cov)
    return hmc(log_prob, z0, steps, step_size, n_leapfrog, mass, generator=g)


# step size, leapfrog steps, proposals, and the tolerances on the mean and the covariance
SETTINGS = {
    # N(mu, 0.25 I) in 3-D, standard errors 0.005 (mean) and 0.0035 (covariance). Frequency 2:
    # a trajectory of length 1 turns each coordinate by 2 rad, so the distance to the target
    # law shrinks by |cos 2| = 0.42 per proposal.
    "isotropic": (0.25, 4, 30, 0.02, 0.015),
    # correlation 0.95, standard errors 0.01 (mean) and 0.014 (covariance). Precision
    # eigenvalues 20 and 0.51 (frequencies 4.5 and 0.72): eps = 0.15 is inside the leapfrog's
    # stability limit 2 / 4.5; 10 steps turn the slow direction by 1.1 rad and the fast one by
    # 2 pi + 0.55. (eps = 0.2 would turn the fast one by almost exactly 3 pi: each proposal
    # nearly mirrors it, and its variance stays at its start value: HMC's resonance.)
    "correlated": (0.15, 10, 40, 0.04, 0.05),
}


@pytest.mark.parametrize("case", CASES)
def test_recovers_gaussian(case):
    mean, cov = CASES[case]
    step_size, n_leapfrog, steps, mean_tol, cov_tol = SETTINGS[case]
    result = run(mean, cov, steps, step_size, n_leapfrog)
    z = result.sample
    assert (z.mean(0) - mean).abs().max() < mean_tol
    assert (torch.cov(z.T) - cov).abs().max() < cov_tol
    assert result.acceptance_rate.mean() > 0.9


def test_diagonal_mass_recovers_very_different_scales():
    """Standard deviations 0.01, 1 and 100: with the precision as mass every coordinate moves
    at frequency 1 and the variances come back to within 6% (standard error 1.4%); a unit mass
    with the same step is unstable in the narrow coordinate and rejects nearly everything."""
    std = torch.tensor([0.01, 1.0, 100.0])
    mean, cov = torch.zeros(3), torch.diag(std**2)
    precision_mass = std.pow(-2)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(N_CHAINS, 3, generator=g) * std
    log_prob, _ = gaussian_log_prob(mean, cov)
    result = hmc(log_prob, z0 * 3, 20, 0.25, 6, precision_mass, generator=g)
    assert torch.allclose(result.sample.var(0), std**2, rtol=0.06)
    assert result.acceptance_rate.mean() > 0.9
    unit = hmc(log_prob, z0, 5, 0.25, 6, 1.0, generator=g)
    assert unit.acceptance_rate.mean() < 0.05


def leapfrog_energy_error(step_size: float, n_leapfrog: int) -> torch.Tensor:
    """|H(end) - H(start)| of one trajectory from 2000 fixed (z, p) on a non-Gaussian target."""

    def log_prob(z):
        return -(0.5 * z.pow(2) + 0.25 * z.pow(4)).sum(1)

    def hamiltonian(z, p):
        return -log_prob(z) + 0.5 * p.pow(2).sum(1)

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    p = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    grad = -(z + z.pow(3))
    z1, p1, lp1, _ = leapfrog(log_prob, z, p, grad, step_size, n_leapfrog)
    assert torch.allclose(lp1, log_prob(z1))
    return (hamiltonian(z1, p1) - hamiltonian(z, p)).abs()


def test_leapfrog_energy_error_is_second_order():
    """Fixed trajectory length 1: halving eps (doubling L) divides the mean |dH| by about 4."""
    coarse = leapfrog_energy_error(0.1, 10).mean().item()
    fine = leapfrog_energy_error(0.05, 20).mean().item()
    assert 3.0 < coarse / fine < 5.0
    assert coarse < 0.05


def test_small_steps_accept_almost_everything():
    mean, cov = CASES["correlated"]
    result = run(mean, cov, steps=10, step_size=0.02, n_leapfrog=5, n=2000)
    assert result.acceptance_rate.mean() > 0.98


def test_one_leapfrog_step_is_mala_with_s_eps_squared_over_two():
    """The docstring's claim, in law: N(0, 1) with MALA at s = 0.8 and HMC with L = 1 at
    eps = sqrt(2 s) have the same acceptance rate and both keep variance 1."""
    log_prob = lambda z: -0.5 * z.pow(2).sum(1)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(N_CHAINS, 1, generator=g)
    by_mala = mala(log_prob, z0, 50, 0.8, generator=g)
    by_hmc = hmc(log_prob, z0, 50, math.sqrt(1.6), 1, generator=g)
    assert abs(by_mala.acceptance_rate.mean() - by_hmc.acceptance_rate.mean()) < 0.01
    assert abs(by_hmc.sample.var().item() - 1.0) < 0.06


def test_seeded_runs_are_reproducible():
    mean, cov = CASES["correlated"]
    a = run(mean, cov, 5, 0.2, 3, seed=3, n=64).sample
    b = run(mean, cov, 5, 0.2, 3, seed=3, n=64).sample
    c = run(mean, cov, 5, 0.2, 3, seed=4, n=64).sample
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_per_chain_step_sizes_match_separate_calls():
    """A (B,) step-size tensor gives each chain exactly what a call with its float gives."""
    log_prob, _ = gaussian_log_prob(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.5, 2.0]]))
    z0 = torch.randn(400, 2, generator=torch.Generator().manual_seed(0))
    steps = torch.cat([torch.full((200,), 0.1), torch.full((200,), 0.9)])

    def call(step_size):
        return hmc(log_prob, z0, 8, step_size, 4, generator=torch.Generator().manual_seed(1))

    both, small, large = call(steps), call(0.1), call(0.9)
    assert torch.equal(both.sample[:200], small.sample[:200])
    assert torch.equal(both.sample[200:], large.sample[200:])
    assert torch.equal(both.acceptance_rate[200:], large.acceptance_rate[200:])
    assert both.acceptance_rate[:200].mean() > both.acceptance_rate[200:].mean()


def test_gradient_evaluations_reused_and_no_parameter_grads():
    """1 + n_steps * L forward and backward passes; the network's parameters get no .grad."""
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    calls = {"forward": 0, "backward": 0}

    def count_backward(grad):
        calls["backward"] += 1
        return grad

    def log_prob(z):
        calls["forward"] += 1
        if z.requires_grad:
            z.register_hook(count_backward)
        return net(z).squeeze(-1) - 0.5 * z.pow(2).sum(1)

    steps, n_leapfrog = 7, 4
    result = hmc(log_prob, torch.randn(5, 3), steps, 0.1, n_leapfrog, return_trajectory=True)
    assert calls == {"forward": 1 + steps * n_leapfrog, "backward": 1 + steps * n_leapfrog}
    assert all(p.grad is None for p in net.parameters())
    assert result.trajectory.shape == (steps + 1, 5, 3)
    assert not result.sample.requires_grad


def test_any_event_shape_and_diagnostics():
    """Chains of shape (B, 2, 3) with a diagonal mass of that event shape; a 2-D standard
    normal started at the target has E[log pi] = -1 and E||grad log pi|| = sqrt(pi / 2)."""
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(2000, 2, 3, generator=g)
    log_prob = lambda z: -0.5 * (z - 3).flatten(1).pow(2).sum(1)  # noqa: E731
    result = hmc(log_prob, z0, 20, 0.3, 5, torch.full((2, 3), 2.0), generator=g)
    assert result.sample.shape == (2000, 2, 3)
    assert torch.allclose(result.sample.mean(0), torch.full((2, 3), 3.0), atol=0.1)

    diag = run(torch.zeros(2), torch.eye(2), 20, 0.3, 5, n=2000).diagnostics()
    assert set(diag) == {"log_prob_start", "log_prob_end", "grad_norm", "acceptance_rate"}
    assert abs(diag["log_prob_start"].item() + 1) < 0.1
    assert abs(diag["log_prob_end"].item() + 1) < 0.1
    assert abs(diag["grad_norm"].item() - math.sqrt(math.pi / 2)) < 0.05


def test_diverging_proposals_are_rejected():
    """N(0, 0.01^2) with eps = 1 multiplies z by ~1e4 per leapfrog step: the trajectories
    overflow, and the chains stay where they are instead of raising."""
    log_prob = lambda z: -0.5 * z.pow(2).sum(1) / 1e-4  # noqa: E731
    z0 = torch.randn(8, 2) * 0.01
    result = hmc(log_prob, z0, 10, 1.0, 20)
    assert torch.equal(result.sample, z0)
    assert result.acceptance_rate.max() == 0
    assert torch.isfinite(result.log_prob).all()


def test_nonfinite_start_raises():
    log_prob = lambda z: -0.5 * z.pow(2).sum(1)  # noqa: E731
    z0 = torch.randn(4, 2)
    z0[2, 1] = float("nan")
    with pytest.raises(
        SamplerDivergenceError,
        match=r"HMC: 1 of 4 chains .*first at the initial log-density, chain 2, step_size 0.1\)",
    ):
        hmc(log_prob, z0, 5, 0.1)
    # |z|^(1/2) is finite at 0 but its gradient is not
    with pytest.raises(SamplerDivergenceError, match=r"first at the initial gradient, chain 0"):
        hmc(lambda z: -z.abs().sqrt().sum(1), torch.zeros(3, 2), 5, 0.1)


def test_bad_arguments():
    log_prob = lambda z: -z.pow(2).sum(1)  # noqa: E731
    z0 = torch.randn(4, 2)
    for n_leapfrog in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n_leapfrog must be an int >= 1"):
            hmc(log_prob, z0, 5, 0.1, n_leapfrog)
    for mass in (0.0, -1.0, float("inf"), torch.tensor([1.0, -1.0])):
        with pytest.raises(ValueError, match="mass must be positive"):
            hmc(log_prob, z0, 5, 0.1, mass=mass)
    with pytest.raises(ValueError, match=r"mass must be a float or a tensor of the event shape"):
        hmc(log_prob, z0, 5, 0.1, mass=torch.ones(3))
    with pytest.raises(ValueError, match="mass must be a float or a tensor"):
        hmc(log_prob, z0, 5, 0.1, mass="1")
    with pytest.raises(ValueError, match="step_size must be positive"):
        hmc(log_prob, z0, 5, 0.0)
    with pytest.raises(ValueError, match="n_steps must be an int >= 0"):
        hmc(log_prob, z0, -1, 0.1)
    with pytest.raises(ValueError, match="one value per chain"):
        hmc(lambda z: -z.pow(2), z0, 5, 0.1)


def test_sampling_stays_fp32_under_autocast():
    net = nn.Linear(4, 1)
    log_prob = lambda z: net(z).squeeze(-1) - 0.5 * z.pow(2).sum(1)  # noqa: E731
    z0 = torch.randn(16, 4)
    plain = hmc(log_prob, z0, 5, 0.1, 3, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = hmc(log_prob, z0, 5, 0.1, 3, generator=torch.Generator().manual_seed(0))
    assert mixed.sample.dtype == torch.float32
    assert torch.equal(plain.sample, mixed.sample)
