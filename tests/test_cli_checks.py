"""Command-line and checkpoint checks: a ``--data=...`` swap resets the config's data arguments
to the new class's defaults (and says so); a checkpoint of another model class or another
configuration fails with a message naming both; checkpoints load with weights_only=True."""

from functools import partial

import pytest
import torch

from datamodules import MoonsDataModule, TwoModesDataModule
from lebm.checkpoints import CheckpointMismatchError, check_checkpoint_matches
from lebm.cli import expand_compose, reset_swapped_data_args
from lebm.models import VAE, LatentEBM
from lebm.nets import EncoderMLP, GeneratorMLP
from tests.conftest import CONFIGS, quiet_trainer, tiny_latent_ebm_args

BASE = ["fit", "-c", str(CONFIGS / "latent_ebm" / "moons.yaml")]


def test_data_swap_resets_the_configs_data_arguments_and_says_so():
    args = expand_compose([*BASE, "--data=datamodules.TwoModesDataModule"])
    new, note = reset_swapped_data_args(args)
    # configs/data/moons.yaml sets batch_size 128 and standardize true for MoonsDataModule
    assert "--data.init_args.batch_size=256" in new
    assert "--data.init_args.standardize=false" in new
    assert new.index("--data.init_args.batch_size=256") > new.index(
        "--data=datamodules.TwoModesDataModule"
    )
    assert "num_samples" not in " ".join(new[len(args) :])  # same value as the default
    assert "MoonsDataModule for TwoModesDataModule" in note and "batch_size 128 -> 256" in note


def test_data_swap_keeps_values_given_after_it_and_ignores_no_swap():
    args = expand_compose(
        [*BASE, "--data", "TwoModesDataModule", "--data.batch_size=64", "--trainer.max_epochs=1"]
    )
    new, note = reset_swapped_data_args(args)
    assert not any(a.startswith("--data.init_args.batch_size") for a in new)
    assert "--data.init_args.standardize=false" in new and "batch_size" not in note
    same = expand_compose([*BASE, "--data=datamodules.MoonsDataModule"])
    assert reset_swapped_data_args(same) == (same, None)
    plain = expand_compose(BASE)
    assert reset_swapped_data_args(plain) == (plain, None)


def test_cli_builds_the_swapped_datamodule_with_its_own_defaults(run_cli, capsys):
    cli = run_cli([*BASE[1:], "--data=datamodules.TwoModesDataModule"], run=False)
    assert isinstance(cli.datamodule, TwoModesDataModule)
    default = TwoModesDataModule()
    assert cli.datamodule.batch_size == default.batch_size == 256
    assert "batch_size 128 -> 256" in capsys.readouterr().err


def _checkpoint(model) -> dict:
    return {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": "2.6.0",
    }


def test_checkpoint_of_another_class_fails_naming_both():
    vae = VAE(encoder=partial(EncoderMLP, hidden=8), decoder=partial(GeneratorMLP, hidden=8))
    latent = LatentEBM(**tiny_latent_ebm_args(hidden=8))
    with pytest.raises(
        CheckpointMismatchError, match=r"holds a lebm\.models\..*VAE.*built a .*LatentEBM"
    ):
        check_checkpoint_matches(_checkpoint(vae), latent, "vae.ckpt")
    check_checkpoint_matches(_checkpoint(latent), LatentEBM(**tiny_latent_ebm_args(hidden=8)), "x")


def test_checkpoint_of_another_configuration_fails_naming_the_settings(tmp_path):
    small = LatentEBM(latent_dim=2, **tiny_latent_ebm_args(hidden=8))
    large = LatentEBM(latent_dim=3, **tiny_latent_ebm_args(hidden=8))
    path = tmp_path / "small.ckpt"
    torch.save(_checkpoint(small), path)
    trainer = quiet_trainer(tmp_path, limit_val_batches=1)
    data = MoonsDataModule(num_samples=100, batch_size=16)
    with pytest.raises(CheckpointMismatchError) as error:
        trainer.validate(large, data, ckpt_path=path, verbose=False)
    message = str(error.value)
    assert "latent_dim: checkpoint 2 vs run 3" in message
    assert "LatentEBM" in message and "energy." in message and str(path) in message
    assert torch.load(path, weights_only=True)["hyper_parameters"]["latent_dim"] == 2


def test_ti_sweep_file_parses_and_its_runs_build_the_requested_ladder(run_cli):
    """As far as W&B goes offline: the sweep file has W&B's keys, and the command the agent
    runs for a grid point (``${args}`` = ``--<name>=<value>`` per parameter, W&B's documented
    default) builds a run with that ladder through lebm's command line."""
    from itertools import product

    import yaml

    sweep = yaml.safe_load((CONFIGS / "sweeps" / "ti.yaml").read_text())
    assert sweep["method"] == "grid" and sweep["metric"] == {"name": "val/mmd", "goal": "minimize"}
    command = sweep["command"]
    assert command[:3] == ["${env}", "lebm", "fit"] and command[-1] == "${args}"
    names = list(sweep["parameters"])
    grid = list(product(*(sweep["parameters"][n]["values"] for n in names)))
    assert len(grid) == 36
    point = grid[-1]  # p = 5, N_t = 20, seed 2 (each value differs from the config's)
    args = [f"--{name}={value}" for name, value in zip(names, point, strict=True)]
    cli = run_cli([*command[3:-1], *args], run=False)
    assert cli.model.hparams.temperature_power == 5.0
    assert cli.model.hparams.num_temperatures == 20
    assert cli.config["seed_everything"] == 2
    loggers = cli.config["trainer"]["logger"]
    loggers = loggers if isinstance(loggers, list) else [loggers]
    assert [lg["init_args"]["offline"] for lg in loggers] == [False]


class _OwnArgsOnly(MoonsDataModule):
    """A datamodule whose __init__ does not forward **kwargs: the parents' arguments
    (num_samples, standardize, ...) are not its arguments."""

    def __init__(self, batch_size: int = 8) -> None:
        super().__init__(batch_size=batch_size)


def test_data_swap_resets_only_arguments_the_new_class_takes():
    args = expand_compose([*BASE, "--data=tests.test_cli_checks._OwnArgsOnly"])
    new, note = reset_swapped_data_args(args)
    assert [a for a in new if a.startswith("--data.init_args.")] == [
        "--data.init_args.batch_size=8"
    ]
    assert "standardize" not in note and "num_samples" not in note
