"""Sample-quality metrics.

* For low-dimensional data, on the points themselves: RBF MMD^2 (fine and wide bandwidths),
  the sliced Wasserstein distance and, for data made of separate modes, the error in the mass
  given to each mode (:class:`SampleQuality`).
* In a feature space (``lebm.features``): FID, KID and their sample-size-free extrapolations
  FID∞ / KID∞ (:class:`FeatureDistances`, used by ``callbacks.FIDCallback``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat, rank_zero_warn

BANDWIDTH_FACTORS = (0.1, 0.2, 0.5, 1.0)
"""MMD kernel bandwidths (``mmd``), as multiples of the median pairwise distance of the real
points: the small ones resolve thin structure such as the two moons."""

WIDE_BANDWIDTH_FACTORS = (1.0, 2.0, 4.0)
"""Bandwidths of ``mmd_wide``, as multiples of the median pairwise distance: kernels as wide as
the data, which compare how mass is split between distant regions (modes) and are nearly blind
to thin structure (a Gaussian with the data's mean and covariance scores low)."""

MODE_MAX_DIMS = 3
"""``mode_weight_error`` is computed for data of at most this many dimensions."""


def median_pairwise_distance(x: Tensor, max_points: int = 2000) -> Tensor:
    """Median Euclidean distance between distinct rows of ``x`` (first ``max_points`` rows)."""
    x = x.flatten(1)[:max_points]
    d = torch.cdist(x, x)
    i, j = torch.triu_indices(len(x), len(x), offset=1, device=x.device)
    return d[i, j].median()


def mmd_rbf(x: Tensor, y: Tensor, bandwidths: Tensor | list[float]) -> Tensor:
    """Unbiased MMD^2 (:func:`unbiased_mmd`) between samples ``x`` and ``y`` with a sum of RBF
    kernels ``k(a, b) = sum_h exp(-||a - b||^2 / (2 h^2))``.

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

    return unbiased_mmd(kernel(x, x), kernel(y, y), kernel(x, y)).float()


def unbiased_mmd(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> Tensor:
    """Unbiased MMD^2 from kernel matrices (m, m), (n, n) and (m, n); m, n >= 2.

    ``sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1))
    - 2 sum_{i,j} k(x_i, y_j) / (mn)``: the diagonal terms are dropped, so the value can be
    slightly negative when the two laws are equal.
    """
    m, n = len(kxx), len(kyy)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2 * kxy.mean()


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


def mode_components(
    real: Tensor, neighbour_factor: float = 2.0, min_fraction: float = 0.02
) -> Tensor | None:
    """The separate modes of a point cloud: connected components of its neighbourhood graph.

    Two real points are linked when closer than ``eps = neighbour_factor * q99``, ``q99`` the
    99th percentile of the distances from each point to its nearest neighbour (so the rule
    scales with the sample size and the data's units). Components holding fewer than
    ``min_fraction`` of the points (stray noise points) are dropped.

    Args:
        real: shape (N, D), N >= 3.

    Returns:
        Labels of shape (N,), ``-1`` for dropped points and ``0..K-1`` for the K kept modes,
        or None when fewer than two modes are kept (nothing to weigh).
    """
    from scipy.sparse.csgraph import connected_components

    x = real.flatten(1).double().cpu()
    if len(x) < 3:
        return None
    d = torch.cdist(x, x)
    nearest = d.masked_fill(torch.eye(len(x), dtype=torch.bool), float("inf")).min(1).values
    eps = neighbour_factor * nearest.quantile(0.99)
    _, labels = connected_components((d < eps).numpy(), directed=False)
    labels = torch.as_tensor(labels)
    sizes = torch.bincount(labels)
    kept = (sizes >= min_fraction * len(x)).nonzero().flatten()
    if len(kept) < 2:
        return None
    out = torch.full_like(labels, -1)
    for k, component in enumerate(kept):
        out[labels == component] = k
    return out


def mode_weight_error(
    real: Tensor, fake: Tensor, labels: Tensor | None = None, max_points: int = 2000
) -> Tensor | None:
    """Total-variation distance between the real and generated mass of each mode.

    Modes are :func:`mode_components` of the real points; each generated point belongs to the
    mode of its nearest real point (stray real points excluded). With weights ``w_k`` (real)
    and ``v_k`` (generated), the error is ``sum_k |v_k - w_k| / 2``: 0 for the right split,
    0.1 when a tenth of the mass sits in the wrong mode. Its sampling noise with n generated
    points is about ``sqrt(w (1 - w) / n)`` per mode (0.016 for two equal modes, n = 1000).

    Args:
        real: shape (N, D); fake: shape (M, D).
        labels: :func:`mode_components` of ``real[:max_points]`` if already known.
        max_points: only the first ``max_points`` real points define the modes (the graph
            costs max_points^2 memory).

    Returns:
        0-d tensor, or None when the real points form fewer than two modes.
    """
    real = real[:max_points]
    labels = mode_components(real) if labels is None else labels
    if labels is None:
        return None
    keep = labels >= 0
    anchors = real.flatten(1).double().cpu()[keep]
    anchor_labels = labels[keep]
    num_modes = int(anchor_labels.max()) + 1
    nearest = torch.cdist(fake.flatten(1).double().cpu(), anchors).argmin(1)
    fake_weights = torch.bincount(anchor_labels[nearest], minlength=num_modes) / len(fake)
    real_weights = torch.bincount(anchor_labels, minlength=num_modes) / len(anchor_labels)
    return ((fake_weights - real_weights).abs().sum() / 2).float()


class SampleQuality(Metric):
    """Accumulates real and generated points over an epoch and reports MMD^2, SWD and, for
    low-dimensional data made of separate modes, the mode-weight error.

    ``compute()`` returns (0-d tensors):

    * ``mmd``: :func:`mmd_rbf` with bandwidths ``BANDWIDTH_FACTORS`` (0.1, 0.2, 0.5, 1) times
      the median pairwise distance of the real points;
    * ``mmd_wide``: the same with ``WIDE_BANDWIDTH_FACTORS`` (1, 2, 4) times that distance,
      which sees how mass is split between modes;
    * ``swd``: :func:`sliced_wasserstein` over ``num_projections`` directions;
    * ``mode_weight_error``: :func:`mode_weight_error`, only for data of at most
      ``MODE_MAX_DIMS`` dimensions whose real points form at least two separate modes.

    The bandwidth rules depend on the real points only, so scores of different models on the
    same data are comparable. States are concatenated across processes, so the values are the
    same under DDP.
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
        h = median_pairwise_distance(real).item()
        generator = torch.Generator().manual_seed(self.seed)
        out = {
            "mmd": mmd_rbf(real, fake, [f * h for f in BANDWIDTH_FACTORS]),
            "mmd_wide": mmd_rbf(real, fake, [f * h for f in WIDE_BANDWIDTH_FACTORS]),
            "swd": sliced_wasserstein(real, fake, self.num_projections, generator),
        }
        if real.shape[1] <= MODE_MAX_DIMS:
            error = mode_weight_error(real, fake)
            if error is not None:
                out["mode_weight_error"] = error.to(real.device)
        return out


# --------------------------------------------------------------------------- FID / KID


def mean_cov(features: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean and unbiased covariance of feature rows, in float64.

    Args:
        features: shape (N, d), N >= 2.

    Returns:
        ``(mu, sigma)`` of shapes (d,) and (d, d).
    """
    x = features.double()
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (len(x) - 1)


def sqrtm_psd(sigma: Tensor) -> Tensor:
    """Symmetric square root of a symmetric positive semi-definite matrix (d, d) -> (d, d).

    ``V diag(sqrt(max(w, 0))) V^T`` from the eigendecomposition ``sigma = V diag(w) V^T``;
    tiny negative eigenvalues from round-off are clamped to 0.
    """
    sigma = (sigma + sigma.T) / 2
    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(
    mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor, sqrt_sigma1: Tensor | None = None
) -> Tensor:
    """Fréchet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``d^2 = ||mu1 - mu2||^2 + Tr(sigma1) + Tr(sigma2) - 2 Tr((sigma1 sigma2)^{1/2})``, with
    ``Tr((S1 S2)^{1/2}) = Tr((S1^{1/2} S2 S1^{1/2})^{1/2})`` = the sum of the square roots of
    the eigenvalues of the symmetric PSD matrix ``S1^{1/2} S2 S1^{1/2}`` (stable ``eigh``
    instead of a general ``sqrtm``). Computed in float64.

    Args:
        mu1, mu2: means, shape (d,).
        sigma1, sigma2: covariances, shape (d, d).
        sqrt_sigma1: ``sqrtm_psd(sigma1)`` if already known (saves one eigendecomposition).

    Returns:
        0-d float64 tensor (>= 0 up to round-off).
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    root = sqrtm_psd(sigma1) if sqrt_sigma1 is None else sqrt_sigma1.double()
    inner = root @ sigma2 @ root
    trace_sqrt = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0).sqrt().sum()
    return (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt


def polynomial_mmd(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD^2 (:func:`unbiased_mmd`) with the KID kernel ``k(a, b) = (a.b / d + 1)^3``,
    computed in float64.

    Args:
        x: shape (m, d), m >= 2.
        y: shape (n, d), n >= 2.

    Returns:
        0-d float64 tensor (can be slightly negative when the laws are equal).
    """
    x, y = x.double(), y.double()
    d = x.shape[1]

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.T / d + 1) ** 3

    return unbiased_mmd(kernel(x, x), kernel(y, y), kernel(x, y))


def extrapolate_to_infinity(sizes: Sequence[int], values: Sequence[float] | Tensor) -> Tensor:
    """Least-squares fit of ``value = a + b / N`` over sample sizes; returns the intercept ``a``.

    This is the FID∞ / KID∞ estimate of Chong and Forsyth (2020): the value an infinite
    sample would give.

    Args:
        sizes: sample sizes N, at least two distinct values.
        values: the metric at each size, same length.

    Returns:
        0-d float64 tensor ``a``.
    """
    inv_n = 1.0 / torch.as_tensor(sizes, dtype=torch.float64)
    v = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    if len(inv_n) != len(v) or len(set(sizes)) < 2:
        raise ValueError(f"need >= 2 distinct sizes and one value each, got {sizes}, {values}")
    design = torch.stack([torch.ones_like(inv_n), inv_n], dim=1)
    return torch.linalg.lstsq(design, v.unsqueeze(1)).solution[0, 0]


# --------------------------------------------------------------------------- metric


class FeatureDistances(Metric):
    """Keeps real and generated feature rows; ``compute()`` gives FID, KID and FID∞ / KID∞.

    Real features survive :meth:`reset` (the real statistics are computed once), generated
    ones do not. Both states are lists concatenated across processes on ``compute()``.

    Returns of ``compute()``: a dict of 0-d float64 tensors ``fid``, ``kid`` (mean over
    ``kid_subsets`` random subsets of ``kid_subset_size`` rows of each set), ``kid_std`` (their
    spread) and, when ``inf_sizes`` is given, ``fid_inf`` and ``kid_inf``: FID (all real rows
    against N generated rows) and KID (N rows of each, at most all real rows) for each N in
    ``inf_sizes``, regressed on 1/N by :func:`extrapolate_to_infinity`. Subsets are drawn from
    a generator seeded with ``seed``, so every process gets the same values.

    Args:
        kid_subset_size: rows per KID subset; lowered (with a warning) to the number of rows
            available when fewer.
        kid_subsets: number of KID subsets.
        inf_sizes: generated sample sizes for FID∞ / KID∞ (None: not computed); sizes above the
            number of generated rows are dropped.
        seed: seed of the subset draws.
        reset_real_features: also clear the real features on :meth:`reset`.
    """

    full_state_update = False
    higher_is_better = False
    is_differentiable = False

    def __init__(
        self,
        kid_subset_size: int = 100,
        kid_subsets: int = 100,
        inf_sizes: Sequence[int] | None = None,
        seed: int = 0,
        reset_real_features: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kid_subset_size = kid_subset_size
        self.kid_subsets = kid_subsets
        self.inf_sizes = sorted(set(inf_sizes)) if inf_sizes is not None else None
        self.seed = seed
        self.reset_real_features = reset_real_features
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, features: Tensor, real: bool) -> None:
        """Adds feature rows of shape (B, d) to the real or generated set."""
        if features.dim() != 2:
            raise ValueError(f"features must have shape (B, d), got {tuple(features.shape)}")
        (self.real_features if real else self.fake_features).append(features.detach())

    def compute(self) -> dict[str, Tensor]:
        real, fake = dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features)
        if len(real) < 2 or len(fake) < 2:
            raise RuntimeError(
                f"FID needs >= 2 real and generated rows, got {len(real)}, {len(fake)}"
            )
        gen = torch.Generator().manual_seed(self.seed)

        def subset(x: Tensor, n: int) -> Tensor:
            return x[torch.randperm(len(x), generator=gen)[:n].to(x.device)]

        mu_r, sigma_r = mean_cov(real)
        root_r = sqrtm_psd(sigma_r)
        out = {"fid": frechet_distance(mu_r, sigma_r, *mean_cov(fake), sqrt_sigma1=root_r)}

        m = min(self.kid_subset_size, len(real), len(fake))
        if m < self.kid_subset_size:
            rank_zero_warn(
                f"kid_subset_size={self.kid_subset_size} is more than the {len(real)} real / "
                f"{len(fake)} generated rows available; using subsets of {m}"
            )
        kids = torch.stack(
            [polynomial_mmd(subset(real, m), subset(fake, m)) for _ in range(self.kid_subsets)]
        )
        out["kid"], out["kid_std"] = kids.mean(), kids.std(unbiased=False)

        sizes = [n for n in self.inf_sizes or [] if 2 <= n <= len(fake)]
        if len(sizes) >= 2:
            order = fake[torch.randperm(len(fake), generator=gen).to(fake.device)]
            fids = [
                frechet_distance(mu_r, sigma_r, *mean_cov(order[:n]), sqrt_sigma1=root_r)
                for n in sizes
            ]
            kids_n = [polynomial_mmd(subset(real, n), order[:n]) for n in sizes]
            out["fid_inf"] = extrapolate_to_infinity(sizes, torch.stack(fids))
            out["kid_inf"] = extrapolate_to_infinity(sizes, torch.stack(kids_n))
        elif self.inf_sizes:
            rank_zero_warn(f"fewer than 2 of inf_sizes={self.inf_sizes} fit {len(fake)} rows")
        return out

    def reset(self) -> None:
        """Clears the generated features (and the real ones if ``reset_real_features``)."""
        real = list(self.real_features)  # Metric.reset clears lists in place
        super().reset()
        if not self.reset_real_features:
            self.real_features = real
