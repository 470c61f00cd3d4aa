"""VAE: likelihoods and bounds against closed forms, KL warm-up, gradient groups, evaluation
metrics in a run, and learning on moons."""

import math
from functools import partial

import lightning as L
import pytest
import torch
from scipy import integrate
from torch import nn

from datamodules import MoonsDataModule
from lebm.grad_stats import mcmc_gradient_stats, per_sample_gradient_stats
from lebm.losses import bernoulli_log_likelihood, discretized_logistic_log_likelihood
from lebm.metrics import BANDWIDTH_FACTORS, median_pairwise_distance, mmd_rbf
from lebm.models import VAE
from lebm.nets import EncoderMLP, GeneratorMLP
from tests.conftest import quiet_trainer

TINY = dict(encoder=partial(EncoderMLP, hidden=16), decoder=partial(GeneratorMLP, hidden=16))


# --------------------------------------------------------------------------- linear Gaussian
class Linear(nn.Module):
    """``x -> x W^T + b`` (a decoder or an encoder set by hand); the role's sizes are ignored."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, x):
        return x @ self.weight.T + self.bias


SIGMA = 0.5


def _linear_gaussian(posterior_shift: float = 0.0, posterior_scale: float = 1.0):
    """x = W z + b + sigma eps with orthogonal columns of W, so the exact posterior
    N(A (x - b), diag v), v_j = 1 / (1 + s_j^2 / sigma^2), A = diag(v) W^T / sigma^2, is in
    the encoder's family. The encoder is set to it, with its mean shifted and its standard
    deviations scaled as asked. Returns the model (float64) and the exact log p(x)."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(3, 2, generator=g, dtype=torch.float64))
    w = q * torch.tensor([2.0, 0.7], dtype=torch.float64)  # columns orthogonal, norms 2, 0.7
    b = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    v = 1.0 / (1.0 + w.pow(2).sum(0) / SIGMA**2)
    a = v[:, None] * w.T / SIGMA**2
    enc_weight = torch.cat([a, torch.zeros(2, 3, dtype=torch.float64)])
    logvar = torch.log(v * posterior_scale**2)
    enc_bias = torch.cat([-a @ b + posterior_shift, logvar])
    model = VAE(
        data_shape=(3,),
        encoder=lambda data_shape, out: Linear(enc_weight, enc_bias),
        decoder=lambda latent_dim, data_shape: Linear(w, b),
        likelihood_sigma=SIGMA,
        iwae_chunk=7,
    ).double()
    marginal = torch.distributions.MultivariateNormal(
        b, w @ w.T + SIGMA**2 * torch.eye(3, dtype=torch.float64)
    )
    return model, marginal


def _draw(marginal, n: int, seed: int) -> torch.Tensor:
    """n seeded draws from the marginal N(b, W W^T + sigma^2 I)."""
    eps = torch.randn(n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return marginal.loc + eps @ marginal.scale_tril.T


def test_exact_posterior_makes_elbo_and_iwae_equal_log_px():
    """With q = p(z | x) every importance weight p(x, z) / q(z | x) equals p(x): the bound is
    exact for any K, and the ELBO estimate (analytic KL) is log p(x) plus zero-mean noise."""
    model, marginal = _linear_gaussian()
    x = _draw(marginal, 100, seed=0)
    g = torch.Generator().manual_seed(1)
    log_px = marginal.log_prob(x)
    for k in (1, 10):  # K = 10 runs in chunks of 7 and 3: chunks and log K accounted exactly
        iwae = model.importance_weighted_bound(x, num_samples=k, generator=g)
        torch.testing.assert_close(iwae, log_px, rtol=0, atol=1e-10)
    # 4,000 redraws per point: measured |mean ELBO - mean log p(x)| = 0.0021 (std. error 0.0025)
    elbo = -model.negative_elbo(x.repeat(4000, 1), g)
    assert abs(elbo.mean().item() - log_px.mean().item()) < 0.01


def test_iwae_bounds_are_ordered_and_approach_log_px():
    """With q off the posterior (mean shifted by 0.4, std x 1.6): on average
    ELBO <= IWAE_10 <= IWAE_5000 <= log p(x), and IWAE_5000 is within 0.01 nats of log p(x)
    (measured gaps: ELBO 2.19, IWAE_10 0.135, IWAE_5000 0.0011)."""
    model, marginal = _linear_gaussian(posterior_shift=0.4, posterior_scale=1.6)
    model.hparams.iwae_chunk = 1000
    x = _draw(marginal, 300, seed=0)
    g = torch.Generator().manual_seed(2)
    log_px = marginal.log_prob(x).mean().item()
    elbo = -model.negative_elbo(x.repeat(50, 1), g).mean().item()
    iwae_10 = model.importance_weighted_bound(x, 10, g).mean().item()
    iwae_5000 = model.importance_weighted_bound(x, 5000, g).mean().item()
    gaps = [log_px - v for v in (elbo, iwae_10, iwae_5000)]
    assert gaps[0] > gaps[1] > gaps[2] > 0, gaps
    assert gaps[0] > 1.0  # the bad q really costs something
    assert gaps[2] < 0.01, gaps


# --------------------------------------------------------------------------- likelihoods
BIN_CENTRES = torch.linspace(-1.0, 1.0, 256, dtype=torch.float64)


@pytest.mark.parametrize(("loc", "scale"), [(0.0, 0.3), (0.93, 0.02), (-1.4, 0.5), (0.2, 3.0)])
def test_discretized_logistic_bins_sum_to_one(loc, scale):
    x = BIN_CENTRES[:, None]
    log_p = discretized_logistic_log_likelihood(
        x, torch.full_like(x, loc), torch.tensor(math.log(scale), dtype=torch.float64)
    )
    assert log_p.shape == (256,)
    assert abs(log_p.exp().sum().item() - 1.0) < 1e-12


def _logistic_density(y: float, loc: float, scale: float) -> float:
    u = (y - loc) / scale
    return math.exp(-abs(u)) / (scale * (1.0 + math.exp(-abs(u))) ** 2)


@pytest.mark.parametrize("k", [0, 1, 100, 128, 200, 254, 255])
def test_discretized_logistic_matches_the_integrated_density(k):
    """Each bin's probability is the density integrated over the bin (edges: to +-infinity);
    bin 200 at scale 0.01 is far in the tail (P ~ 1e-20, where F(x + h) - F(x - h) cancels)."""
    loc, scale, half = 0.1, 0.01 if k == 200 else 0.2, 1.0 / 255
    centre = BIN_CENTRES[k].item()
    lower = -math.inf if k == 0 else centre - half
    upper = math.inf if k == 255 else centre + half
    # integrate around the location separately so quad sees the peak
    expected = sum(
        integrate.quad(_logistic_density, lo, hi, args=(loc, scale), epsabs=0, epsrel=1e-12)[0]
        for lo, hi in ((lower, max(lower, min(upper, loc))), (max(lower, min(upper, loc)), upper))
    )
    x = torch.tensor([[centre]], dtype=torch.float64)
    log_p = discretized_logistic_log_likelihood(
        x, torch.full_like(x, loc), torch.tensor(math.log(scale), dtype=torch.float64)
    )
    assert math.isclose(log_p.item(), math.log(expected), rel_tol=1e-8, abs_tol=1e-8)


def test_bernoulli_log_likelihood_matches_torch_on_binary_data():
    logits = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0))
    x = torch.where(torch.rand(4, 1, 3, 3) > 0.5, 1.0, -1.0)  # data in {-1, 1} -> {0, 1}
    expected = torch.distributions.Bernoulli(logits=logits).log_prob((x + 1) / 2).flatten(1)
    torch.testing.assert_close(bernoulli_log_likelihood(x, logits), expected.sum(1))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(likelihood="gaussian", likelihood_sigma=None),
        dict(likelihood="bernoulli"),
        dict(likelihood="logistic"),
    ],
)
def test_every_likelihood_gives_finite_gradients_to_every_parameter(kwargs):
    model = VAE(data_shape=(5,), latent_dim=3, **TINY, **kwargs)
    x = torch.rand(16, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    model.negative_elbo(x, torch.Generator().manual_seed(1)).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert (model.observation.log_scale is None) == (kwargs["likelihood"] == "bernoulli")
    samples = model.sample(7)
    assert samples.shape == (7, 5)
    if kwargs["likelihood"] != "gaussian":
        assert samples.abs().max() <= 1.0  # data-space means of [-1, 1] likelihoods


# --------------------------------------------------------------------------- schedule, groups
def test_kl_warmup_schedule(tmp_path):
    model = VAE(beta=0.5, kl_warmup_steps=100, **TINY)
    weights = [model.kl_weight(s) for s in (0, 1, 50, 100, 1000)]
    assert weights == [0.0, 0.005, 0.25, 0.5, 0.5]
    assert VAE(beta=0.5, **TINY).kl_weight(0) == 0.5
    # in training the weight follows the optimizer step: the last of 3 steps (step 2) has 2/4
    model = VAE(kl_warmup_steps=4, **TINY)
    trainer = quiet_trainer(tmp_path, max_steps=3, limit_val_batches=0, log_every_n_steps=1)
    trainer.fit(model, MoonsDataModule(num_samples=400, batch_size=32))
    assert trainer.callback_metrics["train/kl_weight"].item() == 0.5


def test_gradient_groups_take_the_gradient_of_the_shared_loss():
    """Both groups train on the same -ELBO; the per-sample statistics' mean gradient of each
    group equals autograd's gradient of the batch-mean loss for that group's parameters."""
    model = VAE(data_shape=(2,), likelihood_sigma=None, **TINY)
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    stats = per_sample_gradient_stats(model, x, torch.Generator().manual_seed(3))
    assert set(stats) == {"encoder", "decoder", "total"}
    loss = model.negative_elbo(x, torch.Generator().manual_seed(3)).mean()
    for name, group in model.gradient_groups().items():
        grads = torch.autograd.grad(loss, list(group.parameters()), retain_graph=True)
        norm = torch.cat([g.flatten() for g in grads]).norm().double()
        torch.testing.assert_close(stats[name]["grad_norm"], norm, rtol=1e-5, atol=1e-8)
    assert "observation.log_scale" not in dict(model.encoder.named_parameters())
    redraws = mcmc_gradient_stats(model, x, 3, torch.Generator().manual_seed(0))
    for values in (*stats.values(), *redraws.values()):
        assert all(torch.isfinite(v) and v >= 0 for v in values.values())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"likelihood": "poisson"}, "likelihood must be one of"),
        ({"likelihood_sigma": 0.0}, r"likelihood_sigma must be > 0 or None, got 0.0"),
        ({"initial_scale": -1.0}, "initial_scale must be > 0"),
        ({"latent_dim": 0}, "latent_dim must be > 0"),
        ({"beta": -0.1}, "beta must be >= 0"),
        ({"kl_warmup_steps": -5}, "kl_warmup_steps must be >= 0"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"iwae_samples": 0}, "iwae_samples must be > 0"),
        ({"iwae_chunk": 0}, "iwae_chunk must be > 0"),
    ],
)
def test_bad_hyperparameters_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VAE(**kwargs)


# --------------------------------------------------------------------------- runs
def test_validation_and_test_metrics(tmp_path):
    model = VAE(likelihood_sigma=None, iwae_samples=6, iwae_chunk=4, **TINY)
    data = MoonsDataModule(num_samples=400, batch_size=32, standardize=True)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=2)
    trainer.fit(model, data)
    logged = set(trainer.callback_metrics)
    assert {"val/mse", "val/elbo", "val/mmd", "val/swd", "train/loss_kl"} <= logged
    assert not {"val/nll", "val/bpd"} & logged  # the K-sample bound is for the test stage
    (results,) = trainer.test(model, data, verbose=False)
    assert {"test/mse", "test/elbo", "test/nll", "test/bpd", "test/mmd"} <= set(results)
    assert math.isclose(results["test/bpd"], results["test/nll"] / (2 * math.log(2)), rel_tol=1e-5)
    assert results["test/nll"] <= -results["test/elbo"] + 0.05  # IWAE_6 >= ELBO (up to noise)


def _train_on_moons(tmp_path):
    L.seed_everything(0)
    data = MoonsDataModule(num_samples=10_000, batch_size=128, standardize=True)
    model = VAE(data_shape=(2,), latent_dim=2, likelihood_sigma=None, lr=3e-3)
    trainer = quiet_trainer(tmp_path, max_epochs=12, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(model, data)
    return model, data.split("test")


# Standardized moons (see tests/test_latent_ebm.py): a Gaussian fitted to the data's mean and
# covariance scores about 0.09; 12 epochs of the moons config's settings must beat MMD_BAR
# (measured 0.026 in 6 s; the config's 60 epochs reach val/mmd 0.014, test/mmd 0.008).
MMD_BAR = 0.045


def test_learns_moons_beyond_a_gaussian_fit(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny MLPs: intra-op threads only contend on a loaded machine
    try:
        model, real = _train_on_moons(tmp_path)
    finally:
        torch.set_num_threads(threads)
    bandwidths = [f * median_pairwise_distance(real).item() for f in BANDWIDTH_FACTORS]
    samples = model.sample(len(real), generator=torch.Generator().manual_seed(1))
    gaussian = torch.distributions.MultivariateNormal(real.mean(0), torch.cov(real.T))
    baseline_mmd = mmd_rbf(real, gaussian.sample((len(real),)), bandwidths).item()
    model_mmd = mmd_rbf(real, samples, bandwidths).item()
    assert baseline_mmd > MMD_BAR, f"the bar must separate: Gaussian fit scores {baseline_mmd:.4f}"
    print(f"VAE moons MMD^2 {model_mmd:.4f}, Gaussian fit {baseline_mmd:.4f}")
    assert model_mmd < MMD_BAR, f"VAE MMD {model_mmd:.4f} >= bar {MMD_BAR}"
