"""Samplers against closed forms.

For a Gaussian target N(mu, Sigma) with precision P, ULA with step s is a linear
autoregression whose stationary law is N(mu, (P - s P^2 / 2)^{-1}): it is biased, by a known
amount. MALA's stationary law is the target itself. These tests check both facts.
"""

import pytest
import torch
from torch import nn

from lebm.samplers import SamplerDivergenceError, langevin, mala

N_CHAINS = 20_000


def gaussian_log_prob(mean: torch.Tensor, cov: torch.Tensor):
    precision = torch.linalg.inv(cov)

    def log_prob(z):
        d = z - mean
        return -0.5 * ((d @ precision) * d).sum(1)

    return log_prob, precision


def ula_stationary_cov(cov: torch.Tensor, s: float) -> torch.Tensor:
    precision = torch.linalg.inv(cov)
    return torch.linalg.inv(precision - s * precision @ precision / 2)


def run(mean, cov, steps, s, mh, seed=0, n=N_CHAINS):
    log_prob, _ = gaussian_log_prob(mean, cov)
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, len(mean), generator=g)
    return langevin(log_prob, z0, steps, s, mh=mh, generator=g)


CASES = {
    "isotropic": (torch.tensor([2.0, -1.0, 0.5]), 0.25 * torch.eye(3)),
    "correlated": (torch.tensor([1.0, -2.0]), torch.tensor([[1.0, 0.95], [0.95, 1.0]])),
}


@pytest.mark.parametrize("mh", [False, True], ids=["ula", "mala"])
@pytest.mark.parametrize("case", CASES)
def test_small_step_recovers_gaussian(case, mh):
    """Mean within 0.03 and every covariance entry within 0.03 (target variances 0.25 or 1)."""
    mean, cov = CASES[case]
    # slowest mode of the correlated case relaxes at rate s / 1.95: 1500 steps of 0.01 is e^-7.7
    result = run(mean, cov, steps=1500, s=0.01, mh=mh)
    z = result.sample
    assert torch.allclose(z.mean(0), mean, atol=0.03)
    assert torch.allclose(torch.cov(z.T), cov, atol=0.03)
    if mh:
        assert result.acceptance_rate.mean() > 0.9


def test_ula_matches_its_closed_form_bias():
    """ULA's covariance equals (P - s P^2 / 2)^{-1} to within 4% at s = 0.02 on the correlated case."""
    mean, cov = CASES["correlated"]
    s = 0.02
    z = run(mean, cov, steps=800, s=s, mh=False).sample
    expected = ula_stationary_cov(cov, s)
    assert torch.allclose(torch.cov(z.T), expected, rtol=0.04, atol=0.004)


def test_large_step_mala_unbiased_ula_biased():
    """N(0, 1) at s = 0.8: ULA's variance is 1 / (1 - s/2) = 1.667; MALA keeps 1."""
    mean, cov = torch.zeros(1), torch.eye(1)
    ula = run(mean, cov, steps=200, s=0.8, mh=False).sample
    mala_result = run(mean, cov, steps=200, s=0.8, mh=True)
    assert abs(ula.var().item() - 1 / (1 - 0.4)) < 0.06
    assert abs(mala_result.sample.var().item() - 1.0) < 0.05
    assert abs(mala_result.sample.mean().item()) < 0.03
    assert 0.3 < mala_result.acceptance_rate.mean().item() < 0.95


def test_per_chain_step_sizes_in_one_call():
    """Two step sizes sharing one tensor each reach their own ULA variance 1 / (1 - s/2)."""
    half = N_CHAINS // 2
    s = torch.cat([torch.full((half,), 0.1), torch.full((half,), 1.0)])
    g = torch.Generator().manual_seed(1)
    z = langevin(
        lambda z: -0.5 * z.pow(2).sum(1), torch.randn(2 * half, 1, generator=g), 150, s, generator=g
    ).sample
    assert abs(z[:half].var().item() - 1 / (1 - 0.05)) < 0.05
    assert abs(z[half:].var().item() - 1 / (1 - 0.5)) < 0.1


def test_any_event_shape():
    """Chains of shape (B, 2, 3) work; one chain per batch element."""
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(4000, 2, 3, generator=g)
    result = mala(lambda z: -0.5 * (z - 3).pow(2).flatten(1).sum(1), z0, 300, 0.1, generator=g)
    assert result.sample.shape == (4000, 2, 3)
    assert torch.allclose(result.sample.mean(0), torch.full((2, 3), 3.0), atol=0.1)


@pytest.mark.parametrize("mh", [False, True])
def test_seeded_runs_are_reproducible(mh):
    mean, cov = CASES["correlated"]
    a = run(mean, cov, 20, 0.05, mh, seed=3, n=64).sample
    b = run(mean, cov, 20, 0.05, mh, seed=3, n=64).sample
    c = run(mean, cov, 20, 0.05, mh, seed=4, n=64).sample
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


class CountingIdentity(torch.autograd.Function):
    forwards = 0
    backwards = 0

    @staticmethod
    def forward(ctx, x):
        CountingIdentity.forwards += 1
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        CountingIdentity.backwards += 1
        return grad


@pytest.mark.parametrize("mh", [False, True])
def test_one_backward_per_step_and_no_parameter_grads(mh):
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))

    def log_prob(z):
        return net(CountingIdentity.apply(z)).squeeze(-1) - 0.5 * z.pow(2).sum(1)

    CountingIdentity.forwards = CountingIdentity.backwards = 0
    steps = 7
    result = langevin(log_prob, torch.randn(5, 3), steps, 0.01, mh=mh, return_trajectory=True)
    # ULA: gradients at z_0 .. z_{n-1}; the forward at z_n is deferred until log_prob is read
    # (once, then cached). MALA also needs the gradient at each proposal for the reverse-move
    # density, so one more (at z_0) than ULA.
    assert CountingIdentity.backwards == steps + int(mh)
    assert CountingIdentity.forwards == steps + int(mh)
    expected_final = log_prob(result.sample).detach()
    CountingIdentity.forwards = 0
    assert torch.allclose(result.log_prob, expected_final) and result.log_prob.shape == (5,)
    assert CountingIdentity.forwards == int(not mh)
    assert all(p.grad is None for p in net.parameters())
    assert result.trajectory.shape == (steps + 1, 5, 3)
    assert not result.sample.requires_grad


def test_diagnostics():
    mean, cov = torch.zeros(2), torch.eye(2)
    result = run(mean, cov, 50, 0.1, mh=True, n=500)
    diag = result.diagnostics()
    assert set(diag) == {"log_prob_start", "log_prob_end", "grad_norm", "acceptance_rate"}
    # chains start at N(0, I) = the target, so E[log pi] = -d/2 = -1 at both ends
    assert abs(diag["log_prob_start"].item() + 1) < 0.15
    assert abs(diag["log_prob_end"].item() + 1) < 0.15
    # E||z|| for a 2-D standard normal is sqrt(pi / 2)
    assert abs(diag["grad_norm"].item() - (torch.pi / 2) ** 0.5) < 0.1
    assert "acceptance_rate" not in run(mean, cov, 5, 0.1, mh=False, n=10).diagnostics()


def test_divergence_raises_with_step_and_advice():
    """N(0, 0.01^2) with s = 1 multiplies z by ~1e4 per step: overflows in a few steps."""
    log_prob = lambda z: -0.5 * z.pow(2).sum(1) / 1e-4  # noqa: E731
    with pytest.raises(
        SamplerDivergenceError, match=r"non-finite \(first at step \d+.*step_size 1"
    ):
        langevin(log_prob, torch.randn(8, 2), 100, 1.0)


def test_mala_rejects_nonfinite_proposals():
    log_prob = lambda z: -0.5 * z.pow(2).sum(1) / 1e-4  # noqa: E731
    z0 = torch.randn(8, 2) * 0.01
    result = mala(log_prob, z0, 20, 1.0)
    assert torch.isfinite(result.sample).all()
    assert result.acceptance_rate.max() < 0.2


def test_bad_arguments():
    log_prob = lambda z: -z.pow(2).sum(1)  # noqa: E731
    with pytest.raises(ValueError, match="step_size must be positive"):
        langevin(log_prob, torch.randn(4, 2), 5, -0.1)
    with pytest.raises(ValueError, match=r"step_size must be a float or a tensor of shape \(4,\)"):
        langevin(log_prob, torch.randn(4, 2), 5, torch.ones(3))
    with pytest.raises(ValueError, match="n_steps must be >= 0"):
        langevin(log_prob, torch.randn(4, 2), -1, 0.1)
    with pytest.raises(ValueError, match="one value per chain"):
        langevin(lambda z: -z.pow(2), torch.randn(4, 2), 5, 0.1)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode=False"):
        langevin(log_prob, torch.randn(4, 2), 5, 0.1)


def test_sampling_stays_fp32_under_autocast():
    net = nn.Linear(4, 1)
    log_prob = lambda z: net(z).squeeze(-1) - 0.5 * z.pow(2).sum(1)  # noqa: E731
    z0 = torch.randn(16, 4)
    plain = langevin(log_prob, z0, 10, 0.05, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = langevin(log_prob, z0, 10, 0.05, generator=torch.Generator().manual_seed(0))
    assert mixed.sample.dtype == torch.float32
    assert torch.equal(plain.sample, mixed.sample)
