"""Mode weights in the sample-quality metric: modes found from the real points, the error in the
mass a model gives each, and the wide-kernel MMD that sees it where the fine one barely does."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons

from lebm.metrics import (
    BANDWIDTH_FACTORS,
    WIDE_BANDWIDTH_FACTORS,
    SampleQuality,
    median_pairwise_distance,
    mmd_rbf,
    mode_components,
    mode_weight_error,
)


def moons(n: int, seed: int, upper: float = 0.5) -> torch.Tensor:
    """n standardised two-moons points, a fraction ``upper`` of them on the upper moon."""
    x, y = make_moons(n_samples=4 * n, noise=0.05, random_state=seed)
    k = round(n * upper)
    x = np.concatenate([x[y == 0][:k], x[y == 1][: n - k]])
    x = (x - np.array([0.5, 0.25])) / np.array([0.87, 0.5])  # about zero mean, unit variance
    return torch.tensor(x, dtype=torch.float32)


def test_modes_of_moons_and_of_a_gaussian_mixture_but_not_of_one_blob():
    labels = mode_components(moons(1000, 0))
    assert labels is not None and sorted(torch.bincount(labels[labels >= 0]).tolist()) == [500, 500]
    g = torch.Generator().manual_seed(0)
    mixture = torch.cat(
        [torch.randn(800, 2, generator=g) + 5, torch.randn(200, 2, generator=g) - 5]
    )
    labels = mode_components(mixture)  # a few tail points may stand alone: dropped
    assert labels is not None
    small, large = sorted(torch.bincount(labels[labels >= 0]).tolist())
    assert 195 <= small <= 200 and 795 <= large <= 800
    assert mode_components(torch.randn(1000, 2, generator=g)) is None


def test_mode_weight_error_is_the_misplaced_mass():
    real = moons(1000, 0)
    assert mode_weight_error(real, moons(1000, 1)).item() == pytest.approx(0.0, abs=1e-6)
    assert mode_weight_error(real, moons(1000, 1, upper=0.7)).item() == pytest.approx(0.2, abs=1e-6)
    assert mode_weight_error(real, moons(1000, 1, upper=0.0)).item() == pytest.approx(0.5, abs=1e-6)


def test_wide_kernels_see_mode_weights_the_fine_ones_rank_below_a_gaussian_fit():
    real, skewed = moons(1000, 0), moons(1000, 1, upper=0.7)
    g = torch.Generator().manual_seed(0)
    mean, cov = real.mean(0), torch.cov(real.T)
    gaussian = torch.randn(1000, 2, generator=g) @ torch.linalg.cholesky(cov).T + mean
    h = median_pairwise_distance(real).item()

    def fine(x):
        return mmd_rbf(real, x, [f * h for f in BANDWIDTH_FACTORS]).item()

    def wide(x):
        return mmd_rbf(real, x, [f * h for f in WIDE_BANDWIDTH_FACTORS]).item()

    # a 70/30 split of perfect moons scores better than a Gaussian on the fine kernels ...
    assert fine(skewed) < fine(gaussian)
    # ... and far worse on the wide ones
    assert wide(skewed) > 5 * wide(gaussian)


def test_sample_quality_reports_mode_weights_only_for_low_dimensional_modes():
    metric = SampleQuality()
    metric.update(moons(500, 0), moons(500, 1, upper=0.6))
    values = metric.compute()
    assert set(values) == {"mmd", "mmd_wide", "swd", "mode_weight_error"}
    assert values["mode_weight_error"].item() == pytest.approx(0.1, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    for real in (torch.randn(500, 2, generator=g), torch.randn(500, 8, generator=g)):
        metric = SampleQuality()
        metric.update(real, torch.randn(real.shape, generator=g))
        assert set(metric.compute()) == {"mmd", "mmd_wide", "swd"}
