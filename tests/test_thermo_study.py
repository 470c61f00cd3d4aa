"""The study command's pieces (`make experiment EXPERIMENT_ARGS=--quick` runs it end to end): run
specs, lebm fit arguments, preset budgets, tables and plots from measured curves, and a run that
fails (on its first step) being recorded instead of stopping the study."""

import argparse
import csv

import pytest

from lebm.experiments.study import (
    MCMC_VARIANCE_KEY,
    PRESETS,
    VARIANCE_KEY,
    Run,
    apply_budget,
    fit_args,
    parse_run,
    plot,
    train_one,
    write_tables,
)


def test_run_specs_split_label_and_lebm_fit_arguments():
    label, args = parse_run("TI p=1=-c a.yaml -c b.yaml --model.init_args.temperature_power=1")
    assert label == "TI p=1"
    assert args == ["-c", "a.yaml", "-c", "b.yaml", "--model.init_args.temperature_power=1"]
    assert parse_run("vanilla=-c a.yaml") == ("vanilla", ["-c", "a.yaml"])
    for bad in ("-c a.yaml", "vanilla="):
        with pytest.raises(ValueError, match="LABEL=ARGS|no lebm fit arguments"):
            parse_run(bad)
    for preset in PRESETS.values():  # every preset parses, labels unique
        labels = [parse_run(spec)[0] for spec in preset]
        assert len(set(labels)) == len(labels)


def test_fit_arguments_add_seed_epochs_folder_and_the_variance_callback(tmp_path):
    args = fit_args(Run("TI", ("-c", "x.yaml"), 3), tmp_path, 7, 25, wandb="study-a")
    assert args[:3] == ["fit", "-c", "x.yaml"]
    for expected in (
        "--seed_everything=3",
        "--trainer.max_epochs=7",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.callbacks+=callbacks.GradientVariance",
        "--trainer.callbacks.every_n_steps=25",
        "--trainer.logger.group=study-a",
    ):
        assert expected in args


def fake_result(label, seed, variance, fids, moving=False):
    curves = {
        VARIANCE_KEY: [(0, variance), (50, variance * 0.8)],
        MCMC_VARIANCE_KEY: [(0, variance / 10), (50, variance / 12)],
        "val/fid": [(40, fids[0]), (80, fids[1])],
        "val/mmd": [(40, 0.1), (80, 0.05)],
        "train/temperature/t00": [(0, 0.0), (50, 0.0)],
        "train/temperature/t01": [(0, 0.5), (50, 0.2 if moving else 0.5)],
        "train/temperature/t02": [(0, 1.0), (50, 1.0)],
    }
    row = {
        "label": label,
        "seed": seed,
        "seconds": 10.0,
        f"mean {VARIANCE_KEY}": variance * 0.9,
        "val/fid": fids[1],
    }
    return {"row": row, "curves": curves}


def test_tables_and_plots(tmp_path):
    results = [
        fake_result("vanilla", 0, 2.0, (200, 150)),
        fake_result("vanilla", 1, 3.0, (210, 170)),
        fake_result("TI adaptive", 0, 1.0, (190, 140), moving=True),
    ]
    text = write_tables(results, tmp_path, "python -m lebm.experiments.study --x", "2 epochs")
    # mean ± sd over seeds of the final FID: vanilla (150, 170) -> 160 ± 14
    assert "| vanilla | 2 | 10 ± 0 | 2.25 ± 0.64 | 160 ± 14 |" in text, text
    assert "| TI adaptive | 1 |" in text and "Command: `python -m lebm" in text
    with open(tmp_path / "runs.csv") as f:
        assert [r["label"] for r in csv.DictReader(f)] == ["vanilla", "vanilla", "TI adaptive"]
    with open(tmp_path / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 7 * 2  # 7 curves of 2 points per run
    plot(results, tmp_path)
    for name in (
        "variance_vs_iteration.png",
        "quality_vs_iteration.png",
        "quality_vs_variance.png",
        "temperatures_vs_iteration.png",  # only the adaptive run's ladder moves
    ):
        assert (tmp_path / name).stat().st_size > 1000, name


def test_the_digits_preset_carries_its_budget_and_flags_override_it():
    def resolved(**given):
        args = argparse.Namespace(
            **{"preset": None, "epochs": None, "variance_every": None, "extra": None, **given}
        )
        apply_budget(args)
        return args.epochs, args.variance_every, args.extra

    # the README's study budget: 4 epochs, variance every 15 steps, FID_d after every epoch
    assert resolved(preset="digits") == (4, 15, "--trainer.callbacks.every_n_epochs=1")
    assert resolved(preset="digits", epochs=10, extra="") == (10, 15, "")
    assert resolved() == (10, 25, "")
    assert resolved(preset="quick", variance_every=3) == (10, 3, "")


def test_a_diverging_run_is_recorded_and_does_not_stop_the_study(tmp_path):
    # posterior chains with step 1e30 diverge on the first step: the run fails fast
    run = Run(
        "broken",
        (
            "-c", "configs/latent_ebm/moons.yaml", "--trainer.callbacks=null",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
            "--model.init_args.posterior_sampler.init_args.step_size=1e30",
        ),
        0,
    )  # fmt: skip
    result = train_one(run, str(tmp_path), epochs=1, variance_every=1, wandb=None)
    assert result["row"]["failed"].startswith("SamplerDivergenceError: ")
    good = fake_result("vanilla", 0, 2.0, (200, 150))
    text = write_tables([good, result], tmp_path, "cmd", "1 epoch")
    assert "| broken | 1 |" in text
    assert "- broken seed 0: SamplerDivergenceError: " in text
