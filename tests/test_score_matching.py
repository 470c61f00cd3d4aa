"""Score-matching objectives against closed forms.

On Gaussian data N(mu, Sigma) with a linear score s(x) = A x + b every objective is quadratic
in (A, b), so one Newton step from zero lands exactly on the minimiser of the sample loss.
The minimisers must be the true scores: -Sigma^{-1}(x - mu) for exact and sliced score
matching, the score of N(mu, Sigma + sigma^2 I) for denoising score matching at level sigma.
"""

import pytest
import torch
from torch import nn

from lebm.schedules import SigmaLadder
from lebm.score_matching import (
    denoising_score_matching,
    exact_score_matching,
    score_from_energy,
    score_matching_loss,
    sliced_score_matching,
)

MU = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, -0.3], [0.0, -0.3, 0.5]], dtype=torch.float64)
D = 3


def gaussian_data(n: int, seed: int = 0) -> torch.Tensor:
    # a seed range of its own: noise drawn with small seeds must not be the data's own noise
    g = torch.Generator().manual_seed(10_000 + seed)
    return MU + torch.randn(n, D, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(SIGMA).T


def linear_score(theta: torch.Tensor):
    """s(x) = A x + b with theta = (A.flatten(), b)."""
    A, b = theta[: D * D].view(D, D), theta[D * D :]
    return lambda x: x @ A.T + b


def newton_minimiser(loss_of_theta, num_params: int) -> torch.Tensor:
    """Exact minimiser of a quadratic function of theta: -H^{-1} g at theta = 0."""
    theta0 = torch.zeros(num_params, dtype=torch.float64)
    hess = torch.autograd.functional.hessian(loss_of_theta, theta0)
    theta = theta0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_of_theta(theta), theta)
    return -torch.linalg.solve(hess, grad)


def split(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return theta[: D * D].view(D, D), theta[D * D :]


TRUE_A = -torch.linalg.inv(SIGMA)
TRUE_B = torch.linalg.inv(SIGMA) @ MU


# ----------------------------------------------------------------------------------------------
# exact score matching


def test_exact_sm_value_for_linear_score():
    """J = 1/2 ||A x + b||^2 + tr(A) exactly (the Jacobian of a linear score is A)."""
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(D * D + D, generator=g, dtype=torch.float64)
    x = gaussian_data(7)
    A, b = split(theta)
    expected = 0.5 * (x @ A.T + b).pow(2).sum(1) + torch.trace(A)
    loss = exact_score_matching(linear_score(theta), x)
    assert loss.shape == (7,)
    assert torch.allclose(loss, expected, rtol=1e-12)


def test_exact_sm_minimiser_is_the_true_score():
    """The minimiser is A = -S^{-1}, b = S^{-1} xbar for the sample's (1/N) covariance S
    (to 1e-8), and within 0.05 of -Sigma^{-1}, Sigma^{-1} mu (N = 20000, errors ~ 0.01)."""
    x = gaussian_data(20_000)
    theta = newton_minimiser(lambda th: exact_score_matching(linear_score(th), x).mean(), D * D + D)
    A, b = split(theta)
    xbar = x.mean(0)
    S = (x - xbar).T @ (x - xbar) / len(x)
    assert torch.allclose(A, -torch.linalg.inv(S), atol=1e-8)
    assert torch.allclose(b, torch.linalg.inv(S) @ xbar, atol=1e-8)
    assert torch.allclose(A, TRUE_A, atol=0.05)
    assert torch.allclose(b, TRUE_B, atol=0.05)


def test_exact_sm_trains_a_network_and_is_detached_under_no_grad():
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    x = torch.randn(10, 2)
    loss = exact_score_matching(net, x)
    loss.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with torch.no_grad():
        quiet = exact_score_matching(net, x)
    assert not quiet.requires_grad
    assert torch.allclose(quiet, loss.detach())


def test_exact_sm_refuses_high_dimension():
    with pytest.raises(ValueError, match="sliced_score_matching"):
        exact_score_matching(lambda x: -x, torch.zeros(2, 65))
    exact_score_matching(lambda x: -x, torch.zeros(2, 65), max_dim=65)
    # images count every pixel
    with pytest.raises(ValueError, match="dimension 192"):
        exact_score_matching(lambda x: -x, torch.zeros(2, 3, 8, 8))


def test_inference_mode_is_a_clear_error():
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode=False"):
        exact_score_matching(lambda x: -x, torch.zeros(2, 2))


# ----------------------------------------------------------------------------------------------
# sliced score matching


class MLPScore(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(D, 32), nn.Tanh(), nn.Linear(32, D)).double()

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("variance_reduction", [True, False], ids=["vr", "plain"])
@pytest.mark.parametrize("distribution", ["gaussian", "rademacher"])
def test_sliced_equals_exact_in_expectation(distribution, variance_reduction):
    """For a fixed non-linear network, the average over 20000 projections of each sample's
    sliced loss is within 4 standard errors of its exact loss."""
    score = MLPScore()
    x = gaussian_data(6, seed=1)
    exact = exact_score_matching(score, x).detach()
    reps = 20_000
    per_projection = (
        sliced_score_matching(
            score,
            x.repeat(reps, 1),
            generator=torch.Generator().manual_seed(0),
            distribution=distribution,
            variance_reduction=variance_reduction,
        )
        .detach()
        .view(reps, 6)
    )
    mean, se = per_projection.mean(0), per_projection.std(0) / reps**0.5
    assert ((mean - exact).abs() < 4 * se + 1e-9).all(), (mean, exact, se)
    assert (se < 0.05).all()  # the check has teeth: exact losses differ by more than this
    assert (exact.max() - exact.min()) > 0.2
    # num_projections = M averages M draws of the same estimator (the same stream of v here)
    multi = sliced_score_matching(
        score,
        x,
        num_projections=200,
        generator=torch.Generator().manual_seed(0),
        distribution=distribution,
        variance_reduction=variance_reduction,
    ).detach()
    assert torch.allclose(multi, per_projection[:200].mean(0), rtol=1e-10)


def test_rademacher_vr_is_exact_for_diagonal_jacobian():
    """Rademacher v has v_i^2 = 1, so v^T J v = tr(J) + off-diagonal terms: zero variance for
    an element-wise score s(x) = -x^3 (J = diag(-3 x^2))."""
    x = gaussian_data(5)
    score = lambda x: -(x**3)  # noqa: E731
    exact = exact_score_matching(score, x)
    sliced = sliced_score_matching(score, x, num_projections=3, distribution="rademacher")
    assert torch.allclose(sliced, exact, rtol=1e-12)


@pytest.mark.parametrize(
    "distribution, variance_reduction",
    [("gaussian", True), ("rademacher", True), ("gaussian", False)],
)
def test_sliced_sm_minimiser_is_the_true_score(distribution, variance_reduction):
    """With 20000 points x 4 fixed projections the minimiser is within 0.07 of the true
    linear score (the projection average E[v v^T] = I adds error of order 1/sqrt(80000))."""
    x = gaussian_data(20_000)

    def loss(th):
        return sliced_score_matching(
            linear_score(th),
            x,
            num_projections=4,
            generator=torch.Generator().manual_seed(0),
            distribution=distribution,
            variance_reduction=variance_reduction,
        ).mean()

    A, b = split(newton_minimiser(loss, D * D + D))
    assert torch.allclose(A, TRUE_A, atol=0.07)
    assert torch.allclose(b, TRUE_B, atol=0.07)


def test_sliced_calls_score_on_x_itself():
    """Any event shape; (B,) out; one forward on x's own rows (M = 4), so a per-sample
    condition closed over by the score lines up with its rows."""
    calls = []
    condition = torch.arange(5.0)

    def score(x):
        calls.append(x.shape)
        return -x * condition.view(-1, 1, 1)

    x = torch.randn(5, 2, 3)
    loss = sliced_score_matching(score, x, num_projections=4, distribution="rademacher")
    assert loss.shape == (5,) and calls == [(5, 2, 3)]
    # s = -c x: J = -c I, so v^T J v = -6 c for Rademacher v, and 1/2 ||s||^2 is exact
    expected = -6 * condition + 0.5 * (condition.view(-1, 1, 1) * x).pow(2).flatten(1).sum(1)
    assert torch.allclose(loss, expected, atol=1e-5)


def test_sliced_argument_errors():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="num_projections"):
        sliced_score_matching(lambda x: -x, x, num_projections=0)
    with pytest.raises(ValueError, match="gaussian.*rademacher"):
        sliced_score_matching(lambda x: -x, x, distribution="uniform")
    with pytest.raises(ValueError, match="shaped like its input"):
        sliced_score_matching(lambda x: x[:, :1], x)


# ----------------------------------------------------------------------------------------------
# denoising score matching


def test_dsm_loss_is_weighted_fisher_divergence_to_the_noise():
    """With the caller's levels: the score sees x~ = x + sigma z at sigma = sigmas[levels], and
    the loss is sigma^2 * 1/2 ||s(x~, sigma) + (x~ - x) / sigma^2||^2."""
    sigmas = torch.tensor([2.0, 0.5, 0.1])
    levels = torch.tensor([0, 2, 1, 1, 0])
    x = torch.randn(5, 4)
    seen = {}

    def score(x_noisy, sigma):
        seen.update(x_noisy=x_noisy, sigma=sigma)
        return torch.sin(x_noisy)

    loss = denoising_score_matching(
        score, x, sigmas, levels=levels, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(seen["sigma"], sigmas[levels])
    sigma = seen["sigma"].unsqueeze(1)
    x_noisy = seen["x_noisy"]
    expected = (
        sigma.squeeze(1) ** 2 * 0.5 * (torch.sin(x_noisy) + (x_noisy - x) / sigma**2).pow(2).sum(1)
    )
    assert loss.shape == (5,)
    assert torch.allclose(loss, expected, rtol=1e-5)
    # the noise really has scale sigma: (x~ - x) / sigma is standard normal
    assert ((x_noisy - x) / sigma).abs().max() < 6


def test_dsm_draws_levels_uniformly_when_not_given():
    sigmas = SigmaLadder(1.0, 0.01, 4).sigmas
    seen = []

    def score(x_noisy, sigma):
        seen.append(sigma)
        return torch.zeros_like(x_noisy)

    denoising_score_matching(
        score, torch.zeros(8000, 1), sigmas, generator=torch.Generator().manual_seed(0)
    )
    counts = torch.stack([(seen[0] == s).sum() for s in sigmas.float()])
    assert counts.sum() == 8000 and counts.min() > 1800  # 2000 each, sd 39


def test_dsm_minimiser_is_the_perturbed_score_at_every_level():
    """One linear score per level, fitted jointly: level l's minimiser is the score of
    N(mu, Sigma + sigma_l^2 I). 60000 points, 30000 per level: errors ~ 0.01, tolerance 0.05."""
    x = gaussian_data(60_000)
    sigmas = torch.tensor([1.5, 0.5], dtype=torch.float64)
    levels = torch.arange(len(x)) % 2
    per_level = D * D + D

    def loss(th):
        thetas = th.view(2, per_level)

        def score(x_noisy, sigma):
            idx = (sigma.unsqueeze(1) - sigmas).abs().argmin(1)
            A, b = thetas[idx, : D * D].view(-1, D, D), thetas[idx, D * D :]
            return (A @ x_noisy.unsqueeze(-1)).squeeze(-1) + b

        return denoising_score_matching(
            score, x, sigmas, levels=levels, generator=torch.Generator().manual_seed(0)
        ).mean()

    theta = newton_minimiser(loss, 2 * per_level).view(2, per_level)
    for level, sigma in enumerate(sigmas.tolist()):
        precision = torch.linalg.inv(SIGMA + sigma**2 * torch.eye(D, dtype=torch.float64))
        A, b = split(theta[level])
        assert torch.allclose(A, -precision, atol=0.05), (sigma, A, -precision)
        assert torch.allclose(b, precision @ MU, atol=0.05)


def test_dsm_single_sigma_minimiser_closed_form_2d():
    """Single float sigma, isotropic 2-D data N(m, s^2 I): the fitted A is -1/(s^2 + sigma^2) I
    (tolerance 0.03 with 40000 points)."""
    g = torch.Generator().manual_seed(3)
    m, s2, sigma = torch.tensor([2.0, -1.0], dtype=torch.float64), 0.5, 0.7
    x = m + s2**0.5 * torch.randn(40_000, 2, generator=g, dtype=torch.float64)

    def loss(th):
        A, b = th[:4].view(2, 2), th[4:]
        return denoising_score_matching(
            lambda xn, sg: xn @ A.T + b, x, sigma, generator=torch.Generator().manual_seed(0)
        ).mean()

    theta0 = torch.zeros(6, dtype=torch.float64)
    hess = torch.autograd.functional.hessian(loss, theta0)
    th = theta0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(th), th)
    theta = -torch.linalg.solve(hess, grad)
    expected = -torch.eye(2, dtype=torch.float64) / (s2 + sigma**2)
    assert torch.allclose(theta[:4].view(2, 2), expected, atol=0.03)
    assert torch.allclose(theta[4:], m / (s2 + sigma**2), atol=0.05)


def test_dsm_trains_an_energy_network():
    """Through score_from_energy the DSM loss reaches the energy's parameters."""
    energy = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 1))
    score = score_from_energy(lambda x, sigma: energy(x).squeeze(-1) / sigma)
    loss = denoising_score_matching(score, torch.randn(8, 3), torch.tensor([1.0, 0.1]))
    loss.mean().backward()
    *weights, last_bias = energy.parameters()  # a constant shift of E has no score
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)
    assert last_bias.grad is None or last_bias.grad.abs().sum() == 0


def test_dsm_argument_errors():
    x = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="integer indices"):
        denoising_score_matching(lambda x, s: x, x, torch.tensor([1.0]), levels=torch.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        denoising_score_matching(
            lambda x, s: x, x, torch.tensor([1.0]), levels=torch.zeros(3, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="positive"):
        denoising_score_matching(lambda x, s: x, x, torch.tensor([1.0, -1.0]))


# ----------------------------------------------------------------------------------------------
# score_from_energy and the dispatcher


def test_score_from_energy_of_a_quadratic():
    """E = 1/2 (x - mu)^T P (x - mu) has score -(P + P^T)/2 (x - mu); its parameter gradient
    (create_graph) equals that of the analytic expression."""
    P = nn.Parameter(torch.tensor([[2.0, 0.3], [0.1, 1.0]], dtype=torch.float64))
    mu = torch.tensor([0.5, -1.0], dtype=torch.float64)
    x = gaussian_data(6)[:, :2]

    def energy(z):
        d = z - mu
        return 0.5 * ((d @ P) * d).sum(1)

    score = score_from_energy(energy)(x)
    analytic = -(x - mu) @ ((P + P.T) / 2).T
    assert torch.allclose(score, analytic, rtol=1e-12)
    (g_auto,) = torch.autograd.grad(score.pow(2).sum(), P)
    (g_analytic,) = torch.autograd.grad(analytic.pow(2).sum(), P)
    assert torch.allclose(g_auto, g_analytic, rtol=1e-12)
    with torch.no_grad():
        quiet = score_from_energy(energy)(x)
    assert not quiet.requires_grad and torch.allclose(quiet, analytic.detach())
    with pytest.raises(ValueError, match="one value per sample"):
        score_from_energy(lambda z: z)(x)


def test_exact_sm_of_an_energy_model_recovers_its_precision():
    """Exact SM through score_from_energy (second derivatives) fits a quadratic energy
    E = 1/2 x^T P x - c^T x with P symmetric: the minimiser is P = Sigma^{-1}, c = P mu
    (tolerance 0.05, N = 20000)."""
    x = gaussian_data(20_000)
    rows, cols = torch.triu_indices(D, D)

    def unpack(th):
        P = th.new_zeros(D, D).index_put((rows, cols), th[: len(rows)])
        return P + P.T - torch.diag(P.diagonal()), th[len(rows) :]

    def loss(th):
        P, c = unpack(th)
        energy = lambda z: 0.5 * ((z @ P) * z).sum(1) - z @ c  # noqa: E731
        return exact_score_matching(score_from_energy(energy), x).mean()

    P, c = unpack(newton_minimiser(loss, len(rows) + D))
    precision = torch.linalg.inv(SIGMA)
    assert torch.allclose(P, precision, atol=0.05)
    assert torch.allclose(c, precision @ MU, atol=0.05)


def test_dispatcher_routes_and_validates():
    net = MLPScore()
    x = gaussian_data(4)
    assert torch.equal(score_matching_loss("exact", net, x), exact_score_matching(net, x))
    kw = dict(num_projections=3, distribution="rademacher")
    assert torch.equal(
        score_matching_loss("sliced", net, x, generator=torch.Generator().manual_seed(1), **kw),
        sliced_score_matching(net, x, generator=torch.Generator().manual_seed(1), **kw),
    )
    sigmas = torch.tensor([1.0, 0.1], dtype=torch.float64)
    nc = lambda z, s: net(z) / s.unsqueeze(1)  # noqa: E731
    assert torch.equal(
        score_matching_loss(
            "denoising", nc, x, sigmas=sigmas, generator=torch.Generator().manual_seed(2)
        ),
        denoising_score_matching(nc, x, sigmas, generator=torch.Generator().manual_seed(2)),
    )
    with pytest.raises(ValueError, match="needs sigmas"):
        score_matching_loss("denoising", nc, x)
    with pytest.raises(ValueError, match="only apply to 'denoising'"):
        score_matching_loss("exact", net, x, sigmas=sigmas)
    with pytest.raises(ValueError, match="exact.*sliced.*denoising"):
        score_matching_loss("ratio", net, x)
