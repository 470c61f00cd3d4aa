"""The shipped digit classifier as an FID / KID feature space (``lebm.features.DigitFeatures``).

Numbers quoted in comments were measured with the shipped ``lebm/assets/digit_classifier.pt``
(20 epochs, seed 0; train / val / test accuracy 0.9986 / 0.9944 / 1.0).
"""

import csv

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger

from callbacks.fid import FIDCallback
from datamodules.images import DigitsDataModule
from lebm.experiments.train_digit_classifier import accuracy, fit_digit_classifier, main
from lebm.features import DigitFeatures
from lebm.metrics import frechet_distance, mean_cov, polynomial_mmd
from lebm.nets.digit_classifier import (
    DEFAULT_WEIGHTS,
    REGENERATE_COMMAND,
    DigitClassifier,
    load_digit_classifier,
)
from tests.conftest import quiet_trainer


@pytest.fixture(scope="module")
def features():
    return DigitFeatures().setup()


@pytest.fixture(scope="module")
def digits():
    return DigitsDataModule(image_size=8)


def test_shipped_weights_are_small_and_carry_their_metadata():
    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size < 1_000_000
    model, metadata = load_digit_classifier()
    assert isinstance(model, DigitClassifier) and not model.training
    assert {"accuracy", "seed", "epochs", "torch_version"} <= set(metadata)
    assert set(metadata["accuracy"]) == {"train", "val", "test"}


@pytest.mark.parametrize("image_size", [8, 16, 32])
def test_shipped_classifier_is_accurate_at_every_size(image_size):
    dm = DigitsDataModule(image_size=image_size)
    model, metadata = load_digit_classifier()
    test_accuracy = accuracy(model, dm.split("test"), dm.labels("test"))
    assert test_accuracy >= 0.95  # measured: 1.0 at 8, 16 and 32 px
    if image_size in (8, 16):  # 8 px is resized to 16 px exactly as the datamodule does
        assert test_accuracy == metadata["accuracy"]["test"]


def test_mnist_sized_and_framed_digits_are_still_recognised(digits):
    # MNIST centres a 20 px digit in 28 px: shrink the 8x8 digits to 70% of the frame, 28 px.
    model, _ = load_digit_classifier()
    x = digits.split("test")
    theta = torch.tensor([[1 / 0.7, 0.0, 0.0], [0.0, 1 / 0.7, 0.0]]).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, [len(x), 1, 28, 28], align_corners=False)
    framed = F.grid_sample(x + 1, grid, align_corners=False) - 1
    assert framed.shape[-2:] == (28, 28)
    assert accuracy(model, framed, digits.labels("test")) >= 0.9  # measured 0.978


def test_features_shape_dtype_and_modes(features, digits):
    x = digits.split("val")[:10]
    out = features(x)
    assert features.num_features == 128 and isinstance(features.num_features, int)
    assert out.shape == (10, 128) and out.dtype == torch.float64 and torch.isfinite(out).all()
    assert not out.requires_grad and not any(p.requires_grad for p in features.parameters())
    features.train()
    assert not features.training  # always eval
    # RGB is averaged to grey; any size is resized to 16 px; values are clamped to [-1, 1]
    assert torch.equal(features(x.expand(-1, 3, -1, -1)), out)
    big = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    assert torch.allclose(features(big), out, atol=1e-5)
    assert torch.equal(features(x * 3), features((x * 3).clamp(-1, 1)))
    for bad in (torch.zeros(2, 2, 8, 8), torch.zeros(2, 64), torch.zeros(2, 1, 1, 8, 8)):
        with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
            features(bad)


def fid_and_kid(features, real, fake):
    fr, ff = features(real), features(fake)
    return frechet_distance(*mean_cov(fr), *mean_cov(ff)).item(), polynomial_mmd(fr, ff).item()


def test_fid_orders_real_digits_before_corrupted_ones(features, digits):
    val, test = digits.split("val"), digits.split("test")  # 180 images each
    g = torch.Generator().manual_seed(0)
    noisy = (test + 0.5 * torch.randn(test.shape, generator=g)).clamp(-1, 1)
    uniform = torch.rand(test.shape, generator=g) * 2 - 1
    zeros = digits.split("train")[digits.labels("train") == 0][:180]  # a collapsed "model"
    fid_real, kid_real = fid_and_kid(features, val, test)
    fid_noisy, kid_noisy = fid_and_kid(features, val, noisy)
    fid_flipped, _ = fid_and_kid(features, val, test.flip(-1))
    fid_uniform, kid_uniform = fid_and_kid(features, val, uniform)
    fid_zeros, _ = fid_and_kid(features, val, zeros)
    # measured: val/test 61.3 (mostly the small-sample bias of 128-d features at N = 180),
    # +N(0, 0.5^2) noise 109.0, mirrored 360.2, uniform noise 713.0, only zeros 2333.2
    assert fid_real < 80
    ordered = [1.4 * fid_real, fid_noisy, fid_flipped, fid_uniform, fid_zeros]
    for better, worse in zip(ordered, ordered[1:], strict=False):  # each corruption scores worse
        assert better < worse, ordered
    assert fid_uniform > 8 * fid_real and fid_zeros > 25 * fid_real
    # KID is unbiased: about 0 for two real splits (measured -1.9), large otherwise (327, 2502)
    assert abs(kid_real) < 30 and kid_noisy > 200 and kid_uniform > 1500


class BankSampler(L.LightningModule):
    """Tiny "generative model": ``sample`` returns random rows of an image bank plus noise."""

    def __init__(self, bank: torch.Tensor, noise: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("bank", bank)
        self.noise = noise
        self.offset = torch.nn.Parameter(torch.zeros(()))

    def sample(self, num_samples, generator=None):
        index = torch.randint(len(self.bank), (num_samples,), generator=generator)
        x = self.bank[index.to(self.bank.device)]
        noise = torch.randn(x.shape, generator=generator, device=x.device)
        return x + self.noise * noise + self.offset.detach()

    def training_step(self, batch, batch_idx):
        return (batch - self.offset).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", (batch - self.offset).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def digits_trainer(tmp_path, callback, **overrides):
    settings = dict(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=CSVLogger(tmp_path),
        callbacks=[callback],
        accelerator="cpu",
    )
    return quiet_trainer(tmp_path, **{**settings, **overrides})


def test_callback_with_digit_features_end_to_end(tmp_path, features):
    dm = DigitsDataModule(image_size=8, batch_size=64)
    kwargs = dict(num_samples=150, kid_subset_size=50, kid_subsets=10)
    callback = FIDCallback(DigitFeatures(), **kwargs)
    model = BankSampler(dm.split("test"))
    trainer = digits_trainer(tmp_path, callback)
    trainer.fit(model, datamodule=dm)
    assert callback.features.metadata == features.metadata  # read at setup
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/fid")]
    assert len(rows) == 1 and rows[0]["val/kid"]
    logged = float(rows[0]["val/fid"])
    # the logged value is the FID of 150 fresh samples (seed 0) against 150 val images
    real = dm.split("val")[:150]
    fake = model.sample(150, generator=torch.Generator().manual_seed(0))
    expected = frechet_distance(*mean_cov(features(real)), *mean_cov(features(fake))).item()
    assert logged == pytest.approx(expected, rel=1e-6)
    # a pure-noise "model" is much further away (measured: 138.7 for test images, 519.7 noise)
    noisy = BankSampler(torch.zeros(1, 1, 8, 8), noise=1.0)
    bad = digits_trainer(tmp_path, FIDCallback(DigitFeatures(), **kwargs), logger=False)
    assert bad.validate(noisy, datamodule=dm, verbose=False)[0]["val/fid"] > 3 * logged


def test_features_digits_parses_like_yaml():
    from jsonargparse import ArgumentError, ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(FIDCallback, "fid")
    cfg = parser.parse_string(  # the block of configs/*/digits.yaml
        """
        fid:
          features:
            class_path: lebm.features.DigitFeatures
            init_args:
              weights_path: null
          num_samples: 500
        """
    )
    callback = parser.instantiate(cfg).fid
    assert isinstance(callback.features, DigitFeatures) and callback.features.weights_path is None
    cfg = parser.parse_args(
        [
            "--fid.features=lebm.features.DigitFeatures",
            f"--fid.features.init_args.weights_path={DEFAULT_WEIGHTS}",
        ]
    )
    callback = parser.instantiate(cfg).fid
    assert callback.features.weights_path == str(DEFAULT_WEIGHTS)
    with pytest.raises(ArgumentError, match="DigitFeaturez"):  # unknown classes are refused
        parser.parse_args(["--fid.features=lebm.features.DigitFeaturez"])


def test_missing_weights_name_the_path_and_the_command(tmp_path):
    missing = tmp_path / "missing_digits.pt"
    unread = DigitFeatures(str(missing))  # files are read by setup(), so configs still build
    assert unread.net is None and unread.num_features is None and unread.metadata == {}
    with pytest.raises(FileNotFoundError) as err:
        unread.setup()
    message = str(err.value)
    assert str(missing) in message and REGENERATE_COMMAND in message and "--out" in message
    # through the callback: fails at setup, before any training step
    callback = FIDCallback(DigitFeatures(str(missing)), num_samples=10, kid_subset_size=5)
    trainer = digits_trainer(tmp_path, callback, logger=False)
    model = BankSampler(torch.zeros(4, 1, 8, 8))
    with pytest.raises(FileNotFoundError, match="missing_digits.pt"):
        trainer.fit(model, datamodule=DigitsDataModule(image_size=8))
    assert trainer.global_step == 0


def test_training_script_writes_a_loadable_file(tmp_path, capsys):
    out = tmp_path / "sub" / "digits.pt"
    accuracies = main(["--out", str(out), "--epochs", "1", "--seed", "3", "--quiet"])
    assert set(accuracies) == {"train", "val", "test"} and accuracies["val"] > 0.5
    assert "accuracy" in capsys.readouterr().out
    loaded = DigitFeatures(str(out)).setup()
    assert loaded.metadata["epochs"] == 1 and loaded.metadata["seed"] == 3
    assert loaded.metadata["accuracy"] == accuracies
    assert loaded(torch.zeros(2, 1, 8, 8)).shape == (2, 128)
    with pytest.raises(ValueError, match="epochs"):
        fit_digit_classifier(epochs=0)


def test_shipped_weights_reproduce_their_stored_accuracies():
    # evaluation is a forward pass of fixed weights on fixed images: exact on any machine up to
    # arg-max ties, which these well-separated logits do not have
    model, metadata = load_digit_classifier()
    dm = DigitsDataModule(image_size=16)  # the size the training script measured at
    for split in ("train", "val", "test"):
        assert accuracy(model, dm.split(split), dm.labels(split)) == metadata["accuracy"][split]


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_accuracies():
    # about 15 s of training on 2 cores. Bit-identical weights only on the CPU that made them:
    # float reductions differ across CPUs (SIMD width, oneDNN kernels), and 20 epochs amplify
    # the difference. Accuracies are robust to it: 0.015 allows 2 of the 180 val / test images
    # and 21 of the 1437 train images, far below what a broken training script would lose.
    _, metadata = load_digit_classifier()
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    state = torch.random.get_rng_state()
    _, accuracies = fit_digit_classifier(metadata["epochs"], metadata["seed"])
    assert set(accuracies) == {"train", "val", "test"}
    for split, shipped in metadata["accuracy"].items():
        assert abs(accuracies[split] - shipped) <= 0.015, (split, accuracies[split], shipped)
    # the caller's threads, determinism flag and global generator are left as they were
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    assert torch.equal(torch.random.get_rng_state(), state)
