"""Densities in low dimension: grid normalisers, a kernel density baseline, NCE noise.

* :func:`grid_points` / :func:`grid_log_normalizer`: in 1-D and 2-D the normaliser of an
  unnormalised density ``exp(f(x))`` is a sum over a grid of cell centres (midpoint rule)::

      log Z = log sum_k exp(f(c_k)) + log |cell|  ~  log int_box exp(f(x)) dx

  exact up to the grid error, O(h^2) for smooth f. The density is normalised over the box
  ``[low, high]^D``: mass an unnormalised model puts outside it is not counted, so choose a box
  that holds the data with a margin (standardised toy data: ``(-4, 4)``).
* :func:`kde_log_density`: a Gaussian kernel density estimate with its bandwidth chosen by
  held-out likelihood, the baseline NLL beside a model's.
* :class:`GaussianNoise`: the noise distribution of noise-contrastive estimation, a Gaussian
  over flattened data fitted to the training data's mean and covariance (the usual choice) or
  given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

LogDensity = Callable[[Tensor], Tensor]
"""An unnormalised log-density: (B, D) -> (B,)."""


def check_grid(bounds: Sequence[float], size: int) -> tuple[float, float]:
    """``bounds`` as ``(low, high)``, or a ValueError naming the values."""
    low, high = (float(b) for b in bounds)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"grid_bounds must be two finite numbers low < high, got {tuple(bounds)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"grid_size must be an int >= 2, got {size!r}")
    return low, high


def grid_points(
    dim: int, bounds: Sequence[float], size: int, device=None, dtype=torch.float32
) -> tuple[Tensor, float]:
    """Cell centres of a regular grid on ``[low, high]^dim``, ``size`` cells per axis.

    Returns:
        (points of shape (size^dim, dim), the volume of one cell). In 2-D the points are in
        row-major order: ``points.view(size, size, 2)[i, j] = (x_j, y_i)`` (image layout).
    """
    if dim not in (1, 2):
        raise ValueError(f"grids are for 1-D or 2-D data, got dimension {dim}")
    low, high = check_grid(bounds, size)
    h = (high - low) / size
    axis = torch.linspace(low + h / 2, high - h / 2, size, device=device, dtype=dtype)
    if dim == 1:
        return axis[:, None], h
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=1), h * h


@torch.no_grad()
def grid_log_values(log_density: LogDensity, points: Tensor, chunk: int = 65536) -> Tensor:
    """``log_density`` at every point, evaluated ``chunk`` points at a time: (K, D) -> (K,)."""
    return torch.cat([log_density(points[i : i + chunk]) for i in range(0, len(points), chunk)])


def grid_log_normalizer(
    log_density: LogDensity,
    dim: int,
    bounds: Sequence[float] = (-4.0, 4.0),
    size: int = 400,
    device=None,
) -> Tensor:
    """``log Z = log sum_k exp(f(c_k)) |cell|`` over the grid of :func:`grid_points` (0-d).

    Args:
        log_density: the unnormalised ``f``: (B, dim) -> (B,).
        dim: data dimension, 1 or 2.
        bounds: ``(low, high)`` of the box, the same on every axis.
        size: cells per axis.
        device: where the grid lives (the model's device).
    """
    points, cell = grid_points(dim, bounds, size, device=device)
    return torch.logsumexp(grid_log_values(log_density, points), 0) + math.log(cell)


def _kde_log_density(train: Tensor, points: Tensor, bandwidth: float, chunk: int) -> Tensor:
    """``log (1/N) sum_i N(x; x_i, h^2 I)`` for each row of points (float64)."""
    n, dim = train.shape
    const = math.log(n) + 0.5 * dim * math.log(2 * math.pi * bandwidth**2)
    out = []
    for i in range(0, len(points), chunk):
        sq = torch.cdist(points[i : i + chunk], train).square()
        out.append(torch.logsumexp(-sq / (2 * bandwidth**2), dim=1) - const)
    return torch.cat(out)


@torch.no_grad()
def kde_log_density(
    train: Tensor,
    held_out: Tensor,
    evaluate: Tensor,
    bandwidths: Sequence[float] | None = None,
    chunk: int = 1024,
) -> tuple[Tensor, float]:
    """Gaussian kernel density estimate fitted on ``train``, its bandwidth the one of
    ``bandwidths`` that maximises the mean log-likelihood of ``held_out``; returns the log
    densities of ``evaluate`` (N,) and the bandwidth chosen.

    ``log p(x) = log (1/N) sum_i N(x; x_i, h^2 I)``, summed exactly (float64, ``chunk``
    points at a time; the same values as scikit-learn's ``KernelDensity`` with its default
    exact tolerances, see the tests). Default bandwidths: 24 values spaced logarithmically
    from 0.01 to 1 times the training data's mean per-coordinate standard deviation.
    """
    x_train = train.detach().flatten(1).double().cpu()
    x_held = held_out.detach().flatten(1).double().cpu()
    if bandwidths is None:
        scale = float(x_train.std(0).mean())
        bandwidths = torch.logspace(math.log10(0.01 * scale), math.log10(scale), 24).tolist()
    scores = [_kde_log_density(x_train, x_held, float(h), chunk).mean() for h in bandwidths]
    best = float(bandwidths[int(torch.stack(scores).argmax())])
    points = evaluate.detach().flatten(1).double().cpu()
    return _kde_log_density(x_train, points, best, chunk).to(evaluate.dtype), best


class GaussianNoise(nn.Module):
    """The NCE noise ``p_n = N(loc, L L^T)`` over flattened data (D = prod(data_shape)).

    ``fit=True`` (the default): the model calls :meth:`fit` with training data before training,
    setting ``loc`` to their mean and ``L L^T`` to their covariance (``"full"``) or its
    diagonal (``"diagonal"``), times ``scale^2`` (a ``scale`` above 1 widens the noise so that
    it covers the data's tails). ``fit=False``: ``N(mean, (std scale)^2 I)`` as given. The
    fitted values are buffers, saved in checkpoints.

    A noise of your own is any module built as ``noise(data_shape)`` with ``log_prob(x)``
    ((B, *data_shape) -> (B,), normalised) and ``sample(n, generator)``, and optionally
    ``fit(x)`` and a ``fitted`` flag.

    Args:
        data_shape: shape of one data point (supplied by the model).
        covariance: ``"full"`` or ``"diagonal"`` (the fitted covariance).
        scale: multiplies the standard deviations (fitted or given); > 0.
        fit: fit to the training data (True) or use ``mean`` and ``std``.
        mean: the given mean, every coordinate (``fit=False``).
        std: the given standard deviation, every coordinate (``fit=False``); > 0.
        jitter: added to the fitted covariance's diagonal, relative to its mean variance, so
            that the Cholesky factor exists for degenerate data (constant pixels).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        covariance: Literal["full", "diagonal"] = "full",
        scale: float = 1.0,
        fit: bool = True,
        mean: float = 0.0,
        std: float = 1.0,
        jitter: float = 1e-4,
    ) -> None:
        super().__init__()
        if covariance not in ("full", "diagonal"):
            raise ValueError(f"covariance must be 'full' or 'diagonal', got {covariance!r}")
        for name, value in (("scale", scale), ("std", std)):
            if not value > 0:
                raise ValueError(f"GaussianNoise: {name} must be > 0, got {value}")
        if not jitter >= 0:
            raise ValueError(f"GaussianNoise: jitter must be >= 0, got {jitter}")
        self.data_shape = tuple(data_shape)
        self.covariance, self.scale, self.jitter = covariance, float(scale), float(jitter)
        dim = math.prod(self.data_shape)
        self.register_buffer("loc", torch.full((dim,), float(mean)))
        self.register_buffer("scale_tril", torch.eye(dim) * float(std) * self.scale)
        self.register_buffer("fitted", torch.tensor(not fit))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Set ``loc`` and ``scale_tril`` from data x of shape (N, *data_shape), N >= 2."""
        flat = x.detach().flatten(1).to(self.loc)
        if len(flat) < 2:
            raise ValueError(f"GaussianNoise.fit needs at least 2 points, got {len(flat)}")
        cov = torch.cov(flat.T.double()).reshape(flat.shape[1], flat.shape[1])
        if self.covariance == "diagonal":
            cov = torch.diag(cov.diagonal())
        cov = cov + self.jitter * cov.diagonal().mean().clamp_min(1e-12) * torch.eye(len(cov)).to(
            cov
        )
        self.loc.copy_(flat.mean(0))
        self.scale_tril.copy_(torch.linalg.cholesky(cov).to(self.loc) * self.scale)
        self.fitted.fill_(True)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log N(x; loc, L L^T)``: (B, *data_shape) -> (B,)."""
        diff = (x.flatten(1) - self.loc).T  # (D, B)
        white = torch.linalg.solve_triangular(self.scale_tril, diff, upper=False)
        dim = len(self.loc)
        log_det = self.scale_tril.diagonal().log().sum()
        return -0.5 * white.pow(2).sum(0) - log_det - 0.5 * dim * math.log(2 * math.pi)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``loc + L eps``: shape (n, *data_shape)."""
        eps = torch.randn(
            n, len(self.loc), generator=generator, device=self.loc.device, dtype=self.loc.dtype
        )
        return (self.loc + eps @ self.scale_tril.T).view(n, *self.data_shape)
