"""Annealed Langevin dynamics (NCSN) against closed forms and the paper's toy experiment.

One level with a Gaussian score is plain ULA with step ``s = alpha / 2``, whose stationary
variance is known exactly; that pins the update ``x + (alpha/2) score + sqrt(alpha) z``. The
two-mode mixture 0.8 N((5,5), I) + 0.2 N((-5,-5), I) (Song and Ermon 2019, section 3.2) shows
what annealing is for: plain Langevin with the exact score cannot move mass between modes
and keeps the weights of its starting points, annealed Langevin recovers 0.8 / 0.2.
"""

import math

import pytest
import torch

from lebm.samplers import SamplerDivergenceError, ScoreSamplerResult, annealed_langevin, langevin
from lebm.schedules import SigmaLadder
from lebm.score_matching import score_from_energy

# ----------------------------------------------------------------------------------------------
# the toy mixture and the exact score of its noise-perturbed versions

WEIGHTS = torch.tensor([0.8, 0.2])
MEANS = torch.tensor([[5.0, 5.0], [-5.0, -5.0]])


def component_logits(x: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log w_k - ||x - m_k||^2 / (2 var) for each component (the shared normaliser dropped),
    and the differences x - m_k, shape (B, 2 components, 2)."""
    d = x.unsqueeze(1) - MEANS
    return WEIGHTS.log() - 0.5 * d.pow(2).sum(-1) / var.unsqueeze(1), d


def mixture_score(x: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """grad log sum_k w_k N(x; m_k, var I) = -sum_k r_k (x - m_k) / var, for x (B, 2), var (B,);
    the responsibility r_1 = sigmoid(logit_1 - logit_2) (a two-way softmax; softmax itself is
    several times slower on small CPU tensors)."""
    logits, d = component_logits(x, var)
    r1 = torch.sigmoid(logits[:, 0] - logits[:, 1]).unsqueeze(1)
    mean_diff = r1 * d[:, 0] + (1 - r1) * d[:, 1]
    return -mean_diff / var.unsqueeze(1)


def perturbed_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Score of the mixture convolved with N(0, sigma^2 I): component variance 1 + sigma^2."""
    return mixture_score(x, 1.0 + sigma**2)


def mixture_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log sum_k w_k N(x; m_k, I) up to a constant, as l_2 + softplus(l_1 - l_2)."""
    logits, _ = component_logits(x, torch.ones(len(x)))
    return logits[:, 1] + torch.nn.functional.softplus(logits[:, 0] - logits[:, 1])


def test_mixture_helpers_match_autograd_and_logsumexp():
    """The hand-written score is the gradient of the log-density (and of its perturbed
    version); the log-density is the log-sum-exp."""
    x = (torch.rand(50, 2, generator=torch.Generator().manual_seed(0)) * 16 - 8).requires_grad_()
    (grad,) = torch.autograd.grad(mixture_log_prob(x).sum(), x)
    assert torch.allclose(mixture_score(x.detach(), torch.ones(50)), grad, atol=1e-5)
    logits, _ = component_logits(x.detach(), torch.ones(50))
    assert torch.allclose(mixture_log_prob(x.detach()), logits.logsumexp(1), atol=1e-5)
    sigma = torch.full((50,), 2.0)
    mixed = WEIGHTS[0] * torch.exp(-0.5 * (x - MEANS[0]).pow(2).sum(1) / 5.0)
    mixed = mixed + WEIGHTS[1] * torch.exp(-0.5 * (x - MEANS[1]).pow(2).sum(1) / 5.0)
    (grad5,) = torch.autograd.grad(mixed.log().sum(), x)
    assert torch.allclose(perturbed_score(x.detach(), sigma), grad5, atol=1e-5)


def weight_of_first_mode(x: torch.Tensor) -> float:
    """Fraction of samples on (5, 5)'s side of the diagonal x1 + x2 = 0."""
    return (x.sum(1) > 0).float().mean().item()


# Song and Ermon's budget, 1000 updates in all, here spread over L = 20 geometric levels from
# 20 (the modes' distance, 14, and more) down to 0.01, 50 updates each, step_lr = 5e-5 (so
# alpha_1 = 200 against a variance of 401 at sigma_1: well inside ULA's stability limit of
# 4 * 401). The weights are settled between sigma ~ 9 (one blob) and sigma ~ 3 (two modes);
# a coarser ladder (10 levels x 100 steps) passes through there too quickly for the chains
# to rebalance and comes out near 0.77. With 20 levels the weight is 0.78 to 0.80 over seeds;
# its sampling standard error with 4000 chains is 0.006.
LADDER = SigmaLadder(sigma_max=20.0, sigma_min=0.01, num_levels=20)
STEPS_EACH = 50
STEP_LR = 5e-5
N_CHAINS = 4000


def uniform_starts(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, 2, generator=g) * 16 - 8  # the square [-8, 8]^2


def test_annealed_langevin_recovers_mixture_weights():
    """Weight of the (5, 5) mode within 0.05 of 0.8, each mode's samples ~ N(m_k, I)."""
    g = torch.Generator().manual_seed(0)
    result = annealed_langevin(
        perturbed_score,
        uniform_starts(N_CHAINS, g),
        LADDER.sigmas,
        STEPS_EACH,
        STEP_LR,
        generator=g,
    )
    x = result.sample
    assert abs(weight_of_first_mode(x) - 0.8) < 0.05
    upper = x[x.sum(1) > 0]
    assert torch.allclose(upper.mean(0), MEANS[0], atol=0.1)
    assert torch.allclose(upper.std(0), torch.ones(2), atol=0.1)
    lower = x[x.sum(1) <= 0]
    assert torch.allclose(lower.mean(0), MEANS[1], atol=0.15)


def test_plain_langevin_gets_mixture_weights_wrong():
    """Same budget of 1000 updates with the exact clean score (s = 0.05, the paper's
    eps = 0.1): chains stay in the basin they start in, about half each, so the weight is
    near 0.5, far from 0.8."""
    g = torch.Generator().manual_seed(0)
    x = langevin(
        mixture_log_prob, uniform_starts(2000, g), LADDER.num_levels * STEPS_EACH, 0.05, generator=g
    ).sample
    weight = weight_of_first_mode(x)
    assert abs(weight - 0.5) < 0.1
    assert abs(weight - 0.8) > 0.2
    upper = x[x.sum(1) > 0]
    assert torch.allclose(upper.mean(0), MEANS[0], atol=0.15)  # each mode itself is right


# ----------------------------------------------------------------------------------------------
# the update rule


def test_single_level_is_ula_with_half_alpha():
    """With one level alpha = step_lr; on N(mu, v) the update is ULA with s = alpha / 2,
    stationary variance 1 / (1/v - s / (2 v^2)) = 1.25 at v = 1, alpha = 0.8 (the
    convention x + alpha score + sqrt(2 alpha) z would give 1.67). 20k chains: se 0.013."""
    mu = torch.tensor([3.0, -1.0])

    def score(x, sigma):
        return -(x - mu)

    g = torch.Generator().manual_seed(0)
    x = annealed_langevin(
        score, torch.randn(20_000, 2, generator=g), [0.5], 200, 0.8, generator=g
    ).sample
    expected = 1.0 / (1.0 - 0.4 / 2)
    assert torch.allclose(x.var(0), torch.full((2,), expected), atol=0.05)
    assert torch.allclose(x.mean(0), mu, atol=0.03)


def test_step_sizes_scale_with_sigma_squared():
    """Level i uses alpha_i = step_lr sigma_i^2 / sigma_L^2: with a zero score one level's
    noise variance after n steps is n alpha_i (here 10 * 0.1 * 4 = 4 for sigma = 2, then
    + 10 * 0.1 for sigma = 1: total 5)."""
    g = torch.Generator().manual_seed(0)
    x = annealed_langevin(
        lambda x, sigma: torch.zeros_like(x),
        torch.zeros(40_000, 1),
        [2.0, 1.0],
        10,
        0.1,
        generator=g,
    ).sample
    assert abs(x.var().item() - 5.0) < 0.15


def test_score_sees_each_level_in_order():
    calls = []

    def score(x, sigma):
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype
        assert (sigma == sigma[0]).all()
        calls.append(sigma[0].item())
        return -x

    sigmas = SigmaLadder(1.0, 0.1, 3).sigmas
    result = annealed_langevin(
        score, torch.randn(5, 2, 3), sigmas, 4, 1e-3, final_denoise=True, return_trajectory=True
    )
    expected = [s for s in sigmas.tolist() for _ in range(4)] + [sigmas[-1].item()]
    assert calls == pytest.approx(expected, rel=1e-6)
    assert result.trajectory.shape == (3 * 4 + 2, 5, 2, 3)
    assert torch.equal(result.trajectory[-1], result.sample)


def test_final_denoise_is_tweedie_step():
    """With no Langevin updates the output is x + sigma_L^2 score(x, sigma_L); on Gaussian data
    N(mu, s^2) that is E[x0 | x] = mu + s^2 / (s^2 + sigma^2) (x - mu)."""
    mu, s2 = 2.0, 0.5
    sigmas = torch.tensor([1.0, 0.3])

    def score(x, sigma):
        return -(x - mu) / (s2 + sigma.unsqueeze(1) ** 2)

    x0 = torch.randn(100, 3)
    out = annealed_langevin(score, x0, sigmas, 0, 0.1, final_denoise=True).sample
    expected = mu + s2 / (s2 + 0.09) * (x0 - mu)
    assert torch.allclose(out, expected, atol=1e-6)
    plain = annealed_langevin(score, x0, sigmas, 0, 0.1).sample
    assert torch.equal(plain, x0)


def test_energy_based_score_under_no_grad():
    """An energy network's score (autograd inside) works in the no-grad sampler:
    E = |x - 1|^2 / 2 is N(1, I); ULA at alpha = 0.2 has variance 1 / (1 - 0.05)."""
    energy = score_from_energy(lambda x: 0.5 * (x - 1.0).pow(2).sum(1))
    g = torch.Generator().manual_seed(1)
    result = annealed_langevin(
        lambda x, sigma: energy(x),
        torch.randn(10_000, 2, generator=g),
        [0.1],
        100,
        0.2,
        generator=g,
    )
    assert not result.sample.requires_grad
    assert torch.allclose(result.sample.mean(0), torch.ones(2), atol=0.04)
    assert torch.allclose(result.sample.var(0), torch.full((2,), 1 / 0.95), atol=0.06)


def test_result_fields_and_reproducibility():
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return annealed_langevin(
            perturbed_score, uniform_starts(64, g), LADDER.sigmas[:5], 5, STEP_LR, generator=g
        )

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a.sample, b.sample)
    assert not torch.allclose(a.sample, c.sample)
    assert isinstance(a, ScoreSamplerResult)
    assert a.grad_norm.shape == (64,) and (a.grad_norm > 0).all()
    assert torch.isnan(a.log_prob).all() and torch.isnan(a.log_prob_start).all()
    assert set(a.diagnostics()) == {"grad_norm"}
    assert a.trajectory is None


def test_divergence_is_raised_with_the_level():
    """step_lr far past stability (alpha_1 = 1e4 on a unit-variance score) overflows."""
    with pytest.raises(SamplerDivergenceError, match=r"level 0 \(sigma 10.*step_lr"):
        annealed_langevin(lambda x, sigma: -x, torch.randn(8, 2), [10.0, 1.0], 200, 100.0)

    def nan_for_chain_3(x, sigma):
        out = -x
        if sigma[0] < 1:
            out[3] = float("nan")
        return out

    with pytest.raises(SamplerDivergenceError, match=r"1 of 8 chains.*level 1.*step 0, chain 3"):
        annealed_langevin(nan_for_chain_3, torch.randn(8, 2), [1.0, 0.5], 3, 0.01)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigmas=[0.1, 1.0]), "non-increasing"),
        (dict(sigmas=[1.0, -0.1]), "positive"),
        (dict(sigmas=[]), "non-empty"),
        (dict(step_lr=0.0), "step_lr"),
        (dict(n_steps_each=-1), "n_steps_each"),
    ],
)
def test_argument_errors(kwargs, match):
    args = dict(sigmas=[1.0, 0.1], n_steps_each=2, step_lr=0.01) | kwargs
    with pytest.raises(ValueError, match=match):
        annealed_langevin(lambda x, s: -x, torch.zeros(3, 2), **args)


def test_score_of_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match="shaped like x"):
        annealed_langevin(lambda x, s: x.sum(1), torch.zeros(3, 2), [1.0], 2, 0.01)


def test_float_sigmas_tensor_on_ladder_dtype():
    """A float64 ladder drives float32 chains; sigma reaches the score in the chain dtype."""
    seen = []
    annealed_langevin(
        lambda x, s: seen.append(s.dtype) or -x,
        torch.zeros(3, 2),
        SigmaLadder(1.0, 0.5, 2).sigmas,
        1,
        0.01,
    )
    assert seen == [torch.float32, torch.float32]
    assert math.isclose(SigmaLadder(1.0, 0.5, 2).sigmas[1].item(), 0.5)
