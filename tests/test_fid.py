"""FID / KID / FID∞ against closed forms, and the FIDCallback inside a tiny Lightning run."""

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from callbacks.fid import FIDCallback
from datamodules import MoonsDataModule
from lebm.features import FlattenFeatures, InceptionFeatures
from lebm.metrics import FeatureDistances, extrapolate_to_infinity, frechet_distance, mean_cov
from tests.conftest import quiet_trainer


def gaussian(n, mean, std, seed):
    mean, std = (
        torch.as_tensor(mean, dtype=torch.float64),
        torch.as_tensor(std, dtype=torch.float64),
    )
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(mean), generator=g, dtype=torch.float64) * std + mean


def distances(real, fake, **kwargs):
    """The callback's code path: FlattenFeatures -> FeatureDistances.compute()."""
    features = FlattenFeatures()  # learns d from the first batch, as in the callback
    metric = FeatureDistances(**kwargs)
    metric.update(features(real), real=True)
    metric.update(features(fake), real=False)
    return metric.compute()


# N(0, I_2) vs N((1, 2), diag(4, 0.25)): ||mu||^2 = 1 + 4 = 5; covariances commute, so
# Tr(S1 + S2 - 2 (S1 S2)^{1/2}) = (1 + 4 - 2 sqrt(4)) + (1 + 0.25 - 2 sqrt(0.25)) = 1 + 0.25.
CLOSED_FORM_FID = 6.25


def test_frechet_distance_exact_on_known_moments():
    mu2, sigma2 = torch.tensor([1.0, 2.0]), torch.diag(torch.tensor([4.0, 0.25]))
    d = frechet_distance(torch.zeros(2), torch.eye(2), mu2, sigma2)
    assert d.item() == pytest.approx(CLOSED_FORM_FID, abs=1e-10)
    # non-commuting covariances: compare with the eigen-decomposition of S1 S2 directly
    a = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, -0.3], [-0.3, 0.5]], dtype=torch.float64)
    trace_sqrt = torch.linalg.eigvals(a @ b).sqrt().real.sum()
    expected = a.trace() + b.trace() - 2 * trace_sqrt
    assert frechet_distance(torch.zeros(2), a, torch.zeros(2), b).item() == pytest.approx(
        expected.item(), abs=1e-10
    )


def test_fid_of_two_gaussians_matches_closed_form():
    real = gaussian(20_000, [0.0, 0.0], [1.0, 1.0], seed=0)
    fake = gaussian(20_000, [1.0, 2.0], [2.0, 0.5], seed=1)
    fid = distances(real, fake, kid_subsets=5)["fid"].item()
    # sampling std of the estimate is about 0.05 at 20k points per set
    assert abs(fid - CLOSED_FORM_FID) < 0.15


def test_matches_torchmetrics_fid_with_the_same_feature_module():
    from torchmetrics.image.fid import FrechetInceptionDistance

    real = gaussian(2000, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], seed=2)
    fake = gaussian(2000, [0.5, 0.0, -1.0], [1.5, 1.0, 0.7], seed=3)
    tm = FrechetInceptionDistance(feature=FlattenFeatures(3))
    tm.update(real, real=True)
    tm.update(fake, real=False)
    ours = distances(real, fake, kid_subsets=1)["fid"]
    assert ours.item() == pytest.approx(tm.compute().item(), rel=1e-6)


def test_kid_near_zero_for_equal_laws_and_positive_for_different():
    real = gaussian(1000, [0.0, 0.0], [1.0, 1.0], seed=4)
    kw = {"kid_subset_size": 200, "kid_subsets": 20}
    same = distances(real, gaussian(1000, [0.0, 0.0], [1.0, 1.0], seed=5), **kw)
    shifted = distances(real, gaussian(1000, [1.0, 0.0], [1.0, 1.0], seed=6), **kw)
    assert abs(same["kid"].item()) < max(3 * same["kid_std"].item(), 0.01)
    assert shifted["kid"].item() > 0.1
    assert shifted["kid"].item() > 3 * shifted["kid_std"].item()


def test_extrapolation_recovers_exact_intercept():
    sizes = [100, 250, 500, 1000]
    values = [3.5 + 120.0 / n for n in sizes]
    assert extrapolate_to_infinity(sizes, values).item() == pytest.approx(3.5, abs=1e-9)
    with pytest.raises(ValueError):
        extrapolate_to_infinity([100, 100], [1.0, 2.0])


def test_fid_inf_removes_sample_size_bias():
    # 16-d: N(0, I) vs N(0.5 * 1, I); FID = 16 * 0.25 = 4. Small N biases FID upwards.
    dim = 16
    real = gaussian(20_000, [0.0] * dim, [1.0] * dim, seed=7)
    fake = gaussian(2000, [0.5] * dim, [1.0] * dim, seed=8)
    sizes = [100, 200, 500, 1000, 2000]
    out = distances(real, fake, kid_subsets=2, inf_sizes=sizes)
    mu_r, s_r = mean_cov(real)
    fid_small = frechet_distance(mu_r, s_r, *mean_cov(fake[:100])).item()
    assert fid_small - 4.0 > 0.5  # the bias FID∞ has to remove
    assert abs(out["fid_inf"].item() - 4.0) < abs(fid_small - 4.0)
    assert abs(out["fid_inf"].item() - 4.0) < 0.3
    assert abs(out["kid_inf"].item() - out["kid"].item()) < 0.2  # KID is already unbiased


def test_real_features_survive_reset():
    metric = FeatureDistances(kid_subset_size=5, kid_subsets=1)
    metric.update(torch.randn(10, 2), real=True)
    metric.update(torch.randn(10, 2), real=False)
    metric.compute()
    metric.reset()
    assert len(metric.real_features) == 1 and metric.fake_features == []


class GaussianSampler(L.LightningModule):
    """Minimal model: samples N(mean, I_2) with a learnable mean."""

    def __init__(self) -> None:
        super().__init__()
        self.mean = torch.nn.Parameter(torch.full((2,), 3.0))

    def sample(self, num_samples, generator=None):
        z = torch.randn(num_samples, 2, generator=generator, device=self.device)
        return z + self.mean.detach()

    def training_step(self, batch, batch_idx):
        return (batch - self.mean).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", (batch - self.mean).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.5)


def tiny_trainer(tmp_path, callback, max_epochs=2):
    return quiet_trainer(
        tmp_path,
        max_epochs=max_epochs,
        limit_train_batches=2,
        logger=CSVLogger(tmp_path),
        callbacks=[callback],
        accelerator="cpu",
    )


def test_callback_logs_fid_and_computes_real_stats_once(tmp_path, monkeypatch):
    callback = FIDCallback(num_samples=200, kid_subset_size=30, kid_subsets=10, fid_inf=True)
    calls = []
    original = callback._real_data
    monkeypatch.setattr(
        callback, "_real_data", lambda trainer: calls.append(1) or original(trainer)
    )
    model, dm = GaussianSampler(), MoonsDataModule(num_samples=400, batch_size=64)
    trainer = tiny_trainer(tmp_path, callback)
    trainer.fit(model, datamodule=dm)

    keys = ["val/fid", "val/kid", "val/kid_std", "val/fid_inf", "val/kid_inf"]
    assert all(k in trainer.callback_metrics for k in keys)
    assert len(calls) == 1  # real features computed once over two evaluations
    n_val = len(dm.split("val"))
    assert sum(len(f) for f in callback.metric.real_features) == n_val  # kept, not re-added
    assert callback.metric.fake_features == []  # reset after each evaluation
    # the learnable mean moved from (3, 3) toward the data, so FID fell between the epochs
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/fid")]
    assert len(rows) == 2 and all(r["val/kid"] and r["val/fid_inf"] for r in rows)
    assert float(rows[1]["val/fid"]) < float(rows[0]["val/fid"])
    # the logged value is the metric of fresh samples against the val split
    real = dm.split("val").double()
    fake = model.sample(200, generator=torch.Generator().manual_seed(0)).double()
    expected = frechet_distance(*mean_cov(real), *mean_cov(fake)).item()
    assert float(rows[1]["val/fid"]) == pytest.approx(expected, rel=1e-4)


def test_every_n_epochs_skips_evaluations(tmp_path):
    callback = FIDCallback(num_samples=50, kid_subset_size=10, kid_subsets=2, every_n_epochs=2)
    trainer = tiny_trainer(tmp_path, callback, max_epochs=3)
    trainer.fit(GaussianSampler(), datamodule=MoonsDataModule(num_samples=200))
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        epochs = [r["epoch"] for r in csv.DictReader(f) if r.get("val/fid")]
    assert epochs == ["1", "2"]  # epoch index 1 (2nd) and the last


def test_validate_always_evaluates_and_test_stage_needs_no_weights(tmp_path):
    callback = FIDCallback(num_samples=50, kid_subset_size=10, kid_subsets=2, every_n_epochs=5)
    trainer = tiny_trainer(tmp_path, callback, max_epochs=10)
    results = trainer.validate(GaussianSampler(), datamodule=MoonsDataModule(num_samples=200))
    assert results[0]["val/fid"] > 0
    missing = FIDCallback(features=InceptionFeatures(str(tmp_path / "none.pth")))
    missing.setup(trainer, GaussianSampler(), "test")  # no error: weights only for fit/validate


def test_missing_inception_weights_fail_at_setup(tmp_path):
    missing = tmp_path / "missing.pth"
    callback = FIDCallback(
        features=InceptionFeatures(str(missing)), num_samples=10, kid_subset_size=5
    )
    trainer = tiny_trainer(tmp_path, callback)
    model = GaussianSampler()
    with pytest.raises(FileNotFoundError, match="missing.pth") as err:
        trainer.fit(model, datamodule=MoonsDataModule(num_samples=200))
    message = str(err.value)
    assert str(missing) in message and "cannot be downloaded" in message
    assert "weights_path:" in message and "weights-inception-2015-12-05" in message
    assert trainer.global_step == 0  # failed before any training


def test_cli_builds_the_callback_by_class_path(run_cli, tmp_path):
    from tests.conftest import CONFIGS, FAST

    args = ["fit", "-c", str(CONFIGS / "latent_ebm" / "moons.yaml"), *FAST]
    args += [f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks+=callbacks.FIDCallback"]
    opts = {"num_samples": 60, "kid_subset_size": 20, "kid_subsets": 5, "fid_inf": "true"}
    cli = run_cli(args + [f"--trainer.callbacks.init_args.{k}={v}" for k, v in opts.items()])
    assert {"val/fid", "val/kid", "val/kid_std", "val/fid_inf"} <= set(cli.trainer.callback_metrics)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        run_cli(
            args
            + [
                "--trainer.callbacks.init_args.features=lebm.features.InceptionFeatures",
                f"--trainer.callbacks.init_args.features.init_args.weights_path={missing}",
            ]
        )


def test_inception_wrapper_maps_images_to_uint8_rgb(tmp_path, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    path = tmp_path / "weights.pth"
    torch.save({}, path)  # random weights: only the plumbing is tested here
    monkeypatch.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
    seen = {}
    original = FeatureExtractorInceptionV3.forward

    def spy(self, x):
        seen["x"] = x
        return original(self, x)

    monkeypatch.setattr(FeatureExtractorInceptionV3, "forward", spy)
    assert InceptionFeatures(str(tmp_path / "absent.pth")).net is None  # files read by setup()
    module = InceptionFeatures(str(path))
    images = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2).expand(2, 1, 2, 2)
    out = module(images)
    assert out.shape == (2, 2048) and out.dtype == torch.float32 and torch.isfinite(out).all()
    x = seen["x"]
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 2, 2)
    assert x[0, 0].flatten().tolist() == [0, 128, 255, 255]
    assert module.num_features == 2048 and not module.training


def test_flatten_features_learn_their_size_from_the_data():
    features = FlattenFeatures()
    assert features.num_features is None
    out = features(torch.ones(5, 2, 3, dtype=torch.float32))
    assert out.shape == (5, 6) and out.dtype == torch.float64 and features.num_features == 6
    with pytest.raises(ValueError, match="expected 6 values per point, got 4"):
        features(torch.ones(5, 4))
    with pytest.raises(ValueError, match="expected 3 values"):
        FlattenFeatures(3)(torch.ones(5, 2))
    with pytest.raises(ValueError, match="num_features"):
        FlattenFeatures(0)


class RandomProjection(torch.nn.Module):
    """A user's feature module, outside lebm: a fixed random projection to ``num_features``."""

    def __init__(self, num_features: int = 1, in_features: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(in_features, num_features, generator=g))

    def forward(self, x):
        return x.flatten(1).double() @ self.weight.double()


def test_any_feature_module_plugs_in_by_class_path(tmp_path):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(FIDCallback, "fid")
    cfg = parser.parse_string(
        """
        fid:
          features:
            class_path: tests.test_fid.RandomProjection
            init_args: {num_features: 1, seed: 3}
          num_samples: 100
          kid_subset_size: 20
          kid_subsets: 2
        """
    )
    callback = parser.instantiate(cfg).fid
    assert isinstance(callback.features, RandomProjection) and callback.features.num_features == 1
    model, dm = GaussianSampler(), MoonsDataModule(num_samples=200)
    results = tiny_trainer(tmp_path, callback).validate(model, datamodule=dm, verbose=False)
    # the logged value is the 1-d FID of the projected points: the module was really used
    project = callback.features
    fake = model.sample(100, generator=torch.Generator().manual_seed(0))
    real = project(dm.split("val")[:100])
    expected = frechet_distance(*mean_cov(real), *mean_cov(project(fake))).item()
    assert results[0]["val/fid"] == pytest.approx(expected, rel=1e-5)


def test_feature_modules_without_num_features_are_refused():
    with pytest.raises(TypeError, match="num_features"):
        FIDCallback(features=torch.nn.Identity())
    halves = RandomProjection(num_features=2)
    halves.num_features = 2.0
    with pytest.raises(TypeError, match="num_features"):
        FIDCallback(features=halves)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        FIDCallback(features="inception")
    liar = RandomProjection(num_features=3)
    liar.num_features = 5  # its output is still 3 wide: caught at the first batch
    callback = FIDCallback(features=liar, num_samples=10, kid_subset_size=5)
    with pytest.raises(ValueError, match=r"shape \(4, 3\).*num_features=5"):
        callback._update(torch.zeros(4, 2), real=True, device=torch.device("cpu"))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_samples": 1}, "num_samples"),
        ({"num_samples": 50, "kid_subset_size": 100}, "kid_subset_size"),
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"fid_inf_sizes": [10, 5000]}, "fid_inf_sizes"),
        ({"real_split": "holdout"}, "real_split"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FIDCallback(**kwargs)


def test_smallest_valid_arguments():
    FIDCallback(num_samples=2, kid_subset_size=2)  # default FID∞ sizes unused, not checked
    callback = FIDCallback(num_samples=10, kid_subset_size=2, fid_inf=True)
    assert callback.fid_inf_sizes == [2, 4, 6, 8, 10]
    with pytest.raises(ValueError, match="fid_inf_sizes"):
        FIDCallback(num_samples=2, kid_subset_size=2, fid_inf=True)  # only one distinct size


class RecordPerRank(L.Callback):
    """Writes each rank's final ``val/fid`` and real / generated row counts to files."""

    def __init__(self, folder, fid_callback) -> None:
        self.folder, self.fid_callback = folder, fid_callback

    def on_train_end(self, trainer, pl_module):
        real = sum(len(f) for f in self.fid_callback.metric.real_features)
        value = float(trainer.callback_metrics["val/fid"])
        (self.folder / f"rank{trainer.global_rank}.txt").write_text(f"{value!r} {real}")


@pytest.mark.slow
def test_callback_under_ddp_spawn_shards_reals_and_samples(tmp_path):
    fid = FIDCallback(num_samples=201, kid_subset_size=30, kid_subsets=5, fid_inf=True)
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        inference_mode=False,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[fid, RecordPerRank(tmp_path, fid)],
    )
    model, dm = GaussianSampler(), MoonsDataModule(num_samples=400, batch_size=64)
    trainer.fit(model, datamodule=dm)
    (v0, n0), (v1, n1) = (
        (float(a) for a in (tmp_path / f"rank{r}.txt").read_text().split()) for r in (0, 1)
    )
    assert v0 == v1  # one value on every rank
    real = dm.split("val")
    assert n0 + n1 == len(real)  # each real point on exactly one rank
    # rank r drew 101 / 100 points with seed r; the model weights came back from rank 0
    fake = torch.cat(
        [
            model.sample(n, generator=torch.Generator().manual_seed(r))
            for r, n in ((0, 101), (1, 100))
        ]
    )
    expected = frechet_distance(*mean_cov(real), *mean_cov(fake)).item()
    assert v0 == pytest.approx(expected, rel=1e-4)
    assert float(trainer.callback_metrics["val/fid"]) == pytest.approx(v0)
