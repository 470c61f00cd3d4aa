"""Learning-gradient variance against closed forms, and the callback in a training run."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from callbacks import GradientVariance
from datamodules import MoonsDataModule
from lebm.grad_stats import mcmc_gradient_stats, per_sample_gradient_stats
from lebm.models import LatentEBM, ThermoLatentEBM
from tests.conftest import quiet_trainer, tiny_latent_ebm_args


class LinearRegression(nn.Module):
    """loss_i = (w . x_i - y_i)^2 / 2; batch rows are [x_i, y_i]."""

    def __init__(self, w):
        super().__init__()
        self.net = nn.Linear(len(w), 1, bias=False)
        self.net.weight.data = w.view(1, -1).clone()

    def learning_losses(self, batch, generator=None):
        x, y = batch[:, :-1], batch[:, -1]
        return {"weights": 0.5 * (self.net(x).squeeze(-1) - y).pow(2)}

    def gradient_groups(self):
        return {"weights": self.net}


def test_per_sample_variance_matches_linear_regression_closed_form():
    """x ~ N(0, I_d), y = w*.x + N(0, s^2); at w, with D = w - w*, the per-sample gradient
    g = (D.x - eps) x has mean D and covariance (|D|^2 + s^2) I + D D^T (Isserlis)."""
    d, s, n = 4, 0.5, 40_000
    g = torch.Generator().manual_seed(0)
    w_true = torch.randn(d, generator=g)
    delta = torch.tensor([0.5, -1.0, 0.0, 2.0])
    x = torch.randn(n, d, generator=g)
    y = x @ w_true + s * torch.randn(n, generator=g)
    model = LinearRegression(w_true + delta)
    stats = per_sample_gradient_stats(model, torch.cat([x, y[:, None]], 1), chunk_size=4096)

    c = delta.pow(2).sum() + s**2
    variance = (c * d + delta.pow(2).sum()) / d
    normalized = ((c + delta**2) / (c + 2 * delta**2)).mean()
    for group in ("weights", "total"):
        assert torch.isclose(stats[group]["variance"].float(), variance, rtol=0.03)
        assert torch.isclose(stats[group]["normalized_variance"].float(), normalized, rtol=0.03)
        assert torch.isclose(stats[group]["grad_norm"].float(), delta.norm(), rtol=0.03)


class NoisyMean(nn.Module):
    """loss_i = w . (x_i + xi_i), xi ~ N(0, tau^2 I) drawn from the generator: the batch-mean
    gradient is mean_i(x_i + xi_i), whose variance over redraws is tau^2 / B per coordinate."""

    tau = 0.7

    def __init__(self, d):
        super().__init__()
        self.net = nn.Linear(d, 1, bias=False)

    def learning_losses(self, batch, generator=None):
        noise = self.tau * torch.randn(batch.shape, generator=generator)
        return {"w": self.net(batch + noise).squeeze(-1)}

    def gradient_groups(self):
        return {"w": self.net}


def test_mcmc_redraw_variance_matches_closed_form():
    b, d = 16, 3
    x = torch.randn(b, d)
    stats = mcmc_gradient_stats(
        NoisyMean(d), x, num_redraws=4000, generator=torch.Generator().manual_seed(0)
    )
    expected = NoisyMean.tau**2 / b
    assert torch.isclose(stats["w"]["variance"].float(), torch.tensor(expected), rtol=0.05)
    assert torch.isclose(stats["w"]["grad_norm"].float(), x.mean(0).norm(), atol=0.02)


@pytest.mark.parametrize("model_cls", [LatentEBM, ThermoLatentEBM])
def test_latent_ebm_groups_and_parameter_grads_untouched(model_cls):
    model = model_cls(data_shape=(2,), **tiny_latent_ebm_args(hidden=8, steps=3))
    x = torch.randn(8, 2)
    g = torch.Generator().manual_seed(0)
    for stats in (per_sample_gradient_stats(model, x, g), mcmc_gradient_stats(model, x, 3, g)):
        assert set(stats) == {"energy", "generator", "total"}
        for values in stats.values():
            assert all(torch.isfinite(v) and v >= 0 for v in values.values())
    assert all(p.grad is None for p in model.parameters())


def test_callback_logs_every_n_steps_without_changing_training(tmp_path):
    def run(with_callback):
        L.seed_everything(0)
        model = LatentEBM(data_shape=(2,), **tiny_latent_ebm_args(hidden=8, steps=3))
        callbacks = (
            [GradientVariance(every_n_steps=2, probe_size=8, num_redraws=3)]
            if with_callback
            else []
        )
        trainer = quiet_trainer(
            tmp_path,
            max_epochs=1,
            limit_train_batches=5,
            limit_val_batches=0,
            logger=CSVLogger(tmp_path, name=str(with_callback)),
            log_every_n_steps=1,
            callbacks=callbacks,
        )
        trainer.fit(model, MoonsDataModule(num_samples=400, batch_size=32))
        return model, trainer

    plain, _ = run(False)
    observed, trainer = run(True)
    # the callback draws from its own generator and never writes .grad: identical training
    for a, b in zip(plain.parameters(), observed.parameters(), strict=True):
        assert torch.equal(a, b)
    with open(tmp_path / "True" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    key = "grad_var/per_sample/total/variance"
    measured = [r for r in rows if r.get(key)]
    assert len(measured) == 3  # batches 1, 3, 5
    assert [int(r["step"]) for r in measured] == [0, 2, 4]
    for source in ("per_sample", "mcmc"):
        for group in ("energy", "generator", "total"):
            for stat in ("variance", "normalized_variance", "grad_norm"):
                assert float(measured[0][f"grad_var/{source}/{group}/{stat}"]) >= 0


def test_bad_arguments_and_models():
    with pytest.raises(ValueError, match="num_redraws must be >= 2"):
        GradientVariance(num_redraws=1)
    with pytest.raises(ValueError, match="sources must be a non-empty subset"):
        GradientVariance(sources=["adjoint"])

    class Plain(L.LightningModule):
        pass

    with pytest.raises(TypeError, match="learning_losses"):
        GradientVariance().setup(None, Plain(), "fit")


class ScalarShift(nn.Module):
    """loss_i = (x_i - c)^2 with a 0-d parameter c: per-sample gradient 2 (c - x_i)."""

    def __init__(self):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(0.5))

    def learning_losses(self, batch, generator=None):
        return {"c": (batch - self.c).pow(2)}

    def gradient_groups(self):
        return {"c": self}


def test_zero_dimensional_parameters_are_measured():
    x = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    stats = per_sample_gradient_stats(ScalarShift(), x)
    grads = 2 * (0.5 - x)
    assert torch.isclose(stats["c"]["variance"].float(), grads.var(), rtol=1e-3)
    assert torch.isclose(stats["c"]["grad_norm"].float(), grads.mean().abs(), rtol=1e-3)


class RecordingNoisyMean(NoisyMean):
    """NoisyMean that records how many chains each learning_losses call runs."""

    def __init__(self, d):
        super().__init__(d)
        self.rows = []

    def learning_losses(self, batch, generator=None):
        self.rows.append(len(batch))
        return super().learning_losses(batch, generator)


def test_mcmc_redraws_run_in_chunks_bounded_by_chunk_size():
    """chunk_size bounds the chains held at once (redraws x probe batch), and the statistics
    accumulated over the chunks still match the closed form tau^2 / B."""
    b, d = 16, 3
    x = torch.randn(b, d, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    model = RecordingNoisyMean(d)
    stats = mcmc_gradient_stats(model, x, num_redraws=2000, generator=g, chunk_size=50 * b)
    assert model.rows == [50 * b] * 40
    expected = NoisyMean.tau**2 / b
    assert torch.isclose(stats["w"]["variance"].float(), torch.tensor(expected), rtol=0.07)
    assert torch.isclose(stats["w"]["grad_norm"].float(), x.mean(0).norm(), atol=0.03)
    # a chunk smaller than the probe batch still runs one redraw at a time; None: all at once
    small, whole = RecordingNoisyMean(d), RecordingNoisyMean(d)
    mcmc_gradient_stats(small, x, num_redraws=3, generator=g, chunk_size=4)
    mcmc_gradient_stats(whole, x, num_redraws=3, generator=g)
    assert small.rows == [b, b, b] and whole.rows == [3 * b]
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        mcmc_gradient_stats(small, x, num_redraws=3, chunk_size=0)
