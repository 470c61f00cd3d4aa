"""The optimised sampler loops give the chains of a plain, textbook update (same seed, float
tolerance): pre-scaled noise, scalar coefficients, the analytic Gaussian reference gradient, the
deferred final log-density, and LatentEBM's logs taken from the loss's forward passes."""

import math

import pytest
import torch
from torch import nn

from lebm.models import LatentEBM
from lebm.samplers import GaussianReference, ddpm_ancestral, hmc, langevin
from lebm.samplers.base import log_prob_and_grad
from lebm.samplers.score_based import annealed_langevin
from lebm.schedules import NoiseSchedule

TOL = {"rtol": 1e-4, "atol": 1e-5}


def _model() -> tuple[LatentEBM, torch.Tensor]:
    torch.manual_seed(0)
    model = LatentEBM(data_shape=(3,), latent_dim=2)
    return model, torch.randn(16, 3)


def _plain_grad(log_prob, z):
    z = z.detach().requires_grad_(True)
    lp = log_prob(z)
    (grad,) = torch.autograd.grad(lp.sum(), z)
    return lp.detach(), grad


def _plain_joint(model, x):
    def log_joint(z):
        return model.log_prior(z) + model.log_likelihood(x, z)

    return log_joint


@pytest.mark.parametrize("per_chain", [False, True])
def test_ula_matches_plain_update(per_chain):
    model, x = _model()
    z0 = torch.randn(16, 2)
    n, s = 6, 0.01
    step = torch.linspace(0.005, 0.02, 16) if per_chain else s
    fast = langevin(model.posterior_log_density(x), z0, n, step, generator=_gen(3))
    eps = torch.randn((n, 16, 2), generator=_gen(3))
    s_col = step.view(-1, 1) if per_chain else torch.tensor(s)
    z, norms = z0, []
    for k in range(n):
        _, grad = _plain_grad(_plain_joint(model, x), z)
        norms.append(grad.norm(dim=1))
        z = z + s_col * grad + (2 * s_col).sqrt() * eps[k]
    assert torch.allclose(fast.sample, z, **TOL)
    assert torch.allclose(fast.grad_norm, torch.stack(norms).mean(0), **TOL)
    assert torch.allclose(fast.log_prob, _plain_joint(model, x)(z).detach(), **TOL)
    assert torch.allclose(fast.log_prob_start, _plain_joint(model, x)(z0).detach(), **TOL)


def test_mala_matches_plain_update():
    model, x = _model()
    z0, n, s = torch.randn(16, 2), 8, 0.4
    log_joint = _plain_joint(model, x)
    fast = langevin(model.posterior_log_density(x), z0, n, s, mh=True, generator=_gen(5))
    gen = _gen(5)
    eps = torch.randn((n, 16, 2), generator=gen)
    z, (lp, grad) = z0, _plain_grad(log_joint, z0)
    accepted = torch.zeros(16)
    for k in range(n):
        prop = z + s * grad + math.sqrt(2 * s) * eps[k]
        lp_p, grad_p = _plain_grad(log_joint, prop)
        fwd = ((prop - z - s * grad) ** 2).sum(1) / (4 * s)
        rev = ((z - prop - s * grad_p) ** 2).sum(1) / (4 * s)
        acc = torch.rand(16, generator=gen).log() < lp_p - lp + fwd - rev
        z = torch.where(acc[:, None], prop, z)
        lp, grad = torch.where(acc, lp_p, lp), torch.where(acc[:, None], grad_p, grad)
        accepted += acc
    assert torch.allclose(fast.sample, z, **TOL)
    assert torch.equal(fast.acceptance_rate, accepted / n)
    assert 0 < fast.acceptance_rate.mean() < 1  # both branches of the choice were taken


def test_hmc_matches_plain_leapfrog():
    model, x = _model()
    z0, n, eps_, L, mass = torch.randn(16, 2), 5, 0.2, 3, 2.0
    log_joint = _plain_joint(model, x)
    fast = hmc(model.posterior_log_density(x), z0, n, eps_, L, mass, generator=_gen(7))
    gen = _gen(7)
    momenta = torch.randn((n, 16, 2), generator=gen) * math.sqrt(mass)
    uniforms = torch.rand((n, 16), generator=gen)
    z, (lp, grad) = z0, _plain_grad(log_joint, z0)
    for k in range(n):
        p0 = momenta[k]
        zp, p, g = z, p0 + eps_ / 2 * grad, grad
        for i in range(L):
            zp = zp + eps_ * p / mass
            lp_p, g = _plain_grad(log_joint, zp)
            p = p + (eps_ if i + 1 < L else eps_ / 2) * g
        h0 = -lp + (p0**2).sum(1) / (2 * mass)
        h1 = -lp_p + (p**2).sum(1) / (2 * mass)
        acc = uniforms[k].log() < h0 - h1
        z = torch.where(acc[:, None], zp, z)
        lp, grad = torch.where(acc, lp_p, lp), torch.where(acc[:, None], g, grad)
    assert torch.allclose(fast.sample, z, **TOL)
    assert torch.allclose(fast.log_prob, lp, **TOL)


def test_gaussian_reference_is_the_whole_log_density():
    model, _ = _model()
    z = torch.randn(16, 2)
    density = model.prior_log_density()
    assert isinstance(density, GaussianReference)
    lp, grad = _plain_grad(model.log_prior, z)
    assert torch.allclose(langevin(density, z, 0, 0.1).log_prob, lp, **TOL)
    lp_fast, grad_fast = log_prob_and_grad(density, z)
    assert torch.allclose(lp_fast, lp, **TOL) and torch.allclose(grad_fast, grad, **TOL)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        GaussianReference(model.energy, 0.0)


def test_latent_ebm_logs_the_samplers_final_log_densities():
    """log_prob_end comes from the loss's forward passes, not from a final sampler forward."""
    model, x = _model()
    gen = torch.Generator().manual_seed(11)
    posterior = model.posterior(x, gen)
    z_neg, neg_logs = model.negatives(posterior, gen)
    assert "prior_log_prob_end" not in neg_logs  # the sampler's final forward is never run
    _, logs = model._objectives(x, posterior, z_neg)
    with torch.no_grad():
        expect_prior = model.log_prior(z_neg).mean()
        expect_post = _plain_joint(model, x)(posterior.z).mean()
    assert torch.allclose(logs["prior_log_prob_end"], expect_prior, **TOL)
    assert torch.allclose(logs["posterior_log_prob_end"], expect_post, **TOL)


class _Eps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x, t):
        return self.net(torch.cat([x, t.to(x.dtype)[:, None] / 10], 1))


@pytest.mark.parametrize("clip", [None, 1.5])
def test_ddpm_ancestral_matches_algorithm_2(clip):
    torch.manual_seed(0)
    net, schedule, x_T = _Eps(), NoiseSchedule.linear(10, rescale=False), torch.randn(32, 2)
    fast = ddpm_ancestral(net, schedule, x_T, clip_x0=clip, generator=_gen(2))
    fast_float_t = ddpm_ancestral(
        net, schedule, x_T, clip_x0=clip, generator=_gen(2), t_dtype=torch.float32
    )
    noise = torch.randn((9, 32, 2), generator=_gen(2))
    x = x_T
    with torch.no_grad():
        for k, t in enumerate(range(9, -1, -1)):
            beta, alpha = schedule.betas[t], schedule.alphas[t]
            sqrt_1m = schedule.sqrt_one_minus_alpha_bars[t]
            eps = net(x, torch.full((32,), t))
            if clip is None:
                mean = (x - beta / sqrt_1m * eps) / alpha.sqrt()
            else:
                x0 = ((x - sqrt_1m * eps) / schedule.sqrt_alpha_bars[t]).clamp(-clip, clip)
                mean = (
                    schedule.posterior_mean_coef_x0[t] * x0 + schedule.posterior_mean_coef_xt[t] * x
                )
            x = mean + beta.sqrt() * noise[k] if t > 0 else mean
    assert torch.allclose(fast.sample, x, **TOL)
    assert torch.allclose(fast_float_t.sample, x, **TOL)


def test_annealed_langevin_matches_algorithm_1():
    sigmas, n_each, lr = [1.0, 0.5, 0.25], 4, 1e-2

    def score(x, sigma):  # exact score of N(0, (1 + sigma^2) I)
        return -x / (1 + sigma[:, None] ** 2)

    x0 = torch.randn(32, 2)
    fast = annealed_langevin(score, x0, sigmas, n_each, lr, final_denoise=True, generator=_gen(4))
    noise = torch.randn((len(sigmas) * n_each, 32, 2), generator=_gen(4))
    x, k = x0, 0
    for sigma in sigmas:
        alpha = lr * sigma**2 / sigmas[-1] ** 2
        for _ in range(n_each):  # the paper's update: x + (alpha / 2) s + sqrt(alpha) z
            x = x + alpha / 2 * score(x, torch.full((32,), sigma)) + math.sqrt(alpha) * noise[k]
            k += 1
    x = x + sigmas[-1] ** 2 * score(x, torch.full((32,), sigmas[-1]))
    assert torch.allclose(fast.sample, x, **TOL)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
