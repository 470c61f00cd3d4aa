"""``sample_from="code_gaussian"`` (lebm.models.autoencoder_base): the running code moments
against closed forms, the sampler against its Gaussian, and both autoencoders end to end."""

from functools import partial

import pytest
import torch

from datamodules import MoonsDataModule
from lebm.models import VAE, LangevinAutoencoder
from lebm.nets import EncoderMLP, FourierEncoder, GeneratorMLP
from tests.conftest import quiet_trainer

TINY_VAE = dict(encoder=partial(EncoderMLP, hidden=16), decoder=partial(GeneratorMLP, hidden=16))
TINY_LAE = dict(
    features=160,
    encoder=partial(FourierEncoder, num_frequencies=64, hidden=16),
    decoder=partial(GeneratorMLP, hidden=16),
)
MEAN = torch.tensor([1.5, -0.5, 0.2])
COV = torch.tensor([[0.25, 0.1, 0.0], [0.1, 0.5, -0.2], [0.0, -0.2, 0.3]])


def _gaussian_batches(num: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    root = torch.linalg.cholesky(COV)
    return [MEAN + torch.randn(size, 3, generator=g) @ root.T for _ in range(num)]


def test_the_first_batches_are_averaged_exactly():
    model = VAE(latent_dim=3, code_momentum=0.01, **TINY_VAE)
    batches = _gaussian_batches(7, 5)
    for codes in batches:
        model.track_codes(codes)
    every = torch.cat(batches)  # equal batch sizes: the mean of batch means is the mean
    torch.testing.assert_close(model.code_mean, every.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(model.code_second, every.T @ every / len(every), rtol=0, atol=1e-5)
    assert model.code_count.item() == 7


def test_running_moments_converge_to_the_codes_gaussian():
    """3,000 batches of 64 from N(MEAN, COV), momentum 0.01 (an EMA over ~100 batches = 6,400
    codes): the fitted mean within 0.05 and covariance entries within 0.05 of the truth (the EMA's
    standard errors are ~0.01 and ~0.01)."""
    model = LangevinAutoencoder(latent_dim=3, code_momentum=0.01, **TINY_LAE)
    for codes in _gaussian_batches(3000, 64, seed=1):
        model.track_codes(codes)
    torch.testing.assert_close(model.code_mean, MEAN, rtol=0, atol=0.05)
    torch.testing.assert_close(model.code_covariance(), COV, rtol=0, atol=0.05)


def test_code_gaussian_samples_follow_the_fitted_gaussian_and_prior_is_standard():
    model = VAE(latent_dim=3, sample_from="code_gaussian", **TINY_VAE)
    model.code_mean.copy_(MEAN)
    model.code_second.copy_(COV + torch.outer(MEAN, MEAN))
    z = model.sample_latents(40_000, generator=torch.Generator().manual_seed(0))
    # standard errors: mean sqrt(0.5 / 40000) = 0.0035, covariance entries <= 0.004
    torch.testing.assert_close(z.mean(0), MEAN, rtol=0, atol=0.02)
    torch.testing.assert_close(torch.cov(z.T), COV, rtol=0, atol=0.02)
    model.sample_from = "prior"
    z = model.sample_latents(40_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), torch.zeros(3), rtol=0, atol=0.02)
    torch.testing.assert_close(torch.cov(z.T), torch.eye(3), rtol=0, atol=0.03)


def test_a_rank_deficient_fit_still_samples():
    """Codes on a line (covariance of rank 1, tiny negative round-off eigenvalues clamped)."""
    model = VAE(latent_dim=3, sample_from="code_gaussian", **TINY_VAE)
    t = torch.randn(500, 1, generator=torch.Generator().manual_seed(0))
    model.track_codes(t * torch.tensor([[1.0, 2.0, -1.0]]))
    z = model.sample_latents(1000)
    assert torch.isfinite(z).all()
    assert torch.linalg.matrix_rank(torch.cov(z.T), atol=1e-3).item() == 1


@pytest.mark.parametrize("model_class", [VAE, LangevinAutoencoder])
def test_training_tracks_the_codes_and_checkpoints_keep_the_fit(tmp_path, model_class):
    """A short fit moves the moments towards the model's own codes; the fit survives a
    checkpoint round trip; a checkpoint from before the moments existed loads with N(0, I)'s."""
    tiny = TINY_VAE if model_class is VAE else TINY_LAE
    torch.manual_seed(0)
    model = model_class(data_shape=(2,), latent_dim=2, sample_from="code_gaussian", **tiny)
    data = MoonsDataModule(num_samples=400, batch_size=32, standardize=True)
    trainer = quiet_trainer(tmp_path, max_epochs=2, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, data)
    assert model.code_count.item() == 20  # 320 training points / 32, two epochs
    assert not torch.allclose(model.code_second, torch.eye(2))
    with torch.no_grad():
        codes = model.encode(data.split("train"))[0]
    # the running mean lags the last epoch's codes but is of their size
    assert (model.code_mean - codes.mean(0)).norm() < 0.5 * codes.std(0).norm() + 0.05

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = model_class.load_from_checkpoint(path)
    assert loaded.sample_from == "code_gaussian"
    for name in ("code_mean", "code_second", "code_count"):
        torch.testing.assert_close(getattr(loaded, name), getattr(model, name))

    old = torch.load(path, weights_only=False)
    for name in ("code_mean", "code_second", "code_count"):
        del old["state_dict"][name]
    torch.save(old, tmp_path / "old.ckpt")
    loaded = model_class.load_from_checkpoint(tmp_path / "old.ckpt", sample_from="prior")
    torch.testing.assert_close(loaded.code_second, torch.eye(2))
    assert loaded.sample(5).shape == (5, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sample_from": "posterior"}, "sample_from must be one of"),
        ({"code_momentum": 0.0}, r"code_momentum must be in \(0, 1\]"),
        ({"code_momentum": 1.5}, r"code_momentum must be in \(0, 1\]"),
    ],
)
def test_bad_values_name_the_argument(kwargs, message):
    for model_class in (VAE, LangevinAutoencoder):
        with pytest.raises(ValueError, match=message):
            model_class(**kwargs)


def test_the_comparison_reports_fid_both_ways_and_restores_the_setting(tmp_path):
    """vae_vs_lae's FID columns: the run's own FID callback, once per sampling mode."""
    from callbacks import FIDCallback
    from lebm.experiments.vae_vs_lae import fid_both_ways

    torch.manual_seed(0)
    model = VAE(data_shape=(2,), latent_dim=2, **TINY_VAE)
    fid = FIDCallback(num_samples=200, kid_subset_size=20, kid_subsets=5, every_n_epochs=99)
    data = MoonsDataModule(num_samples=400, batch_size=32, standardize=True)
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[fid], num_sanity_val_steps=0)
    trainer.fit(model, data)
    model.code_mean.fill_(3.0)  # a fit far from N(0, I): the two FIDs must differ
    values = fid_both_ways(trainer, model)
    assert model.sample_from == "prior"
    model.sample_from = "code_gaussian"
    assert values["fid/code_gaussian"] == pytest.approx(fid.evaluate(trainer, model)["fid"])
    model.sample_from = "prior"
    assert values["fid/prior"] == pytest.approx(fid.evaluate(trainer, model)["fid"])
    assert values["fid/code_gaussian"] > values["fid/prior"] + 0.1


def test_moments_stay_float32_under_bf16_autocast():
    """bf16-mixed training hands bf16 codes over; the moments and the samples stay usable."""
    model = VAE(latent_dim=3, sample_from="code_gaussian", **TINY_VAE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for codes in _gaussian_batches(50, 64):
            model.track_codes(codes.bfloat16())
        z = model.sample_latents(4000, generator=torch.Generator().manual_seed(0))
    assert model.code_mean.dtype == model.code_second.dtype == torch.float32
    torch.testing.assert_close(model.code_mean, MEAN, rtol=0, atol=0.05)
    torch.testing.assert_close(z.float().mean(0), MEAN, rtol=0, atol=0.1)
