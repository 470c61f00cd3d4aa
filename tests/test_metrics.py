"""Sample-quality metrics against closed forms."""

import math

import torch

from lebm.metrics import (
    BANDWIDTH_FACTORS,
    SampleQuality,
    median_pairwise_distance,
    mmd_rbf,
    sliced_wasserstein,
)


def normal(n, dim, seed, shift=0.0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) + shift


def test_mmd_near_zero_for_equal_laws_and_positive_for_different():
    x, y = normal(1000, 2, 0), normal(1000, 2, 1)
    h = median_pairwise_distance(x).item()
    same = mmd_rbf(x, y, [h])
    shifted = mmd_rbf(x, normal(1000, 2, 2, shift=1.0), [h])
    assert abs(same.item()) < 0.003
    assert shifted.item() > 0.05


def test_mmd_unbiased_and_symmetric():
    x, y = normal(300, 3, 0), normal(200, 3, 5, shift=0.3)
    assert torch.isclose(mmd_rbf(x, y, [1.0, 2.0]), mmd_rbf(y, x, [1.0, 2.0]), atol=1e-6)
    # averaged over independent pairs from one law, the U-statistic is centred on 0
    vals = [mmd_rbf(normal(100, 2, 2 * i), normal(100, 2, 2 * i + 1), [1.0]) for i in range(40)]
    assert abs(torch.stack(vals).mean().item()) < 0.002


def test_median_pairwise_distance_of_standard_normal():
    # ||x - y|| for x, y ~ N(0, I_2) is Rayleigh with scale sqrt(2): median 2 sqrt(ln 2)
    assert (
        abs(median_pairwise_distance(normal(2000, 2, 0)).item() - 2 * math.sqrt(math.log(2))) < 0.05
    )


def test_sliced_wasserstein_closed_forms():
    # 1-D: W2 between N(0,1) and N(m,1) is m
    x, y = normal(4000, 1, 0), normal(4000, 1, 1, shift=2.0)
    assert abs(sliced_wasserstein(x, y).item() - 2.0) < 0.05
    # 2-D shift m along the first axis: E_theta[(m cos theta)^2] = m^2 / 2
    shift = torch.tensor([2.0, 0.0])
    y2 = normal(4000, 2, 1) + shift
    g = torch.Generator().manual_seed(0)
    value = sliced_wasserstein(normal(4000, 2, 0), y2, 2000, g).item()
    assert abs(value - 2.0 / math.sqrt(2)) < 0.06
    # unequal sample sizes go through quantiles
    assert abs(sliced_wasserstein(x, y[:1000]).item() - 2.0) < 0.1


def test_sample_quality_accumulates_batches():
    metric = SampleQuality()
    real, fake = normal(600, 2, 0), normal(600, 2, 1, shift=0.5)
    for r, f in zip(real.split(200), fake.split(200), strict=True):
        metric.update(r, f)
    values = metric.compute()
    h = median_pairwise_distance(real).item()
    assert torch.isclose(
        values["mmd"], mmd_rbf(real, fake, [f * h for f in BANDWIDTH_FACTORS]), atol=1e-6
    )
    assert values["swd"] > 0.2
    metric.reset()
    assert metric.real == [] and metric.fake == []
