"""Every experiment config under configs/ builds and trains two steps on CPU; fragments compose.

Image sets that are not on this machine get tiny fake files in their real formats
(``tests/fake_datasets.py``); chains, diffusion steps, batch sizes and callback sample counts
are shrunk (and the GPU-sized U-Nets narrowed) so each config runs in seconds. Inception FID
callbacks are dropped (their weights file cannot exist here; ``tests/test_fid.py`` tests that
path with random weights).
"""

import math

import pytest
import torch
import yaml

from callbacks import DensityMap, FIDCallback, GradientVariance, SamplePlotter
from lebm.features import InceptionFeatures
from tests.conftest import CONFIGS
from tests.fake_datasets import (
    stub_integrity_checks,
    write_fake_celeba,
    write_fake_cifar10,
    write_fake_mnist,
    write_fake_svhn,
)

# configs/<model>/<data>.yaml are experiments; these folders hold the fragments they compose
FRAGMENT_DIRS = {"callbacks", "data", "logger", "models", "nets", "trainer"}
# W&B sweep files (wandb sweep's format, not lebm's; tested in test_cli_checks.py)
NOT_LEBM_DIRS = {"sweeps"}
EXPERIMENTS = sorted(
    p for p in CONFIGS.rglob("*.yaml") if p.parent.name not in FRAGMENT_DIRS | NOT_LEBM_DIRS
)
FRAGMENTS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name in FRAGMENT_DIRS)

FAKE_DATA = {
    "MNISTDataModule": lambda root: write_fake_mnist(root, n_train=40, n_test=8),
    "FashionMNISTDataModule": lambda root: write_fake_mnist(
        root, n_train=40, n_test=8, name="FashionMNIST"
    ),
    "CIFAR10DataModule": lambda root: write_fake_cifar10(root, n_train=40, n_test=8),
    "SVHNDataModule": lambda root: write_fake_svhn(root, n_train=40, n_test=8),
    "CelebADataModule": lambda root: write_fake_celeba(root, n_train=8, n_valid=4, n_test=4),
}

SHORT_CHAINS = {
    "LatentEBM": ["prior_sampler.n_steps=2", "posterior_sampler.n_steps=2"],
    "ThermoLatentEBM": [
        "prior_sampler.n_steps=2",
        "posterior_sampler.n_steps=2",
        "num_temperatures=3",
    ],
    "DDPM": ["num_timesteps=25"],  # the rescaled linear schedule needs T > 20
    "NCSN": ["steps_per_level=2"],
    "VAE": ["iwae_samples=4"],  # the bound runs in the test stage only; small K regardless
    "LangevinAutoencoder": ["iwae_samples=4", "burn_in=0", "sampler.n_steps=1"],
    "EBM": ["train_sampler.n_steps=2", "sampler.n_steps=2", "grid_size=50", "buffer_size=100"],
    "VAEBM": ["train_sampler.n_steps=2", "sampler.n_steps=2", "buffer_size=100", "vae_epochs=0"],
}


def _class_name(config, key: str) -> str:
    """Short class name of ``key`` (model / data) in a config and the fragments it composes."""
    from lebm.cli import composed_files

    names = []
    for path in composed_files(config):
        node = (yaml.safe_load(path.read_text()) or {}).get(key) or {}
        if isinstance(node, dict) and "class_path" in node:
            names.append(node["class_path"].rsplit(".", 1)[-1])
    assert names, f"{config} names no {key} class_path, not even in its fragments"
    return names[-1]


def test_every_model_and_image_set_has_configs():
    names = {str(p.relative_to(CONFIGS)) for p in EXPERIMENTS}
    for model in ("latent_ebm", "latent_ebm_ti"):
        for data in ("moons", "digits", "mnist", "svhn", "cifar10", "celeba64"):
            assert f"{model}/{data}.yaml" in names
    for data in ("moons", "digits", "mnist", "cifar10"):
        assert f"ddpm/{data}.yaml" in names
    for data in ("moons", "two_modes", "digits", "mnist", "cifar10"):
        assert f"ncsn/{data}.yaml" in names


@pytest.mark.parametrize("config", EXPERIMENTS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_trains_two_steps_on_cpu(config, run_cli, tmp_path, monkeypatch):
    model_name, data_name = _class_name(config, "model"), _class_name(config, "data")
    args = [
        "-c",
        str(config),
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--data.init_args.batch_size=4",
        *[f"--model.init_args.{a}" for a in SHORT_CHAINS[model_name]],
    ]
    if model_name in ("DDPM", "NCSN") and data_name in FAKE_DATA:
        args.append("--model.init_args.net.init_args.base_channels=8")  # GPU-sized U-Nets
    if data_name in FAKE_DATA:
        stub_integrity_checks(monkeypatch)
        FAKE_DATA[data_name](tmp_path / "data")
        args += [f"--data.init_args.root={tmp_path / 'data'}", "--data.init_args.num_workers=0"]

    cli = run_cli(args, run=False)
    model, trainer = cli.model, cli.trainer
    assert model.hparams.data_shape == tuple(cli.datamodule.data_shape)
    callbacks = []
    for cb in trainer.callbacks:  # keep every observer, with small sample counts
        if isinstance(cb, FIDCallback):
            if isinstance(cb.features, InceptionFeatures):
                continue
            cb = FIDCallback(features=cb.features, num_samples=8, kid_subset_size=4)
        elif isinstance(cb, SamplePlotter):
            cb.num_samples, cb.num_images = 16, 4
        elif isinstance(cb, GradientVariance):
            cb.probe_size, cb.num_redraws = 4, 2
        elif isinstance(cb, DensityMap):  # the KDE's bandwidth search on 500 points, not 8,000
            cb.max_points, cb.resolution = 500, 40
        callbacks.append(cb)
    trainer.callbacks = callbacks
    trainer.limit_val_batches = 1  # int: one batch (the CLI parses "1" as the fraction 1.0)
    trainer.check_val_every_n_epoch = 1
    trainer.fit(model, datamodule=cli.datamodule)

    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 2
    metrics = trainer.callback_metrics
    losses = [v for k, v in metrics.items() if k.startswith("train/loss")]
    assert losses and all(torch.isfinite(v) for v in losses), metrics
    samples = model.sample(3)
    assert samples.shape == (3, *cli.datamodule.data_shape) and torch.isfinite(samples).all()
    assert (tmp_path / "version_0" / "samples.png").exists()
    if any(isinstance(cb, FIDCallback) for cb in callbacks):
        assert math.isfinite(float(metrics["val/fid"]))


def test_every_fragment_is_used():
    """Each fragment is composed by some config, named as a nested file, or documented as an
    add-on (-c) in configs/README.md."""
    texts = " ".join(p.read_text() for p in CONFIGS.rglob("*.yaml"))
    texts += (CONFIGS / "README.md").read_text()
    for fragment in FRAGMENTS:
        name = f"{fragment.parent.name}/{fragment.name}"
        assert name in texts, f"{name} is used nowhere"


def test_ti_configs_differ_from_vanilla_only_in_the_posterior(run_cli):
    """A TI config composes its vanilla config: same model arguments, data and schedule."""
    for data in ("moons", "digits", "svhn"):
        vanilla = run_cli(["-c", str(CONFIGS / "latent_ebm" / f"{data}.yaml")], run=False)
        ti = run_cli(["-c", str(CONFIGS / "latent_ebm_ti" / f"{data}.yaml")], run=False)
        assert type(ti.model).__name__ == "ThermoLatentEBM" and len(ti.model.ladder) == 10
        shared = {k: v for k, v in vanilla.model.hparams.items() if not k.startswith("_")}
        assert {k: ti.model.hparams[k] for k in shared} == shared, data
        assert type(ti.datamodule) is type(vanilla.datamodule)
        assert ti.trainer.max_epochs == vanilla.trainer.max_epochs
