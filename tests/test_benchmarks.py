"""The benchmark scripts run (smoke: their --quick mode); timings are not asserted here."""

import pytest


@pytest.mark.slow
def test_latent_ebm_benchmark_quick():
    from benchmarks.bench_latent_ebm import main

    table = main(["--quick"])
    for row in (
        "posterior Langevin step (lebm)",
        "HMC leapfrog step (lebm)",
        "bare forward+backward",
        "training iteration (reference)",
        "training iteration (minimal loop)",
    ):
        assert row in table


@pytest.mark.slow
def test_thermo_benchmark_quick():
    from benchmarks.bench_thermo import main

    table = main(["--quick"])
    assert "TI / vanilla" in table and "loop / batched" in table
    assert "(arithmetic " in table  # the TI / vanilla FLOP ratio at the toy size
    assert "GradientVariance.measure" in table


@pytest.mark.slow
def test_score_benchmark_quick():
    from benchmarks.bench_score import main

    table = main(["--quick"])
    for row in ("network forward", "annealed Langevin step", "DDPM ancestral step"):
        assert row in table
    assert "x forward" in table
