"""The VAE-vs-LAE comparison command end to end, on two training batches per model."""

import csv

import pytest

from lebm.experiments import vae_vs_lae


@pytest.mark.slow
def test_comparison_writes_table_runs_and_interpolations(tmp_path):
    overrides = [
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.callbacks=[]",
        "--model.init_args.iwae_samples=2",
    ]
    markdown = vae_vs_lae.main(
        ["--seeds", "0", "--epochs", "1", "--out", str(tmp_path), "--pairs", "2", "--points", "3"]
        + ["--", *overrides]
    )
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert [r["model"] for r in rows] == ["vae", "lae"]
    for row in rows:  # every bound finite; the LAE's own q is the fixed one
        assert all(float(row[k]) == float(row[k]) for k in ("mse", "nll", "neg_elbo", "bpd"))
    lae = rows[1]
    assert float(lae["neg_elbo"]) == pytest.approx(float(lae["neg_elbo_fixed_q"]), rel=0.05)
    assert "| VAE |" in markdown and "| LAE |" in markdown
    assert (tmp_path / "interpolation_seed0.png").stat().st_size > 0
    # rerunning one model keeps the other's rows
    vae_vs_lae.main(
        ["--seeds", "0", "--epochs", "1", "--out", str(tmp_path), "--models", "lae"]
        + ["--pairs", "2", "--points", "3", "--", *overrides]
    )
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert [r["model"] for r in rows] == ["vae", "lae"]
