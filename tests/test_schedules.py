"""Noise schedules and DDPM ancestral sampling against closed forms.

Forward process: ``q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` with t 0-indexed
(t = 0 is the first noising step). Reverse process: for Gaussian data ``x_0 ~ N(mu, s^2 I)``
the optimal noise predictor is linear in x_t, so the ancestral sampler is a linear-Gaussian
recursion whose output law can be computed exactly; the samples must match it, and it must be
close to ``N(mu, s^2)``.
"""

import math

import pytest
import torch

from lebm.samplers import SamplerDivergenceError, ScoreSamplerResult, ddpm_ancestral
from lebm.schedules import NoiseSchedule, SigmaLadder

# ----------------------------------------------------------------------------------------------
# schedule values


def test_linear_matches_ho_et_al_at_1000_steps():
    """Betas 1e-4 .. 0.02 evenly spaced; abar by an independent running product (4.04e-5)."""
    sch = NoiseSchedule.linear(1000)
    assert sch.num_steps == len(sch) == 1000
    assert sch.betas[0].item() == pytest.approx(1e-4, rel=1e-12)
    assert sch.betas[-1].item() == pytest.approx(0.02, rel=1e-12)
    assert torch.allclose(
        sch.betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64)
    )
    prod, abar = 1.0, []
    for k in range(1000):
        prod *= 1.0 - (1e-4 + k * (0.02 - 1e-4) / 999)
        abar.append(prod)
    assert torch.allclose(sch.alpha_bars, torch.tensor(abar, dtype=torch.float64), rtol=1e-10)
    assert 3.9e-5 < sch.alpha_bars[-1].item() < 4.1e-5
    assert sch.alpha_bars_prev[0] == 1 and torch.equal(sch.alpha_bars_prev[1:], sch.alpha_bars[:-1])
    assert sch.betas.dtype == torch.float64


@pytest.mark.parametrize("num_steps", [25, 50, 100])
def test_rescaled_short_linear_schedule_still_reaches_noise(num_steps):
    """Betas scaled by 1000/T: abar_T < 1e-4; without the rescale a short schedule stays
    mostly signal (abar_T > 0.3)."""
    sch = NoiseSchedule.linear(num_steps)
    scale = 1000 / num_steps
    assert sch.betas[0].item() == pytest.approx(1e-4 * scale)
    assert sch.betas[-1].item() == pytest.approx(0.02 * scale)
    assert sch.alpha_bars[-1].item() < 1e-4
    assert NoiseSchedule.linear(num_steps, rescale=False).alpha_bars[-1].item() > 0.3


def test_cosine_schedule_endpoints():
    """abar_t = f(t+1)/f(0) with f(u) = cos^2(pi/2 (u/T + s)/(1 + s)) except the clipped
    last step; first beta tiny, last beta = max_beta, abar_T ~ 0, betas increasing."""
    T, s = 200, 0.008
    sch = NoiseSchedule.cosine(T, s=s)

    def f(u):
        return math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2

    expected = torch.tensor([f(k + 1) / f(0) for k in range(T - 1)], dtype=torch.float64)
    assert torch.allclose(sch.alpha_bars[:-1], expected, rtol=1e-9)
    assert sch.betas[0].item() == pytest.approx(1 - f(1) / f(0), rel=1e-9)
    assert sch.betas[0].item() < 1e-3
    assert sch.betas[-1].item() == pytest.approx(0.999)
    assert (sch.betas <= 0.999).all()
    assert (sch.betas.diff() > 0).all()
    assert sch.alpha_bars[-1].item() < 1e-6
    # abar at mid-schedule is cos^2 of about pi/4: near 1/2
    assert 0.45 < sch.alpha_bars[T // 2 - 1].item() < 0.5


def test_from_name():
    assert torch.equal(
        NoiseSchedule.from_name("linear", 100).betas, NoiseSchedule.linear(100).betas
    )
    assert torch.equal(
        NoiseSchedule.from_name("cosine", 100).betas, NoiseSchedule.cosine(100).betas
    )
    with pytest.raises(ValueError, match="linear.*cosine"):
        NoiseSchedule.from_name("quadratic", 100)


# ----------------------------------------------------------------------------------------------
# forward process


def test_add_noise_marginal_matches_closed_form():
    """Over 200k noise draws, x_t has mean sqrt(abar) x0 and variance 1 - abar per entry
    (standard errors about 0.002; tolerance 0.01)."""
    sch = NoiseSchedule.linear(100)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.tensor([2.0, -1.0]).expand(n, 2)
    for step in (0, 10, 50, 99):
        t = torch.full((n,), step)
        xt = sch.add_noise(x0, torch.randn(n, 2, generator=g), t)
        abar = sch.alpha_bars[step].item()
        assert torch.allclose(xt.mean(0), math.sqrt(abar) * x0[0], atol=0.01)
        assert torch.allclose(xt.var(0), torch.full((2,), 1 - abar), atol=0.01)
        mean_coef, std = sch.marginal(t[:1])
        assert mean_coef.dtype == torch.float32 and mean_coef.shape == (1,)
        assert mean_coef.item() == pytest.approx(math.sqrt(abar), rel=1e-6)
        assert std.item() == pytest.approx(math.sqrt(1 - abar), rel=1e-6)


def test_one_step_chain_has_the_cumulative_marginal():
    """Noising step by step, x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps, lands on
    N(sqrt(abar_t) x0, 1 - abar_t): alpha_bars is the right product (tolerance 0.01, 100k)."""
    sch = NoiseSchedule.cosine(40)
    g = torch.Generator().manual_seed(1)
    x = torch.full((100_000,), 1.5, dtype=torch.float64)
    for step in range(40):
        x = sch.alphas[step].sqrt() * x + sch.betas[step].sqrt() * torch.randn(
            x.shape, generator=g, dtype=torch.float64
        )
        if step in (0, 9, 39):
            assert abs(x.mean().item() - 1.5 * sch.alpha_bars[step].sqrt().item()) < 0.01
            assert abs(x.var().item() - (1 - sch.alpha_bars[step].item())) < 0.01


def test_predict_x0_inverts_add_noise_any_shape():
    sch = NoiseSchedule.linear(50)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(6, 3, 4, 4, generator=g)
    eps = torch.randn(x0.shape, generator=g)
    t = sch.sample_timesteps(6, generator=g)
    xt = sch.add_noise(x0, eps, t)
    assert xt.shape == x0.shape and xt.dtype == torch.float32
    assert torch.allclose(sch.predict_x0(xt, eps, t), x0, atol=1e-4)
    mean_coef, std = sch.marginal(t, like=x0)
    assert mean_coef.shape == (6, 1, 1, 1) and std.dtype == x0.dtype
    assert torch.allclose(mean_coef**2 + std**2, torch.ones(6, 1, 1, 1))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_posterior_is_the_gaussian_conditional(kind):
    """q(x_{t-1} | x_t, x_0) from conditioning the joint Gaussian of (x_{t-1}, x_t) given x_0:
    x_{t-1} ~ N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}), x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) e,
    so mean = m1 + C12 / C22 (x_t - m2) and variance = C11 - C12^2 / C22."""
    sch = NoiseSchedule.from_name(kind, 30)
    t = torch.arange(30)
    x0 = torch.linspace(-2, 2, 30, dtype=torch.float64).unsqueeze(1)
    xt = torch.linspace(3, -1, 30, dtype=torch.float64).unsqueeze(1)
    mean, var = sch.posterior(x0, xt, t)

    abar_prev = torch.cat(
        [torch.ones(1, dtype=torch.float64), torch.cumprod(1 - sch.betas, 0)[:-1]]
    )
    alpha = 1 - sch.betas
    m1 = abar_prev.sqrt() * x0[:, 0]
    m2 = alpha.sqrt() * m1
    c11 = 1 - abar_prev
    c12 = alpha.sqrt() * c11
    c22 = alpha * c11 + sch.betas
    expected_mean = m1 + c12 / c22 * (xt[:, 0] - m2)
    expected_var = c11 - c12**2 / c22
    assert torch.allclose(mean[:, 0], expected_mean, rtol=1e-9, atol=1e-12)
    assert torch.allclose(var[:, 0], expected_var, rtol=1e-9, atol=1e-15)
    assert var[0].item() == 0 and mean[0].item() == pytest.approx(x0[0].item())
    assert torch.allclose(sch.posterior_variance, expected_var, rtol=1e-9, atol=1e-15)


def test_sample_timesteps_uniform_and_seeded():
    sch = NoiseSchedule.linear(50)
    t = sch.sample_timesteps(50_000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.min() == 0 and t.max() == 49
    counts = torch.bincount(t, minlength=50).double()
    assert (counts - 1000).abs().max() < 150  # binomial sd 31
    a = sch.sample_timesteps(8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, sch.sample_timesteps(8, generator=torch.Generator().manual_seed(5)))


def test_to_returns_a_moved_copy():
    sch = NoiseSchedule.cosine(10)
    moved = sch.to("meta")
    assert moved.device.type == "meta" and moved.num_steps == 10
    assert moved.posterior_mean_coef_xt.device.type == "meta"
    assert sch.device.type == "cpu"
    assert torch.equal(sch.to("cpu").alpha_bars, sch.alpha_bars)
    ladder = SigmaLadder()
    assert ladder.to("meta").sigmas.device.type == "meta" and ladder.device.type == "cpu"


def test_schedule_errors():
    with pytest.raises(ValueError, match="num_steps"):
        NoiseSchedule.linear(0)
    with pytest.raises(ValueError, match="beta_start <= beta_end"):
        NoiseSchedule.linear(100, beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError, match="num_steps > 20"):
        NoiseSchedule.linear(10)
    with pytest.raises(ValueError, match="max_beta"):
        NoiseSchedule.cosine(10, max_beta=1.0)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        NoiseSchedule(torch.tensor([0.1, 1.0]))
    sch = NoiseSchedule.linear(100)
    x = torch.zeros(3, 2)
    with pytest.raises(TypeError, match="integers"):
        sch.add_noise(x, x, torch.full((3,), 5.0))
    with pytest.raises(ValueError, match=r"\[0, 99\]"):
        sch.add_noise(x, x, torch.tensor([0, 50, 100]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        sch.add_noise(x, x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="eps"):
        sch.add_noise(x, torch.zeros(3, 3), torch.tensor([0, 1, 2]))


# ----------------------------------------------------------------------------------------------
# sigma ladder


def test_sigma_ladder_is_geometric_and_descending():
    ladder = SigmaLadder(sigma_max=1.0, sigma_min=0.01, num_levels=10)
    s = ladder.sigmas
    assert len(ladder) == 10 and s[0].item() == 1.0 and s[-1].item() == 0.01
    ratios = s[1:] / s[:-1]
    assert torch.allclose(ratios, torch.full((9,), 0.01 ** (1 / 9), dtype=torch.float64))
    assert (s.diff() < 0).all()
    single = SigmaLadder(0.5, 0.5, 1)
    assert single.sigmas.tolist() == [0.5]


def test_sigma_ladder_sample_levels():
    ladder = SigmaLadder(num_levels=5)
    levels = ladder.sample_levels(20_000, generator=torch.Generator().manual_seed(0))
    assert levels.dtype == torch.long
    assert torch.bincount(levels, minlength=5).min() > 3600  # expected 4000, sd 57
    assert levels.max() == 4
    a = ladder.sample_levels(10, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, ladder.sample_levels(10, generator=torch.Generator().manual_seed(3)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma_max=0.01, sigma_min=1.0), "sigma_min <= sigma_max"),
        (dict(sigma_min=0.0), "sigma_min <= sigma_max"),
        (dict(num_levels=0), "num_levels"),
        (dict(sigma_max=1.0, sigma_min=0.1, num_levels=1), "single level"),
        (dict(sigma_max=1.0, sigma_min=1.0, num_levels=3), "sigma_max > sigma_min"),
    ],
)
def test_sigma_ladder_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SigmaLadder(**kwargs)


# ----------------------------------------------------------------------------------------------
# DDPM ancestral sampling with the optimal noise predictor for Gaussian data

MU = torch.tensor([1.0, -2.0])
S = 0.5  # data std


def optimal_eps(schedule: NoiseSchedule):
    """eps*(x_t, t) = E[eps | x_t] = (x_t - sqrt(abar) mu) sqrt(1 - abar) / (abar s^2 + 1 - abar)."""

    def eps_model(x, t):
        assert t.dtype == torch.long and t.shape == x.shape[:1]
        abar = schedule.alpha_bars[int(t[0])].item()  # one timestep per call (tested below)
        return (x - math.sqrt(abar) * MU) * (math.sqrt(1 - abar) / (abar * S**2 + 1 - abar))

    return eps_model


def exact_output_law(schedule: NoiseSchedule, variance: str) -> tuple[float, float]:
    """Mean and std of the sampler's output (per coordinate, coordinate 0, mu = 1): every step
    maps x -> c1 x + c0 + sigma_t z, starting from N(0, 1)."""
    m, v = 0.0, 1.0
    for t in range(schedule.num_steps - 1, -1, -1):
        abar, beta = schedule.alpha_bars[t].item(), schedule.betas[t].item()
        k = beta / math.sqrt(1 - abar) * math.sqrt(1 - abar) / (abar * S**2 + 1 - abar)
        c1 = (1 - k) / math.sqrt(1 - beta)
        c0 = k * math.sqrt(abar) * MU[0].item() / math.sqrt(1 - beta)
        m, v = c1 * m + c0, c1 * c1 * v
        if t > 0:
            v += beta if variance == "large" else schedule.posterior_variance[t].item()
    return m, math.sqrt(v)


N_DDPM = 10_000


@pytest.mark.parametrize("variance", ["large", "small"])
@pytest.mark.parametrize("kind, num_steps", [("linear", 1000), ("cosine", 100)])
def test_ddpm_recovers_gaussian_data(kind, num_steps, variance):
    """Samples match the sampler's exact output law to 4 standard errors (20k values: se of
    the mean 0.0035, of the std 0.0025). At T = 1000 that law is within 1% of N(mu, 0.5^2)
    for both variances ("large" slightly over-, "small" slightly under-disperses); at T = 100
    "small" under-disperses by 3.5%, which the samples must show too."""
    schedule = NoiseSchedule.from_name(kind, num_steps)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(N_DDPM, 2, generator=g)
    result = ddpm_ancestral(optimal_eps(schedule), schedule, x_T, variance=variance, generator=g)
    x = result.sample
    assert isinstance(result, ScoreSamplerResult)
    assert x.shape == (N_DDPM, 2) and x.dtype == torch.float32 and not x.requires_grad
    law_mean, law_std = exact_output_law(schedule, variance)
    mean_shift = (MU - MU[0]).unsqueeze(0)  # both coordinates share the law up to the mean
    z = x - mean_shift
    assert abs(z.mean().item() - law_mean) < 4 * S / math.sqrt(2 * N_DDPM)
    assert abs(z.std().item() - law_std) < 4 * S / math.sqrt(4 * N_DDPM)
    assert torch.allclose(x.mean(0), MU, atol=0.02)
    if num_steps == 1000:
        assert abs(law_std - S) < 0.01 * S
        assert abs(x.std(0) - S).max() < 0.02
    elif variance == "small":
        assert law_std < 0.97 * S
        assert z.std().item() < 0.98 * S
    assert set(result.diagnostics()) == {"grad_norm"}
    assert torch.isnan(result.log_prob).all() and result.grad_norm.shape == (N_DDPM,)


def test_ddpm_clip_path_equals_direct_mean_when_nothing_is_clipped():
    """The x0-prediction + posterior-mean route is algebraically the direct mean."""
    schedule = NoiseSchedule.linear(100)
    x_T = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    runs = [
        ddpm_ancestral(
            optimal_eps(schedule),
            schedule,
            x_T,
            clip_x0=c,
            generator=torch.Generator().manual_seed(1),
        ).sample
        for c in (None, 100.0)
    ]
    assert torch.allclose(runs[0], runs[1], atol=1e-4)


def test_ddpm_clip_bounds_samples():
    """With clip_x0 = c the last step returns the clamped x0-prediction, so |x| <= c, while
    unclipped samples of N((1, -2), 0.25) reach beyond 1."""
    schedule = NoiseSchedule.cosine(50)
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    clipped = ddpm_ancestral(optimal_eps(schedule), schedule, x_T, clip_x0=1.0).sample
    assert clipped.abs().max().item() <= 1.0 + 1e-5
    free = ddpm_ancestral(optimal_eps(schedule), schedule, x_T).sample
    assert free.abs().max().item() > 2.0


def test_ddpm_calls_every_timestep_once_and_trajectory():
    schedule = NoiseSchedule.linear(30)
    seen = []

    def eps_model(x, t):
        seen.append(int(t[0]))
        assert (t == t[0]).all()
        return torch.zeros_like(x)

    result = ddpm_ancestral(eps_model, schedule, torch.randn(4, 3, 2), return_trajectory=True)
    assert seen == list(range(29, -1, -1))
    assert result.trajectory.shape == (31, 4, 3, 2)
    assert torch.equal(result.trajectory[-1], result.sample)


def test_ddpm_seeded_runs_are_reproducible():
    schedule = NoiseSchedule.linear(40)
    x_T = torch.randn(16, 2, generator=torch.Generator().manual_seed(0))

    def run(seed):
        return ddpm_ancestral(
            optimal_eps(schedule), schedule, x_T, generator=torch.Generator().manual_seed(seed)
        ).sample

    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))


def test_ddpm_divergence_and_argument_errors():
    schedule = NoiseSchedule.linear(30)

    def bad_eps(x, t):
        out = torch.zeros_like(x)
        if int(t[0]) == 10:
            out[2] = float("nan")
        return out

    with pytest.raises(SamplerDivergenceError, match=r"1 of 4 chains.*t = 10, chain 2"):
        ddpm_ancestral(bad_eps, schedule, torch.randn(4, 2))
    with pytest.raises(ValueError, match="variance"):
        ddpm_ancestral(bad_eps, schedule, torch.randn(4, 2), variance="medium")
    with pytest.raises(ValueError, match="clip_x0"):
        ddpm_ancestral(bad_eps, schedule, torch.randn(4, 2), clip_x0=0.0)
    with pytest.raises(ValueError, match="shaped like x"):
        ddpm_ancestral(lambda x, t: x[:, :1], schedule, torch.randn(4, 2))
