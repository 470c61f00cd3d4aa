"""What a user sees after a run: curves that show the right epoch, progress lines, the run
report, the end-of-command summary, quiet logs, and ``lebm compare`` on two models' runs.

One tiny LatentEBM fit (3 validations) is shared by the module's tests."""

import csv
import logging
import re

import pytest
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.demos.boring_classes import BoringModel

from callbacks import EpochLines, MetricCurves
from tests.conftest import CONFIGS, FAST, quiet_trainer

MOONS = str(CONFIGS / "latent_ebm" / "moons.yaml")
EPOCHS = 3


def csv_series(path, key):
    with open(path) as f:
        return [(int(r["step"]), float(r[key])) for r in csv.DictReader(f) if r.get(key)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A 3-epoch LatentEBM fit through the CLI (in-process), with its captured output."""
    import contextlib
    import io
    import warnings

    from lebm.cli import run_cli

    root = tmp_path_factory.mktemp("latent_ebm")
    out = io.StringIO()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.INFO)
    logging.getLogger("lightning.pytorch").addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cli = run_cli(
                [
                    "fit",
                    "-c",
                    MOONS,
                    f"--trainer.default_root_dir={root}",
                    *FAST,
                    f"--trainer.max_epochs={EPOCHS}",
                    "--trainer.enable_progress_bar=true",  # not a terminal: lines instead
                ]
            )
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(handler)
    return {
        "cli": cli,
        "run": root / "version_0",
        "out": out.getvalue(),
        "logs": [r.getMessage() for r in records],
        "warnings": [str(w.message) for w in caught],
    }


def test_plotted_validation_series_equal_metrics_csv_last_point_included(fitted):
    run = fitted["run"]
    curves = next(c for c in fitted["cli"].trainer.callbacks if isinstance(c, MetricCurves))
    for key in ("val/mmd", "val/swd", "val/mse"):
        logged = csv_series(run / "metrics.csv", key)
        assert len(logged) == EPOCHS
        plotted = curves.history[key]
        assert [step for step, _ in plotted] == [step for step, _ in logged]
        assert [v for _, v in plotted] == pytest.approx([v for _, v in logged], rel=1e-6)
    # training points sit at the steps Lightning logs them (log_every_n_steps = every_n_steps)
    train = csv_series(run / "metrics.csv", "train/loss_ebm")
    plotted = curves.history["train/loss_ebm"]  # every 10th step; the CSV has every step
    assert plotted and all(v == pytest.approx(dict(train)[step], rel=1e-6) for step, v in plotted)


def test_curves_read_validation_metrics_after_the_model_logged_them(tmp_path, capsys):
    """The model logs in on_validation_epoch_end (as GenerativeModel does), which runs after
    the callbacks' hook; a metric logged every other validation is not repeated stale."""

    class Model(BoringModel):
        def on_validation_epoch_end(self):
            self.log("val/epoch", float(self.current_epoch))

    class Sparse(Callback):  # like FIDCallback with every_n_epochs=2
        def on_validation_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch % 2 == 0:
                pl_module.log("val/sparse", 10.0 + trainer.current_epoch)

    curves = MetricCurves(keys=["val/*"])
    lines = EpochLines(mode="lines")
    trainer = quiet_trainer(
        tmp_path,
        max_epochs=4,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[Sparse(), curves, lines],
    )
    trainer.fit(Model())
    # validation after 2 batches is logged at step 1 (the loggers' step), after 4 at step 3, ...
    assert curves.history["val/epoch"] == [(1, 0.0), (3, 1.0), (5, 2.0), (7, 3.0)]
    assert curves.history["val/sparse"] == [(1, 10.0), (5, 12.0)]
    assert (tmp_path / "metrics.png").exists()
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert [line.split("  (")[0] for line in printed] == [
        "epoch 1/4  step 1  val/epoch 0  val/sparse 10",
        "epoch 2/4  step 3  val/epoch 1",
        "epoch 3/4  step 5  val/epoch 2  val/sparse 12",
        "epoch 4/4  step 7  val/epoch 3",
    ]


def test_progress_lines_when_output_is_not_a_terminal(fitted):
    trainer, out = fitted["cli"].trainer, fitted["out"]
    assert trainer.progress_bar_callback is None  # the config asked for a bar; stdout is a pipe
    lines = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == EPOCHS
    last_mmd = csv_series(fitted["run"] / "metrics.csv", "val/mmd")[-1][1]
    assert re.match(rf"epoch {EPOCHS}/{EPOCHS}  step \d+  val/mmd {last_mmd:.4g}  ", lines[-1])
    assert "one line per validation" in out


def test_progress_bar_modes(run_cli, monkeypatch):
    import lebm.cli

    base = ["-c", MOONS, "--trainer.enable_progress_bar=true"]
    for terminal, mode, bar in [
        (False, "auto", False),
        (False, "bar", True),
        (True, "auto", True),
        (True, "lines", False),
    ]:
        monkeypatch.setattr(lebm.cli, "stdout_is_terminal", lambda t=terminal: t)
        cli = run_cli([*base, f"--progress.mode={mode}"], run=False)
        assert (cli.trainer.progress_bar_callback is not None) is bar, (terminal, mode)
    cli = run_cli([*base, "--trainer.enable_progress_bar=false"], run=False)
    assert cli.trainer.progress_bar_callback is None  # an explicit false stays false
    with pytest.raises(ValueError, match="mode must be one of"):
        EpochLines(mode="sometimes")


def test_logs_carry_no_advertisement_or_dependency_deprecation(fitted):
    text = "\n".join([fitted["out"], *fitted["logs"], *fitted["warnings"]])
    assert "Tip:" not in text and "LeafSpec" not in text
    assert "args parameter is intended" not in text
    assert "GPU available" in text  # Lightning's own messages about the run stay


def test_fit_report_holds_config_metrics_spread_pictures_and_checkpoint(fitted):
    run, out = fitted["run"], fitted["out"]
    report = run / "report.html"
    html = report.read_text()
    assert f"report      {report}" in out  # the summary points at it
    assert str(run / "checkpoints" / "last.ckpt") in html
    assert "lebm.models.LatentEBM" in html and "seed_everything" in html  # the config
    assert html.count("data:image/png;base64,") == 2  # samples and curves, embedded
    mmd = [v for _, v in csv_series(run / "metrics.csv", "val/mmd")]
    mean = sum(mmd) / len(mmd)
    std = (sum((v - mean) ** 2 for v in mmd) / (len(mmd) - 1)) ** 0.5
    row = re.search(r"<code>val/mmd</code></td><td>([^<]+)</td><td>([^<]+)</td>", html)
    assert row and float(row.group(1)) == pytest.approx(mmd[-1], rel=1e-3)
    assert row.group(2) == f"{mean:.4g} ± {std:.2g} (last {EPOCHS})"
    summary = re.search(r"val/mmd\s+(\S+)\s+mean ± sd of the last 3: (\S+) ± (\S+)", out)
    assert summary and float(summary.group(2)) == pytest.approx(mean, abs=1e-5)


def test_test_report_from_a_checkpoint(fitted, run_cli, tmp_path):
    ckpt = fitted["run"] / "checkpoints" / "last.ckpt"
    args = ["test", "-c", MOONS, f"--trainer.default_root_dir={tmp_path}", *FAST]
    cli = run_cli([*args, f"--ckpt_path={ckpt}"])
    html = (tmp_path / "version_0" / "report.html").read_text()
    value = float(cli.trainer.callback_metrics["test/mmd"])
    row = re.search(r"<code>test/mmd</code></td><td>([^<]+)</td>", html)
    assert row and float(row.group(1)) == pytest.approx(value, rel=1e-3)
    assert str(ckpt) in html
    assert "training run" in html  # the curves of the run the checkpoint comes from
    assert (
        html.count("data:image/png;base64,") == 2
        and (tmp_path / "version_0" / "samples.png").exists()
    )


def test_compare_two_models(fitted, run_cli, tmp_path, capsys):
    ddpm = tmp_path / "ddpm"
    run_cli(
        [
            "fit",
            "-c",
            str(CONFIGS / "ddpm" / "moons.yaml"),
            f"--trainer.default_root_dir={ddpm}",
            "--trainer.max_epochs=2",
            "--trainer.check_val_every_n_epoch=1",
            "--trainer.limit_train_batches=3",
            "--trainer.limit_val_batches=1",
            "--trainer.enable_model_summary=false",
            "--model.init_args.num_timesteps=25",
        ]
    )
    out = tmp_path / "cmp"
    code = run_cli(
        [
            "compare",
            str(fitted["run"]),
            str(ddpm),
            "--metrics",
            "val/mmd",
            "val/swd",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert (out / "compare.png").stat().st_size > 0
    with open(out / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"].split(" on ")[0] for r in rows] == ["LatentEBM", "DDPM"]
    for row, folder in zip(rows, [fitted["run"], ddpm / "version_0"], strict=True):
        logged = csv_series(folder / "metrics.csv", "val/mmd")
        assert float(row["val/mmd last"]) == pytest.approx(logged[-1][1], rel=1e-5)
        values = [v for _, v in logged]
        assert float(row["val/mmd mean"]) == pytest.approx(sum(values) / len(values), rel=1e-5)
    printed = capsys.readouterr().out
    assert "| LatentEBM on MoonsDataModule" in printed and "compare.png" in printed


def test_compare_names_a_folder_that_is_not_a_run(run_cli, tmp_path, capsys):
    assert run_cli(["compare", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "is not a run folder" in capsys.readouterr().out
    (tmp_path / "version_0").mkdir()
    (tmp_path / "version_0" / "metrics.csv").write_text("epoch,step,val/a\n0,3,0.5\n")
    assert (
        run_cli(["compare", str(tmp_path), "--metrics", "val/b", "--out", str(tmp_path / "o")]) == 1
    )
    assert "no run logged a metric matching ['val/b']" in capsys.readouterr().out
    assert run_cli(["compare", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert "| 0.5 |" in (tmp_path / "o" / "compare.md").read_text()
