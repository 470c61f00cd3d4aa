"""Two-dimensional (and one 1-D) toy distributions as in-memory datamodules.

Every class here is a :class:`~datamodules.base.ToyDataModule`: it shares the base's
arguments (``num_samples``, ``seed``, ``batch_size``, split fractions, ``standardize``,
``num_predict_samples``, ``num_workers``), differs in the meaning of ``noise`` and its
default (the class attribute ``default_noise``, used when ``noise`` is ``None``), and may
add arguments of its own. Such a subclass declares only its extra arguments and forwards
``**kwargs`` to the base, which jsonargparse / LightningCLI resolve to the full signature.

Summary (``data_shape``, meaning of ``noise``, ``default_noise``):

* :class:`MoonsDataModule` — (2,), sklearn ``make_moons`` Gaussian noise std, 0.05.
* :class:`CirclesDataModule` — (2,), sklearn ``make_circles`` Gaussian noise std, 0.05.
* :class:`SwissRollDataModule` — (2,), sklearn ``make_swiss_roll`` noise std *before* the
  1/5 rescaling, 0.25.
* :class:`EightGaussiansDataModule` — (2,), std of each of the 8 components, 0.1.
* :class:`CheckerboardDataModule` — (2,), std of optional Gaussian jitter, 0.0.
* :class:`TwoModesDataModule` — (2,), std of each of the 2 components, 1.0.
* :class:`GaussianMixture1DDataModule` — (1,), unused, 0.0.
"""

import math
from collections.abc import Sequence

import numpy as np
from sklearn.datasets import make_circles, make_moons, make_swiss_roll

from datamodules.base import ToyDataModule


class MoonsDataModule(ToyDataModule):
    """Two interleaving half circles (scikit-learn ``make_moons``), raw sklearn scale.

    Points lie roughly in [-1, 2] x [-0.5, 1]. ``noise`` is the std of the Gaussian noise
    sklearn adds to every coordinate; default 0.05. See
    :class:`~datamodules.base.ToyDataModule` for the other arguments.
    """

    data_shape = (2,)
    default_noise = 0.05

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        x, _ = make_moons(n_samples=n, noise=self.noise, random_state=self._sklearn_seed(rng))
        return x


class CirclesDataModule(ToyDataModule):
    """Two concentric circles (scikit-learn ``make_circles``): radius 1 and ``factor``.

    ``noise`` is the std of the Gaussian noise sklearn adds to every coordinate; default
    0.05. See :class:`~datamodules.base.ToyDataModule` for the other arguments.

    Args:
        factor: Radius of the inner circle relative to the outer one; in (0, 1).
    """

    data_shape = (2,)
    default_noise = 0.05

    def __init__(
        self,
        *,
        factor: float = 0.5,
        **kwargs,
    ) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        super().__init__(**kwargs)
        self.factor = float(factor)

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        x, _ = make_circles(
            n_samples=n,
            noise=self.noise,
            factor=self.factor,
            random_state=self._sklearn_seed(rng),
        )
        return x


class SwissRollDataModule(ToyDataModule):
    """2-D Swiss roll: columns 0 and 2 of scikit-learn ``make_swiss_roll``, divided by 5.

    sklearn's roll spans about [-10, 13] per coordinate; dividing by 5 brings it to order-1
    scale (about [-2, 2.6]). ``noise`` is the std of the Gaussian noise sklearn adds
    *before* the division (default 0.25), so the effective noise std is ``noise / 5`` (0.05
    by default). See :class:`~datamodules.base.ToyDataModule` for the other arguments.
    """

    data_shape = (2,)
    default_noise = 0.25

    #: Divisor applied to sklearn's coordinates.
    scale: float = 5.0

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        x, _ = make_swiss_roll(n_samples=n, noise=self.noise, random_state=self._sklearn_seed(rng))
        return x[:, [0, 2]] / self.scale


class EightGaussiansDataModule(ToyDataModule):
    """Equal-weight mixture of 8 isotropic Gaussians on a circle.

    Component ``k`` (k = 0..7) is centred at ``radius * (cos(k pi / 4), sin(k pi / 4))`` and
    has std ``noise`` (default 0.1) in every coordinate. See
    :class:`~datamodules.base.ToyDataModule` for the other arguments.

    Args:
        radius: Radius of the circle carrying the means; > 0.
    """

    data_shape = (2,)
    default_noise = 0.1

    def __init__(
        self,
        *,
        radius: float = 2.0,
        **kwargs,
    ) -> None:
        if not radius > 0:
            raise ValueError(f"radius must be > 0, got {radius!r}")
        super().__init__(**kwargs)
        self.radius = float(radius)

    @property
    def centers(self) -> np.ndarray:
        """The 8 component means, shape (8, 2), in raw (unstandardized) coordinates."""
        angles = np.arange(8) * (2 * math.pi / 8)
        return self.radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        component = rng.integers(0, 8, size=n)
        return self.centers[component] + self.noise * rng.standard_normal((n, 2))


class CheckerboardDataModule(ToyDataModule):
    """Uniform distribution over the filled squares of a 4 x 4 checkerboard on [-2, 2]^2.

    The board is cut into unit squares ``[i, i + 1) x [j, j + 1)`` for integers
    ``i, j in {-2, -1, 0, 1}``; a square is filled when ``i + j`` is even (8 of the 16, in
    the alternating pattern), and points are uniform over the filled squares. With the
    default ``noise = 0`` every point lies in a filled square; a positive ``noise`` adds
    Gaussian jitter of that std to every coordinate (points may then leave their square).
    See :class:`~datamodules.base.ToyDataModule` for the other arguments.
    """

    data_shape = (2,)
    default_noise = 0.0

    @staticmethod
    def filled_squares() -> np.ndarray:
        """Lower-left corners ``(i, j)`` of the 8 filled unit squares, shape (8, 2)."""
        corners = [(i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0]
        return np.asarray(corners, dtype=np.float64)

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        corners = self.filled_squares()
        x = corners[rng.integers(0, len(corners), size=n)] + rng.random((n, 2))
        if self.noise > 0:
            x = x + self.noise * rng.standard_normal((n, 2))
        return x


class TwoModesDataModule(ToyDataModule):
    """Two well-separated isotropic Gaussians (the toy example of the NCSN paper).

    ``weight * N((offset, offset), noise^2 I) + (1 - weight) * N((-offset, -offset), noise^2 I)``;
    by default ``0.8 N((5, 5), I) + 0.2 N((-5, -5), I)``. ``noise`` is the component std
    (default 1.0). See :class:`~datamodules.base.ToyDataModule` for the other arguments.

    Args:
        weight: Mixture weight of the component at ``(offset, offset)``; in (0, 1).
        offset: Coordinate of the first mean; the second is its negative.
    """

    data_shape = (2,)
    default_noise = 1.0

    def __init__(
        self,
        *,
        weight: float = 0.8,
        offset: float = 5.0,
        **kwargs,
    ) -> None:
        if not 0 < weight < 1:
            raise ValueError(f"weight must be in (0, 1), got {weight!r}")
        if not math.isfinite(offset):
            raise ValueError(f"offset must be finite, got {offset!r}")
        super().__init__(**kwargs)
        self.weight = float(weight)
        self.offset = float(offset)

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        first = rng.random(n) < self.weight
        means = np.where(first[:, None], self.offset, -self.offset) * np.ones((1, 2))
        return means + self.noise * rng.standard_normal((n, 2))


def _pair(name: str, value: Sequence[float]) -> tuple[float, float]:
    """Validates that ``value`` is a pair of finite numbers and returns it as floats."""
    try:
        pair = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers, got {value!r}") from None
    if len(pair) != 2:
        raise ValueError(f"{name} must have exactly 2 entries, got {value!r}")
    if not all(math.isfinite(v) for v in pair):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return pair  # type: ignore[return-value]


class GaussianMixture1DDataModule(ToyDataModule):
    """One-dimensional mixture of two Gaussians; ``data_shape == (1,)``.

    ``weights[0] * N(means[0], stds[0]^2) + weights[1] * N(means[1], stds[1]^2)``; by
    default ``0.25 N(-9, 1) + 0.75 N(4, 2^2)``. The component stds are set by ``stds``, so
    ``noise`` is unused (kept, default 0.0, for a uniform interface). See
    :class:`~datamodules.base.ToyDataModule` for the other arguments.

    Args:
        weights: Component weights; both > 0, summing to 1 (within 1e-6).
        means: Component means.
        stds: Component standard deviations; both > 0.
    """

    data_shape = (1,)
    default_noise = 0.0

    def __init__(
        self,
        *,
        weights: tuple[float, float] = (0.25, 0.75),
        means: tuple[float, float] = (-9.0, 4.0),
        stds: tuple[float, float] = (1.0, 2.0),
        **kwargs,
    ) -> None:
        weights = _pair("weights", weights)
        means = _pair("means", means)
        stds = _pair("stds", stds)
        if not all(w > 0 for w in weights):
            raise ValueError(f"weights must all be > 0, got {weights!r}")
        if abs(sum(weights) - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to 1 (within 1e-6), got {weights!r}")
        if not all(s > 0 for s in stds):
            raise ValueError(f"stds must all be > 0, got {stds!r}")
        super().__init__(**kwargs)
        self.weights = weights
        self.means = means
        self.stds = stds

    def _generate(self, n: int, rng: np.random.Generator) -> np.ndarray:
        second = rng.random(n) >= self.weights[0]
        loc = np.where(second, self.means[1], self.means[0])
        scale = np.where(second, self.stds[1], self.stds[0])
        return (loc + scale * rng.standard_normal(n))[:, None]
