"""FID and KID (and their sample-size-free extrapolations FID∞ / KID∞) of model samples.

:class:`FIDCallback` compares ``pl_module.sample(n)`` with held-out data after validation
epochs and logs ``val/fid``, ``val/kid``, ``val/kid_std`` (and ``val/fid_inf``, ``val/kid_inf``).
Features come from one of four extractors, all plain ``nn.Module`` s returning (N, d) with an
integer ``num_features`` attribute, so they also plug into torchmetrics'
``FrechetInceptionDistance(feature=module)`` / ``KernelInceptionDistance(feature=module)``:

* :class:`FlattenFeatures` ("identity features") for low-dimensional data;
* :class:`InceptionFeatures`, the FID Inception v3 (torch-fidelity's, TF-compatible resize) on
  images in [-1, 1], from a local weights file (nothing is ever downloaded);
* :class:`~lebm.nets.digit_classifier.DigitFeatures` ("FID in digit-classifier feature
  space"), the 128-d penultimate layer of a small CNN trained on sklearn's digits and shipped
  with the package (``lebm/assets/digit_classifier.pt``): offline features for 1-channel digit
  images in [-1, 1] of any size (8 x 8 digits, 28 x 28 MNIST); values are not comparable
  with Inception FIDs;
* any ``nn.Module`` named by import path.

Each data point's features are computed once, and :class:`FeatureDistances` (a torchmetrics
``Metric``) keeps them, so FID, KID and the FID∞ regression all come from one pass.

Distributed runs: rank r generates ``num_samples // world_size`` points (the remainder goes to
the first ranks, so the total is ``num_samples``) from a generator seeded with ``seed + r``, and
takes the real points ``real[r::world_size]``; the metric's states are concatenated across ranks
(``dist_reduce_fx="cat"``) inside ``compute()``, which every rank calls, so no point is counted
twice. Rank 0's values are then broadcast and logged by every rank with ``sync_dist=False``,
so all ranks hold one identical value (usable by ``ModelCheckpoint(monitor="val/fid")``).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat, rank_zero_warn

FeatureKind = Literal["flatten", "inception", "digits", "module"]
FEATURE_KINDS: tuple[str, ...] = ("flatten", "inception", "digits", "module")
REAL_SPLITS: tuple[str, ...] = ("train", "val", "test")

INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
"""torch-fidelity's FID Inception v3 weights; pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``
is the same conversion of the TF 2015-12-05 graph (same hash suffix)."""
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILENAME
)


# --------------------------------------------------------------------------- math


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
    """Unbiased MMD^2 with the KID kernel ``k(a, b) = (a.b / d + 1)^3``.

    ``MMD^2 = sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (n(n-1))
    - 2 sum_{i,j} k(x_i, y_j) / (mn)``, computed in float64.

    Args:
        x: shape (m, d), m >= 2.
        y: shape (n, d), n >= 2.

    Returns:
        0-d float64 tensor (can be slightly negative when the laws are equal).
    """
    x, y = x.double(), y.double()
    m, n, d = len(x), len(y), x.shape[1]

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.T / d + 1) ** 3

    kxx, kyy = kernel(x, x), kernel(y, y)
    xx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2 * kernel(x, y).mean()


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


# --------------------------------------------------------------------------- features


class FlattenFeatures(nn.Module):
    """Identity features: (N, *shape) -> (N, d) with ``d = prod(shape) = num_features``.

    Output is float64 (float32 on MPS, which has no float64), as FID of low-dimensional data is
    sensitive to round-off.

    Args:
        num_features: d, the number of values per data point.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(f"num_features must be >= 1, got {num_features}")
        self.num_features = int(num_features)

    def forward(self, x: Tensor) -> Tensor:
        """(N, *shape) -> (N, num_features)."""
        x = x.reshape(len(x), -1)
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} values per point, got {x.shape[1]}")
        return x.float() if x.device.type == "mps" else x.double()


def default_inception_weights() -> Path:
    """Where torch hub would cache the weights: ``<torch.hub.get_dir()>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME


def resolve_inception_weights(path: str | Path | None) -> Path:
    """The Inception weights file to load, checked to exist (without touching the network).

    Args:
        path: a local file; None means :func:`default_inception_weights`.

    Raises:
        FileNotFoundError: naming the expected path and where to get the file.
    """
    expected = Path(path).expanduser() if path is not None else default_inception_weights()
    if expected.is_file():
        return expected
    raise FileNotFoundError(
        f"FID Inception v3 weights not found at {expected}. They cannot be downloaded here (no "
        f"internet access is assumed), so place the file there yourself: torch-fidelity's "
        f"{INCEPTION_FILENAME} from {INCEPTION_URL} (the same weights as pytorch-fid's "
        f"pt_inception-2015-12-05-6726825d.pth), then pass its path, e.g. "
        f"`lebm fit ... --trainer.callbacks+=callbacks.FIDCallback "
        f"--trainer.callbacks.init_args.features=inception "
        f"--trainer.callbacks.init_args.inception_weights=/path/to/{INCEPTION_FILENAME}`"
    )


class InceptionFeatures(nn.Module):
    """2048-d pool features of the FID Inception v3 for images in [-1, 1].

    Images (N, C, H, W) with C = 1 or 3 are mapped to uint8 by ``round((x + 1) / 2 * 255)``
    (clamped), 1-channel images are repeated to RGB, and torch-fidelity's
    ``FeatureExtractorInceptionV3`` resizes to 299 x 299 the way TF 1.x did (the standard for
    reported FIDs). Always in eval mode, no gradients.

    Args:
        weights_path: local weights file (see :func:`resolve_inception_weights`); checked before
            the network is built, so a missing file never leads to a download attempt.
    """

    num_features = 2048

    def __init__(self, weights_path: str | None = None) -> None:
        super().__init__()
        path = resolve_inception_weights(weights_path)
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
        )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [-1, 1] -> (N, 2048) float32."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"Inception features need images (N, 1|3, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        pixels = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        return self.net(pixels)[0].reshape(len(x), -1).float()


def build_feature_module(path: str, args: dict | None = None) -> nn.Module:
    """Instantiates ``path`` (``"package.module.ClassName"``) with ``**args``.

    Raises:
        ValueError: if it cannot be imported, is not an ``nn.Module`` or lacks an integer
            ``num_features``.
    """
    module_name, _, class_name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"feature_module={path!r} cannot be imported: {err}") from err
    module = cls(**(args or {}))
    if not isinstance(module, nn.Module):
        raise ValueError(f"feature_module={path!r} is not a torch.nn.Module")
    num = getattr(module, "num_features", None)
    if isinstance(num, Tensor):
        num = int(num.item())
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise ValueError(
            f"feature_module={path!r} needs an int attribute num_features, got {num!r}"
        )
    return module


# --------------------------------------------------------------------------- callback


def _first_tensor(batch: Any) -> Tensor:
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, list | tuple) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(f"expected a tensor batch or a tuple/list starting with one, got {type(batch)}")


def _collect(loader: Iterable, n: int) -> Tensor:
    """The first n points yielded by a dataloader (tensors, or tuples whose first item is one)."""
    parts, count = [], 0
    for batch in loader:
        x = _first_tensor(batch)
        parts.append(x[: n - count])
        count += len(parts[-1])
        if count >= n:
            break
    if not parts:
        raise RuntimeError("the real-data dataloader yielded no batches")
    return torch.cat(parts)


class FIDCallback(Callback):
    """Log FID / KID of ``pl_module.sample`` against real data after validation epochs.

    Logged (epoch level, identical on every rank): ``val/fid``, ``val/kid``, ``val/kid_std``
    and, with ``fid_inf``, ``val/fid_inf`` and ``val/kid_inf``. The callback only observes:
    samples and features are computed without gradients, the metric state lives on the
    callback (not in the model or its checkpoints) and is moved to the model's device.

    Real points come from ``trainer.datamodule.split(real_split)`` when the datamodule has
    ``split``, else from its ``<real_split>_dataloader()`` (must give the same order on every
    rank); their features are computed once, at the first evaluation, and kept. Generated
    points are drawn with a generator seeded with ``seed`` (+ rank), so successive evaluations
    differ only by the model. See the module docstring for the multi-process split.

    Args:
        features: ``"flatten"`` (raw values, low-dimensional data), ``"inception"`` (FID
            Inception v3 on images in [-1, 1]), ``"digits"`` (the shipped digit classifier's
            penultimate layer, :class:`~lebm.nets.digit_classifier.DigitFeatures`, for
            1-channel digit images in [-1, 1] of any size) or ``"module"`` (``feature_module``).
        inception_weights: local Inception weights file; None means torch hub's cache path
            (:func:`default_inception_weights`). Checked at ``setup``; never downloaded.
        digit_weights: digit-classifier weights file for ``features="digits"``; None means the
            shipped ``lebm/assets/digit_classifier.pt``. Checked at ``setup``; a missing file
            names the command that regenerates it.
        feature_module: import path of an ``nn.Module`` class with an int ``num_features``,
            mapping (N, *data_shape) to (N, num_features); for ``features="module"``.
        feature_module_args: keyword arguments for ``feature_module``.
        num_samples: generated points per evaluation (summed over ranks); >= 2.
        num_real_samples: cap on the real points used (None: ``num_samples``).
        every_n_epochs: evaluate after every n-th validation epoch of ``fit`` (and always
            after the last; ``trainer.validate`` always evaluates).
        kid_subset_size: rows per KID subset; <= num_samples (lowered to the real count with a
            warning when there are fewer real points).
        kid_subsets: number of random KID subsets.
        fid_inf: also log FID∞ / KID∞ (Chong and Forsyth 2020).
        fid_inf_sizes: generated sample sizes for the 1/N regression; default five sizes
            ``num_samples * k / 5``, k = 1..5. Each in [2, num_samples].
        real_split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: points per ``sample`` / feature-extractor call.
        seed: seed of the sampling noise and of the KID / FID∞ subsets.
    """

    def __init__(
        self,
        features: FeatureKind = "flatten",
        inception_weights: str | None = None,
        digit_weights: str | None = None,
        feature_module: str | None = None,
        feature_module_args: dict | None = None,
        num_samples: int = 1000,
        num_real_samples: int | None = None,
        every_n_epochs: int = 1,
        kid_subset_size: int = 100,
        kid_subsets: int = 100,
        fid_inf: bool = False,
        fid_inf_sizes: list[int] | None = None,
        real_split: str = "val",
        batch_size: int = 250,
        seed: int = 0,
    ) -> None:
        if features not in FEATURE_KINDS:
            raise ValueError(f"features must be one of {list(FEATURE_KINDS)}, got {features!r}")
        if features == "module" and not feature_module:
            raise ValueError("features='module' needs feature_module (an import path)")
        if feature_module is not None and features != "module":
            raise ValueError(
                f"feature_module is only used with features='module', not {features!r}"
            )
        if inception_weights is not None and features != "inception":
            raise ValueError(
                f"inception_weights is only used with features='inception', not {features!r}"
            )
        if digit_weights is not None and features != "digits":
            raise ValueError(f"digit_weights is only used with features='digits', not {features!r}")
        if num_samples < 2:
            raise ValueError(f"num_samples must be >= 2, got {num_samples}")
        if num_real_samples is not None and num_real_samples < 2:
            raise ValueError(f"num_real_samples must be >= 2 (or None), got {num_real_samples}")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if not 2 <= kid_subset_size <= num_samples:
            raise ValueError(
                f"kid_subset_size must be in [2, num_samples={num_samples}], got {kid_subset_size}"
            )
        if kid_subsets < 1:
            raise ValueError(f"kid_subsets must be >= 1, got {kid_subsets}")
        checked = fid_inf or fid_inf_sizes is not None
        if fid_inf_sizes is None:
            fid_inf_sizes = [max(2, round(num_samples * k / 5)) for k in range(1, 6)]
        bad = any(not 2 <= n <= num_samples for n in fid_inf_sizes) or len(set(fid_inf_sizes)) < 2
        if checked and bad:
            raise ValueError(
                f"fid_inf_sizes must hold >= 2 distinct sizes in [2, num_samples={num_samples}], "
                f"got {fid_inf_sizes}"
            )
        if real_split not in REAL_SPLITS:
            raise ValueError(f"real_split must be one of {list(REAL_SPLITS)}, got {real_split!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.features = features
        self.inception_weights = inception_weights
        self.digit_weights = digit_weights
        self.feature_module = feature_module
        self.feature_module_args = feature_module_args
        self.num_samples = num_samples
        self.num_real_samples = num_real_samples or num_samples
        self.every_n_epochs = every_n_epochs
        self.kid_subset_size = kid_subset_size
        self.fid_inf = fid_inf
        self.fid_inf_sizes = sorted(set(fid_inf_sizes))
        self.real_split = real_split
        self.batch_size = batch_size
        self.seed = seed
        self.extractor: nn.Module | None = None
        self.metric = FeatureDistances(
            kid_subset_size, kid_subsets, self.fid_inf_sizes if fid_inf else None, seed
        )
        self._has_real = False

    # ------------------------------------------------------------------ hooks

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Checks the rank split and builds the feature extractor (weights files checked).

        Only for ``fit`` and ``validate``: testing or predicting never needs the weights.
        """
        if stage not in (TrainerFn.FITTING, TrainerFn.VALIDATING):
            return
        if trainer.world_size > self.num_samples:
            raise ValueError(
                f"num_samples={self.num_samples} is fewer than the {trainer.world_size} processes"
            )
        if self.extractor is None and self.features != "flatten":
            self.extractor = self._build_extractor()  # flatten: built once the data shape is known

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        standalone = trainer.state.fn == TrainerFn.VALIDATING  # trainer.validate(): always
        if (epoch + 1) % self.every_n_epochs and not last and not standalone:
            return
        for name, value in self.evaluate(trainer, pl_module).items():
            pl_module.log(
                f"val/{name}", value, on_epoch=True, sync_dist=False, rank_zero_only=False
            )

    # ------------------------------------------------------------------ work

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Real features (first call only), fresh samples, metric values; every rank calls it.

        Returns:
            ``{"fid", "kid", "kid_std"[, "fid_inf", "kid_inf"]}`` as floats, rank 0's values.
        """
        device = pl_module.device
        if not self._has_real:
            self._update_real(trainer, device)
        self.metric.to(device)
        rank, world = trainer.global_rank, trainer.world_size
        n_local = self.num_samples // world + (rank < self.num_samples % world)
        generator = torch.Generator(device).manual_seed(self.seed + rank)
        for start in range(0, n_local, self.batch_size):
            samples = pl_module.sample(min(self.batch_size, n_local - start), generator=generator)
            self._update(samples, real=False, device=device)
        try:
            values = {name: float(v) for name, v in self.metric.compute().items()}
        finally:
            self.metric.reset()
        return trainer.strategy.broadcast(values, src=0)

    def _build_extractor(self, data_shape: Sequence[int] | None = None) -> nn.Module:
        if self.features == "inception":
            module: nn.Module = InceptionFeatures(self.inception_weights)
        elif self.features == "digits":
            from lebm.nets.digit_classifier import DigitFeatures

            module = DigitFeatures(self.digit_weights)
        elif self.features == "module":
            assert self.feature_module is not None
            module = build_feature_module(self.feature_module, self.feature_module_args)
        else:
            assert data_shape is not None
            module = FlattenFeatures(math.prod(data_shape))
        return module.eval().requires_grad_(False)

    @torch.no_grad()
    def _update(self, x: Tensor, real: bool, device: torch.device) -> None:
        assert self.extractor is not None
        self.extractor.to(device)
        for chunk in x.split(self.batch_size):
            self.metric.update(self.extractor(chunk.to(device)), real=real)

    def _real_data(self, trainer: L.Trainer) -> Tensor:
        """Up to ``num_real_samples`` real points, shape (N, *data_shape), same on every rank."""
        dm = trainer.datamodule
        split = getattr(dm, "split", None)
        if callable(split):
            return split(self.real_split)[: self.num_real_samples]
        if dm is not None:
            loader = getattr(dm, f"{self.real_split}_dataloader")()
        elif self.real_split == "val":
            loader = trainer.val_dataloaders
        else:
            raise RuntimeError(f"real_split={self.real_split!r} needs a datamodule")
        if isinstance(loader, list | tuple):
            loader = loader[0] if loader else []
        return _collect(loader, self.num_real_samples)

    def _update_real(self, trainer: L.Trainer, device: torch.device) -> None:
        real = self._real_data(trainer)
        world = trainer.world_size
        if len(real) < max(2, world):
            raise RuntimeError(
                f"FID needs >= max(2, world_size={world}) real points from split "
                f"{self.real_split!r}, got {len(real)}"
            )
        if self.extractor is None:
            self.extractor = self._build_extractor(real.shape[1:])
        self.metric.to(device)
        self._update(real[trainer.global_rank :: world], real=True, device=device)
        self._has_real = True
