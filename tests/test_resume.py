"""Exact resume: every model, resumed from an epoch-end checkpoint, ends bit-identical to the
uninterrupted seeded run (parameters, buffers, optimizer and scheduler states); the data order
continues the seeded stream; a mid-epoch checkpoint is refused with a message."""

from functools import partial

import lightning as L
import pytest
import torch

from callbacks import DivergenceGuard
from callbacks.resume import MidEpochResumeError
from datamodules import MoonsDataModule
from lebm.models import (
    DDPM,
    EBM,
    NCSN,
    VAE,
    VAEBM,
    LangevinAutoencoder,
    LatentEBM,
    ThermoLatentEBM,
)
from lebm.nets import ConditionalMLP, EncoderMLP, EnergyMLP, GeneratorMLP
from lebm.samplers import MALA, Langevin
from tests.conftest import checkpointing_trainer, tiny_latent_ebm_args

TINY_NET = partial(ConditionalMLP, hidden=16, depth=1)
MODELS = {
    "LatentEBM": lambda: LatentEBM(lr_decay=0.9, **tiny_latent_ebm_args(hidden=8, steps=3)),
    "ThermoLatentEBM": lambda: ThermoLatentEBM(
        num_temperatures=3, **tiny_latent_ebm_args(hidden=8, steps=3)
    ),
    "VAE": lambda: VAE(
        encoder=partial(EncoderMLP, hidden=8), decoder=partial(GeneratorMLP, hidden=8)
    ),
    "LangevinAutoencoder": lambda: LangevinAutoencoder(
        features=16,
        encoder=partial(EncoderMLP, hidden=8),
        decoder=partial(GeneratorMLP, hidden=8),
        sampler=MALA(2, 1e-5),
    ),
    "EBM": lambda: EBM(
        energy=partial(EnergyMLP, hidden=8), train_sampler=Langevin(3, 0.01), buffer_size=64
    ),
    "VAEBM": lambda: VAEBM(
        vae=partial(
            VAE, encoder=partial(EncoderMLP, hidden=8), decoder=partial(GeneratorMLP, hidden=8)
        ),
        energy=partial(EnergyMLP, hidden=8),
        vae_epochs=1,
        train_sampler=Langevin(3, 0.01),
        buffer_size=64,
    ),
    "DDPM": lambda: DDPM(num_timesteps=25, net=TINY_NET, ema_decay=0.9),
    "NCSN": lambda: NCSN(num_levels=3, steps_per_level=3, net=TINY_NET),
}


def fit(make_model, root, max_epochs: int, ckpt_path=None, **checkpoint_args):
    """Seed 0, a fresh model and datamodule (5 train batches an epoch), ``max_epochs``."""
    L.seed_everything(0, verbose=False)
    model = make_model()
    data = MoonsDataModule(num_samples=200, batch_size=32)
    trainer = checkpointing_trainer(
        root, [DivergenceGuard()], checkpoint_args, max_epochs=max_epochs
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer, model


def assert_identical(a, b, where: str = "") -> None:
    """Nested dicts / lists / tensors equal bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs: max |diff| {(a - b).abs().max()}"
    else:
        assert a == b, where


def training_state(trainer: L.Trainer, model: L.LightningModule) -> dict:
    return {
        "model": model.state_dict(),
        "optimizers": [opt.state_dict() for opt in trainer.optimizers],
        "schedulers": [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs],
        "rng": torch.get_rng_state(),
    }


@pytest.mark.parametrize("name", list(MODELS))
def test_resumed_run_is_bit_identical_to_the_uninterrupted_one(name, tmp_path):
    straight = training_state(*fit(MODELS[name], tmp_path / "straight", max_epochs=3))
    fit(MODELS[name], tmp_path / "first", max_epochs=2)
    resumed_trainer, resumed_model = fit(
        MODELS[name], tmp_path / "resumed", 3, ckpt_path=tmp_path / "first" / "last.ckpt"
    )
    assert resumed_trainer.global_step > 0 and resumed_trainer.current_epoch == 3
    assert_identical(straight, training_state(resumed_trainer, resumed_model), name)


def test_a_run_without_exact_resume_differs(tmp_path):
    """The test above can fail: without the random states the resumed run differs."""
    straight = training_state(*fit(MODELS["LatentEBM"], tmp_path / "straight", max_epochs=3))
    fit(MODELS["LatentEBM"], tmp_path / "first", max_epochs=2)
    ckpt = torch.load(tmp_path / "first" / "last.ckpt", weights_only=False)
    del ckpt["lebm_resume"]
    torch.save(ckpt, tmp_path / "stripped.ckpt")
    with pytest.warns(UserWarning, match="holds no random states"):
        resumed = fit(MODELS["LatentEBM"], tmp_path / "r", 3, ckpt_path=tmp_path / "stripped.ckpt")
    with pytest.raises(AssertionError):
        assert_identical(straight["model"], training_state(*resumed)["model"])


def test_data_order_continues_the_seeded_stream_after_a_restore():
    def epochs(data, n):
        loader = data.train_dataloader()
        return [torch.cat(list(loader)) for _ in range(n)]

    reference = epochs(MoonsDataModule(num_samples=100, batch_size=16), 3)
    first = MoonsDataModule(num_samples=100, batch_size=16)
    epochs(first, 2)
    state = first.state_dict()
    resumed = MoonsDataModule(num_samples=100, batch_size=16)
    resumed.load_state_dict(state)
    assert torch.equal(epochs(resumed, 1)[0], reference[2])
    assert not torch.equal(reference[2], reference[0])  # epochs do differ


def test_mid_epoch_checkpoint_is_refused_with_a_message(tmp_path):
    make = MODELS["VAE"]
    fit(make, tmp_path / "first", max_epochs=1, every_n_train_steps=2, save_top_k=-1)
    ckpt = tmp_path / "first" / "epoch=0-step=2.ckpt"
    assert ckpt.exists()
    with pytest.raises(MidEpochResumeError, match=r"middle of epoch 0.*--resume.strict false"):
        fit(make, tmp_path / "resumed", max_epochs=2, ckpt_path=ckpt)


def test_cli_resume_from_last_ckpt_matches_the_uninterrupted_run(run_cli, tmp_path):
    """Through `lebm fit`: defaults add ExactResume and save at every training epoch's end."""
    from tests.conftest import CONFIGS, FAST

    def lebm_fit(root, epochs, *extra):
        args = ["fit", "-c", str(CONFIGS / "latent_ebm" / "moons.yaml"), *FAST]
        args += [f"--trainer.default_root_dir={root}", f"--trainer.max_epochs={epochs}"]
        args += ["--trainer.limit_train_batches=3", "--report.enabled=false", *extra]
        return run_cli(args).trainer.checkpoint_callback.last_model_path

    def weights(path):
        checkpoint = torch.load(path, weights_only=True)
        return checkpoint["state_dict"], checkpoint["optimizer_states"]

    straight = lebm_fit(tmp_path / "straight", 2)
    first = lebm_fit(tmp_path / "first", 1)
    resumed = lebm_fit(tmp_path / "resumed", 2, f"--ckpt_path={first}")
    assert_identical(weights(straight), weights(resumed))
