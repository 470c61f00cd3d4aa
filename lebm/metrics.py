"""Sample-quality metrics for low-dimensional data: RBF MMD^2 and sliced Wasserstein distance."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

BANDWIDTH_FACTORS = (0.1, 0.2, 0.5, 1.0)
"""MMD kernel bandwidths, as multiples of the median pairwise distance of the real points."""


def median_pairwise_distance(x: Tensor, max_points: int = 2000) -> Tensor:
    """Median Euclidean distance between distinct rows of ``x`` (first ``max_points`` rows)."""
    x = x.flatten(1)[:max_points]
    d = torch.cdist(x, x)
    i, j = torch.triu_indices(len(x), len(x), offset=1, device=x.device)
    return d[i, j].median()


def mmd_rbf(x: Tensor, y: Tensor, bandwidths: Tensor | list[float]) -> Tensor:
    """Unbiased estimate of MMD^2 between samples ``x`` and ``y`` with a sum of RBF kernels.

    ``k(a, b) = sum_h exp(-||a - b||^2 / (2 h^2))``. The unbiased U-statistic drops the diagonal
    terms, so it can be slightly negative when the two distributions are equal.

    Args:
        x: shape (N, *event); y: shape (M, *event); N, M >= 2.
        bandwidths: kernel bandwidths h.

    Returns:
        0-d tensor.
    """
    x, y = x.flatten(1).double(), y.flatten(1).double()
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"mmd_rbf needs at least 2 points per set, got {n} and {m}")
    h = torch.as_tensor(bandwidths, dtype=x.dtype, device=x.device).view(-1, 1, 1)

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(a, b).pow(2).unsqueeze(0) / (2 * h**2)).sum(0)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return (xx + yy - 2 * kxy.mean()).float()


def sliced_wasserstein(
    x: Tensor, y: Tensor, num_projections: int = 256, generator: torch.Generator | None = None
) -> Tensor:
    """Sliced 2-Wasserstein distance ``sqrt(E_theta W_2^2(theta.x, theta.y))``.

    Projects both sets on ``num_projections`` random unit directions and compares sorted
    projections (quantiles, so N and M may differ). For 1-D data the direction is +-1 and this
    is the exact W_2.

    Args:
        x: shape (N, *event); y: shape (M, *event).
        num_projections: number of random directions.
        generator: seeds the directions (CPU generator).

    Returns:
        0-d tensor.
    """
    x, y = x.flatten(1).double(), y.flatten(1).double()
    theta = torch.randn(x.shape[1], num_projections, generator=generator, dtype=x.dtype)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    px, py = (x @ theta).sort(0).values, (y @ theta).sort(0).values
    if len(px) != len(py):
        q = torch.linspace(0, 1, max(len(px), len(py)), dtype=x.dtype, device=x.device)
        px, py = px.quantile(q, dim=0), py.quantile(q, dim=0)
    return (px - py).pow(2).mean().sqrt().float()


class SampleQuality(Metric):
    """Accumulates real and generated points over an epoch and reports MMD^2 and SWD.

    The MMD bandwidth rule is fixed by the real points only (median pairwise distance times
    0.1, 0.2, 0.5 and 1: the small ones resolve thin structure such as the two moons), so scores of different models on the same data are comparable. States are
    concatenated across processes, so the values are the same under DDP.
    """

    full_state_update = False

    def __init__(self, num_projections: int = 256, seed: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_projections = num_projections
        self.seed = seed
        self.add_state("real", default=[], dist_reduce_fx="cat")
        self.add_state("fake", default=[], dist_reduce_fx="cat")

    def update(self, real: Tensor, fake: Tensor) -> None:
        self.real.append(real.detach().flatten(1).float())
        self.fake.append(fake.detach().flatten(1).float())

    def compute(self) -> dict[str, Tensor]:
        real, fake = dim_zero_cat(self.real), dim_zero_cat(self.fake)
        h = median_pairwise_distance(real)
        generator = torch.Generator().manual_seed(self.seed)
        return {
            "mmd": mmd_rbf(real, fake, [f * h.item() for f in BANDWIDTH_FACTORS]),
            "swd": sliced_wasserstein(real, fake, self.num_projections, generator),
        }
