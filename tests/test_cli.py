"""The lebm command line: fit/test/predict, outputs, resume, errors, devices and precision."""

import csv
import runpy
import subprocess
import sys
from unittest import mock

import pytest
import torch
import yaml

from tests.conftest import CONFIGS, FAST, ROOT

MOONS = str(CONFIGS / "latent_ebm" / "moons.yaml")


def fit(run_cli, root, *extra):
    return run_cli(["fit", "-c", MOONS, f"--trainer.default_root_dir={root}", *FAST, *extra])


def test_fit_writes_metrics_checkpoint_samples_and_config(run_cli, tmp_path, capsys):
    cli = fit(run_cli, tmp_path)
    run = tmp_path / "version_0"
    assert cli.trainer.log_dir == str(run)
    assert cli.model.hparams.data_shape == (2,)  # linked from the datamodule
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "samples.png").exists() and (run / "metrics.png").exists()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["class_path"] == "lebm.models.LatentEBM"
    with open(run / "metrics.csv") as f:
        columns = set(next(csv.reader(f)))
    for key in [
        "train/loss_ebm",
        "train/loss_gen",
        "train/mse",
        "train/en_pos",
        "train/en_neg",
        "train/posterior_grad_norm",
        "val/mmd",
        "val/swd",
    ]:
        assert key in columns
    out = capsys.readouterr().out
    assert f"Run folder: {run}" in out and "val/mmd" in out


def test_test_and_predict_from_checkpoint(run_cli, tmp_path):
    fit(run_cli, tmp_path)
    ckpt = str(tmp_path / "version_0" / "checkpoints" / "last.ckpt")
    cli = run_cli(
        [
            "test",
            "-c",
            MOONS,
            f"--trainer.default_root_dir={tmp_path}",
            *FAST,
            f"--ckpt_path={ckpt}",
        ]
    )
    assert {"test/mmd", "test/swd", "test/mse"} <= set(cli.trainer.callback_metrics)
    cli = run_cli(
        [
            "predict",
            "-c",
            MOONS,
            f"--trainer.default_root_dir={tmp_path}",
            *FAST,
            f"--ckpt_path={ckpt}",
            "--data.init_args.num_predict_samples=300",
        ]
    )
    files = list(tmp_path.glob("version_*/predictions/samples.pt"))
    assert len(files) == 1
    samples = torch.load(files[0])
    assert samples.shape == (300, 2) and torch.isfinite(samples).all()


def test_resume_continues_from_last_checkpoint(run_cli, tmp_path):
    first = fit(run_cli, tmp_path)
    steps = first.trainer.global_step
    ckpt = str(tmp_path / "version_0" / "checkpoints" / "last.ckpt")
    second = fit(run_cli, tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={ckpt}")
    assert second.trainer.current_epoch == 2
    assert second.trainer.global_step == 2 * steps


def test_print_config_shows_the_full_experiment(run_cli, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["fit", "-c", MOONS, "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "lebm.models.LatentEBM"
    assert printed["data"]["class_path"] == "datamodules.MoonsDataModule"
    init_args = printed["model"]["init_args"]
    sampler = init_args["posterior_sampler"]
    assert sampler["class_path"] == "lebm.samplers.Langevin"
    assert {"n_steps": 20, "step_size": 0.005}.items() <= sampler["init_args"].items()
    assert init_args["generator"]["class_path"] == "lebm.nets.GeneratorMLP"
    assert init_args["generator"]["init_args"]["hidden"] == 128  # every network argument shows


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--model.init_args.no_such_option=1", "no_such_option"),
        ("--model.init_args.posterior_sampler.n_steps=many", "n_steps"),
        ("--model.init_args.posterior_sampler=lebm.samplers.NoSuchSampler", "NoSuchSampler"),
        ("--model.init_args.generator.no_such_width=3", "no_such_width"),
    ],
)
def test_bad_arguments_fail_with_a_message(run_cli, capsys, arg, message):
    with pytest.raises(SystemExit) as exc:
        run_cli(["fit", "-c", MOONS, arg])
    assert exc.value.code != 0
    assert message in capsys.readouterr().err


def test_logger_fragments_build_on_top_of_a_config(run_cli):
    """Fragments under configs/logger/ add a logger (experiment configs: test_configs.py)."""
    for fragment in sorted((CONFIGS / "logger").glob("*.yaml")):
        cli = run_cli(["-c", MOONS, "-c", str(fragment)], run=False)
        assert len(cli.trainer.loggers) == 2, fragment  # the CSV logger is always kept


def test_bf16_mixed_precision_trains_with_fp32_chains(run_cli, tmp_path):
    cli = fit(run_cli, tmp_path, "--trainer.precision=bf16-mixed")
    model = cli.model
    assert cli.trainer.precision == "bf16-mixed"
    assert model.sample_prior(4).sample.dtype == torch.float32
    assert torch.isfinite(torch.tensor(float(cli.trainer.callback_metrics["train/loss_ebm"])))


@pytest.mark.slow
def test_ddp_spawn_on_two_cpu_processes(run_cli, tmp_path, capsys):
    """Two processes, with the gradient-variance callback (one spawn serves both checks); the
    summary this process prints names the run folder the spawned ranks wrote."""
    variance = tmp_path / "grad_variance.yaml"
    variance.write_text(
        "trainer:\n  callbacks+:\n    - class_path: callbacks.GradientVariance\n"
        "      init_args: {every_n_steps: 1, probe_size: 8, num_redraws: 3}\n"
    )
    args = ("-c", str(variance), "--trainer.strategy=ddp_spawn", "--trainer.devices=2")
    cli = fit(run_cli, tmp_path, *args)
    assert cli.trainer.world_size == 2
    run = tmp_path / "version_0"
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert f"Run folder: {run}\n" in capsys.readouterr().out
    assert not (tmp_path / "version_1").exists()
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("val/mmd") for r in rows)
    assert all(r.get("train/loss_ebm", "") != "nan" for r in rows)
    # one variance per measured step (limit_train_batches=4 per rank), from the whole group
    measured = [r for r in rows if r.get("grad_var/mcmc/total/variance")]
    assert len(measured) == 4
    assert all(float(r["grad_var/mcmc/total/variance"]) > 0 for r in measured)


@pytest.mark.slow
def test_console_script_and_module_entry_point(capsys):
    """The installed ``lebm`` script runs (one subprocess: importing lightning costs ~20 s);
    ``python -m lebm`` runs the same main, checked in-process."""
    result = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "lebm"), "fit", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "--trainer" in result.stdout and "--model" in result.stdout
    with mock.patch.object(sys, "argv", ["python -m lebm", "fit", "--help"]):
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module("lebm", run_name="__main__")
    assert exit_info.value.code == 0
    assert "--trainer" in capsys.readouterr().out


def test_ti_config_trains_with_variance_and_fid_callbacks(run_cli, tmp_path):
    config = str(CONFIGS / "latent_ebm_ti" / "moons.yaml")
    run_cli(
        [
            "fit",
            "-c",
            config,
            f"--trainer.default_root_dir={tmp_path}",
            *FAST,
            "--model.init_args.num_temperatures=4",
        ]
    )
    with open(tmp_path / "version_0" / "metrics.csv") as f:
        columns = set(next(csv.reader(f)))
    assert {
        "train/log_px_ti",
        "train/expected_loglik/t03",
        "val/fid",
        "val/kid",
        "val/mmd",
    } <= columns
    for source in ("per_sample", "mcmc"):
        for group in ("energy", "generator", "total"):
            assert f"grad_var/{source}/{group}/variance" in columns


def test_compose_expands_fragments_in_order_and_names_bad_paths(tmp_path):
    from lebm.cli import expand_compose

    (tmp_path / "frags").mkdir()
    base = tmp_path / "frags" / "base.yaml"
    base.write_text("trainer:\n  max_epochs: 3\n")
    middle = tmp_path / "middle.yaml"
    middle.write_text("compose: [frags/base.yaml]\ntrainer:\n  max_epochs: 4\n")
    top = tmp_path / "top.yaml"
    top.write_text("compose:\n  - middle.yaml\n")
    expanded = expand_compose(["fit", "-c", str(top), "--trainer.max_epochs=5"])
    assert expanded == [
        "fit",
        *("-c", str(base.resolve()), "-c", str(middle.resolve()), "-c", str(top.resolve())),
        "--trainer.max_epochs=5",
    ]
    assert expand_compose([f"--config={base}"]) == ["-c", str(base.resolve())]
    top.write_text("compose: [nowhere.yaml]\n")
    with pytest.raises(FileNotFoundError, match=r"composes 'nowhere.yaml', but .*nowhere.yaml"):
        expand_compose(["-c", str(top)])
    base.write_text("compose: [../middle.yaml]\n")
    with pytest.raises(ValueError, match="include each other in a cycle"):
        expand_compose(["-c", str(middle)])


def test_saved_config_stands_alone(run_cli, tmp_path, capsys):
    """The run folder's config.yaml is the merged result: no compose list left to resolve."""
    fit(run_cli, tmp_path)
    saved = tmp_path / "version_0" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["compose"] is None
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli(["fit", "-c", str(saved), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] == "datamodules.MoonsDataModule"
    assert printed["model"]["init_args"]["posterior_sampler"]["init_args"]["n_steps"] == 5
