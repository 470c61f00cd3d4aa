"""Tests for the in-memory toy datamodules in ``datamodules``."""

import inspect
import math

import lightning as L
import numpy as np
import pytest
import torch
from jsonargparse import ArgumentError, ArgumentParser

import datamodules
from datamodules import (
    CheckerboardDataModule,
    CirclesDataModule,
    EightGaussiansDataModule,
    GaussianMixture1DDataModule,
    MoonsDataModule,
    SampleRequests,
    SwissRollDataModule,
    ToyDataModule,
    TwoModesDataModule,
)

ALL_MODULES = [
    MoonsDataModule,
    CirclesDataModule,
    SwissRollDataModule,
    EightGaussiansDataModule,
    CheckerboardDataModule,
    TwoModesDataModule,
    GaussianMixture1DDataModule,
]
DEFAULT_NOISE = {
    MoonsDataModule: 0.05,
    CirclesDataModule: 0.05,
    SwissRollDataModule: 0.25,
    EightGaussiansDataModule: 0.1,
    CheckerboardDataModule: 0.0,
    TwoModesDataModule: 1.0,
    GaussianMixture1DDataModule: 0.0,
}
SMALL = {"num_samples": 1000, "batch_size": 64}

by_class = pytest.mark.parametrize("cls", ALL_MODULES, ids=lambda c: c.__name__)


# --------------------------------------------------------------------------- API surface


def test_exports():
    toy = {c.__name__ for c in ALL_MODULES} | {"ToyDataModule", "SampleRequests"}
    assert toy <= set(datamodules.__all__)  # image datamodules are tested in their own file
    for name in datamodules.__all__:
        assert hasattr(datamodules, name)


def test_base_is_abstract():
    with pytest.raises(TypeError):
        ToyDataModule()  # type: ignore[abstract]


BASE_ARGS = [
    "num_samples",
    "noise",
    "seed",
    "batch_size",
    "val_fraction",
    "test_fraction",
    "standardize",
    "num_predict_samples",
    "num_workers",
]


def _cli_defaults(cls) -> dict:
    """The constructor arguments and defaults jsonargparse (hence LightningCLI) resolves."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    return parser.parse_args([]).data.as_dict()


@by_class
def test_signature_is_cli_friendly(cls):
    """jsonargparse sees every base argument plus the subclass's own, all typed with defaults."""
    init = vars(cls).get("__init__")  # the subclass's own constructor, if it declares one
    own = [
        p
        for p in (list(inspect.signature(init).parameters.values())[1:] if init else [])
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    for p in own:  # the subclass's extra arguments, if any
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, p
        assert p.annotation is not inspect.Parameter.empty, f"{cls.__name__}.{p.name}"
        assert p.default is not inspect.Parameter.empty, f"{cls.__name__}.{p.name}"
    defaults = _cli_defaults(cls)
    assert set(defaults) == set(BASE_ARGS) | {p.name for p in own}
    assert defaults["noise"] is None  # resolved to the class default at construction
    for p in own:
        assert defaults[p.name] == p.default, p.name
    base = {k: v.default for k, v in inspect.signature(ToyDataModule.__init__).parameters.items()}
    assert all(defaults[k] == base[k] for k in BASE_ARGS)
    # The resolved defaults construct the module, with the class's own noise default.
    dm = cls(**{**defaults, **SMALL})
    assert dm.noise == cls.default_noise == DEFAULT_NOISE[cls]
    assert isinstance(dm.noise, float)


@by_class
def test_cli_parser_validates_args(cls):
    """Typed arguments are type-checked and unknown ones rejected by the parser."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    cfg = parser.parse_args(["--data.noise=0.3", "--data.batch_size=7"])
    assert cfg.data.noise == 0.3 and cfg.data.batch_size == 7
    with pytest.raises(ArgumentError, match="batch_size"):
        parser.parse_args(["--data.batch_size=abc"])
    with pytest.raises(ArgumentError, match="no_such"):
        parser.parse_args(["--data.no_such=1"])


@pytest.mark.parametrize(
    ("cls", "args", "attrs"),
    [
        (CirclesDataModule, ["--data.factor=0.3"], {"factor": 0.3}),
        (EightGaussiansDataModule, ["--data.radius=4"], {"radius": 4.0}),
        (TwoModesDataModule, ["--data.weight=0.4", "--data.offset=2"], {"weight": 0.4}),
        (GaussianMixture1DDataModule, ["--data.stds=[3, 4]"], {"stds": (3.0, 4.0)}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_cli_parser_subclass_args_reach_module(cls, args, attrs):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    cfg = parser.parse_args([*args, "--data.num_samples=50", "--data.seed=5"])
    dm = cls(**cfg.data.as_dict())
    assert dm.num_samples == 50 and dm.seed == 5 and dm.noise == DEFAULT_NOISE[cls]
    for name, value in attrs.items():
        assert getattr(dm, name) == value


@by_class
def test_noise_default_and_override(cls):
    assert cls(**SMALL).noise == DEFAULT_NOISE[cls]
    assert cls(**SMALL, noise=None).noise == DEFAULT_NOISE[cls]
    dm = cls(**SMALL, noise=0.2)
    assert dm.noise == 0.2 and isinstance(dm.noise, float)


def test_subclass_args_are_keyword_only():
    with pytest.raises(TypeError):
        EightGaussiansDataModule(1000)  # type: ignore[misc]


def test_subclass_without_default_noise_needs_explicit_noise():
    class NoDefault(ToyDataModule):
        def _generate(self, n, rng):
            return rng.standard_normal((n, 2))

    with pytest.raises(TypeError, match="default_noise"):
        NoDefault(**SMALL)
    assert NoDefault(**SMALL, noise=0.5).noise == 0.5


@by_class
def test_data_shape_before_setup_and_batches(cls):
    dm = cls(**SMALL)
    expected = (1,) if cls is GaussianMixture1DDataModule else (2,)
    assert dm.data_shape == expected
    assert dm._splits is None  # nothing generated yet
    dm.setup("fit")
    for split in ("train", "val", "test"):
        batch = next(iter(getattr(dm, f"{split}_dataloader")()))
        assert isinstance(batch, torch.Tensor)  # plain tensor, not a tuple / list
        assert batch.dtype == torch.float32
        assert batch.shape == (min(SMALL["batch_size"], len(dm.split(split))), *expected)
        assert torch.isfinite(batch).all()
    train_batches = list(dm.train_dataloader())
    assert all(b.shape == (SMALL["batch_size"], *expected) for b in train_batches)  # drop_last
    assert len(train_batches) == len(dm.split("train")) // SMALL["batch_size"]


@by_class
def test_same_seed_same_data_different_seed_different(cls):
    a, b, c = cls(**SMALL, seed=3), cls(**SMALL, seed=3), cls(**SMALL, seed=4)
    for name in ("train", "val", "test"):
        assert torch.equal(a.split(name), b.split(name))
    assert not torch.allclose(a.split("train"), c.split("train"))
    # Train shuffling is seeded too.
    assert torch.equal(next(iter(a.train_dataloader())), next(iter(b.train_dataloader())))


@by_class
def test_splits_disjoint_and_sizes_add_up(cls):
    dm = cls(num_samples=1000, val_fraction=0.15, test_fraction=0.05)
    train, val, test = dm.split("train"), dm.split("val"), dm.split("test")
    assert (len(train), len(val), len(test)) == (800, 150, 50)
    # Continuous data: distinct rows identify distinct points.
    rows = torch.cat([train, val, test]).numpy()
    assert len(np.unique(rows, axis=0)) == 1000
    assert len(set(map(tuple, val.tolist())) & set(map(tuple, train.tolist()))) == 0


def test_repr_lists_constructor_args():
    text = repr(CirclesDataModule(num_samples=50, factor=0.25))
    assert text.startswith("CirclesDataModule(num_samples=50, noise=0.05,")
    assert text.endswith("num_workers=0, factor=0.25)")
    assert "?" not in text
    text = repr(SwissRollDataModule(num_samples=50, seed=3))
    assert text == (
        "SwissRollDataModule(num_samples=50, noise=0.25, seed=3, batch_size=256, "
        "val_fraction=0.1, test_fraction=0.1, standardize=False, num_predict_samples=1000, "
        "num_workers=0)"
    )
    text = repr(GaussianMixture1DDataModule(num_samples=50))
    assert text.endswith("weights=(0.25, 0.75), means=(-9.0, 4.0), stds=(1.0, 2.0))")


def test_generation_is_idempotent():
    dm = MoonsDataModule(**SMALL)
    dm.setup("fit")
    first = dm.split("train")
    dm.setup("test")
    dm.setup()
    assert dm.split("train") is first


def test_split_rejects_unknown_name():
    dm = MoonsDataModule(**SMALL)
    with pytest.raises(ValueError, match="split name.*'validation'"):
        dm.split("validation")


def test_zero_fractions_give_empty_splits():
    dm = MoonsDataModule(num_samples=100, val_fraction=0.0, test_fraction=0.0, batch_size=32)
    assert len(dm.split("train")) == 100
    assert dm.split("val").shape == (0, 2)
    assert dm.split("test").shape == (0, 2)
    assert len(dm.val_dataloader()) == 0


def test_small_fractions_give_at_least_one_point():
    dm = MoonsDataModule(num_samples=10, val_fraction=0.01, test_fraction=0.01)
    assert [len(dm.split(n)) for n in ("train", "val", "test")] == [8, 1, 1]


def test_drop_last_only_when_train_larger_than_batch():
    dm = MoonsDataModule(num_samples=100, val_fraction=0.1, test_fraction=0.1, batch_size=500)
    batches = list(dm.train_dataloader())
    assert len(batches) == 1 and batches[0].shape == (80, 2)
    dm = MoonsDataModule(num_samples=100, val_fraction=0.1, test_fraction=0.1, batch_size=30)
    assert [len(b) for b in dm.train_dataloader()] == [30, 30]
    # Val / test keep their last partial batch.
    assert [len(b) for b in dm.val_dataloader()] == [10]


@by_class
def test_standardize(cls):
    dm = cls(**SMALL, standardize=True)
    train = dm.split("train").double()
    assert torch.allclose(train.mean(0), torch.zeros(dm.data_shape, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(
        train.std(0, correction=0), torch.ones(dm.data_shape, dtype=torch.float64), atol=1e-4
    )
    raw = cls(**SMALL)
    # Same points, just transformed with the train statistics.
    for name in ("train", "val", "test"):
        assert torch.allclose(dm.destandardize(dm.split(name)), raw.split(name), atol=1e-4)
    assert torch.allclose(dm.mean, raw.split("train").mean(0), atol=1e-5)


def test_no_standardize_is_identity():
    dm = TwoModesDataModule(**SMALL)
    assert torch.equal(dm.mean, torch.zeros(2)) and torch.equal(dm.std, torch.ones(2))
    x = dm.split("val")
    assert torch.equal(dm.destandardize(x), x)


@by_class
def test_predict_dataloader(cls):
    dm = cls(num_samples=100, batch_size=64, num_predict_samples=150)
    batches = list(dm.predict_dataloader())
    assert [len(b) for b in batches] == [64, 64, 22]
    assert sum(len(b) for b in batches) == 150
    assert torch.equal(torch.cat(batches), torch.arange(150))


def test_sample_requests():
    ds = SampleRequests(5)
    assert len(ds) == 5
    assert ds[3].item() == 3 and ds[3].ndim == 0
    with pytest.raises(IndexError):
        ds[5]


def test_worker_settings():
    dm = MoonsDataModule(**SMALL)
    assert dm.train_dataloader().persistent_workers is False
    dm = MoonsDataModule(**SMALL, num_workers=2)
    loader = dm.val_dataloader()
    assert loader.num_workers == 2 and loader.persistent_workers is True


# --------------------------------------------------------------------------- distributions


def test_two_modes_weight():
    x = TwoModesDataModule(num_samples=10_000, val_fraction=0.0, test_fraction=0.0).split("train")
    frac = (x[:, 0] > 0).float().mean().item()
    assert abs(frac - 0.8) < 0.03
    upper = x[x[:, 0] > 0]
    assert torch.allclose(upper.mean(0), torch.tensor([5.0, 5.0]), atol=0.1)
    assert abs(upper[:, 0].std().item() - 1.0) < 0.05


def test_two_modes_custom_args():
    dm = TwoModesDataModule(num_samples=5000, weight=0.3, offset=10.0, noise=0.5)
    x = dm.split("train")
    assert abs((x[:, 0] > 0).float().mean().item() - 0.3) < 0.03
    assert abs(x[x[:, 0] < 0, 1].mean().item() + 10.0) < 0.1


def test_gaussian_mixture_1d():
    dm = GaussianMixture1DDataModule(num_samples=10_000, val_fraction=0.0, test_fraction=0.0)
    x = dm.split("train")[:, 0].double()
    left = x < -2.5  # the components are ~6 stds apart; the midpoint splits them cleanly
    assert abs(left.double().mean().item() - 0.25) < 0.02
    assert abs(x[left].mean().item() + 9.0) < 0.15
    assert abs(x[~left].mean().item() - 4.0) < 0.15
    assert abs(x[left].std().item() - 1.0) < 0.1
    assert abs(x[~left].std().item() - 2.0) < 0.15


def test_eight_gaussians_near_radius():
    dm = EightGaussiansDataModule(num_samples=4000, radius=2.0)
    x = dm.split("train").double()
    r = x.norm(dim=1)
    assert abs(r.mean().item() - 2.0) < 0.02
    assert (r - 2.0).abs().max().item() < 0.6  # 0.1 std: > 5 sigma away is essentially impossible
    # Every point is near one of the 8 centers, and all 8 are used roughly equally.
    centers = torch.from_numpy(dm.centers)
    nearest = torch.cdist(x, centers).min(dim=1)
    assert nearest.values.max().item() < 0.6
    counts = torch.bincount(nearest.indices, minlength=8).double() / len(x)
    assert (counts - 1 / 8).abs().max().item() < 0.03
    wide = EightGaussiansDataModule(num_samples=1000, radius=5.0).split("train")
    assert abs(wide.norm(dim=1).mean().item() - 5.0) < 0.05


def test_checkerboard_points_in_filled_squares():
    x = CheckerboardDataModule(num_samples=5000).split("train").double()
    assert (x >= -2).all() and (x <= 2).all()
    # Distance from each point to the nearest filled unit square must be 0 (up to float32).
    corners = torch.from_numpy(CheckerboardDataModule.filled_squares())  # (8, 2)
    lo, hi = corners[None], corners[None] + 1
    gap = (torch.clamp(lo - x[:, None], min=0) + torch.clamp(x[:, None] - hi, min=0)).sum(-1)
    assert gap.min(dim=1).values.max().item() < 1e-6
    # All 8 filled squares are populated, the 8 empty ones are not.
    cells = torch.floor(x).clamp(-2, 1)
    assert ((cells.sum(1) % 2) == 0).float().mean().item() > 0.999
    assert len(torch.unique(cells, dim=0)) == 8
    # Jitter moves some points off the board.
    jittered = CheckerboardDataModule(num_samples=2000, noise=0.2).split("train")
    assert (jittered.abs() > 2).any()


def test_moons_circles_swissroll_scale():
    circles = CirclesDataModule(num_samples=4000, factor=0.5, noise=0.0).split("train").double()
    r = circles.norm(dim=1)
    assert torch.all(((r - 1).abs() < 1e-5) | ((r - 0.5).abs() < 1e-5))
    moons = MoonsDataModule(num_samples=2000, noise=0.0).split("train")
    assert moons[:, 0].min() >= -1 - 1e-5 and moons[:, 0].max() <= 2 + 1e-5
    roll = SwissRollDataModule(num_samples=2000).split("train")
    assert roll.abs().max() < 4  # order-1 after dividing by 5 (raw sklearn reaches ~13)
    assert roll.abs().max() > 1.5


# --------------------------------------------------------------------------- validation

BAD_BASE_ARGS = [
    ({"num_samples": 9}, "num_samples"),
    ({"noise": -0.1}, "noise"),
    ({"noise": math.nan}, "noise"),
    ({"batch_size": 0}, "batch_size"),
    ({"val_fraction": -0.1}, "val_fraction"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"val_fraction": 0.6, "test_fraction": 0.4}, r"val_fraction \+ test_fraction"),
    ({"num_samples": 10, "val_fraction": 0.5, "test_fraction": 0.49}, "no training points"),
    ({"num_predict_samples": 0}, "num_predict_samples"),
    ({"num_workers": -1}, "num_workers"),
]


@by_class
@pytest.mark.parametrize(("kwargs", "match"), BAD_BASE_ARGS, ids=lambda v: str(v))
def test_bad_base_args(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (CirclesDataModule, {"factor": 1.0}, "factor"),
        (CirclesDataModule, {"factor": 0.0}, "factor"),
        (EightGaussiansDataModule, {"radius": 0.0}, "radius"),
        (TwoModesDataModule, {"weight": 0.0}, "weight"),
        (TwoModesDataModule, {"weight": 1.0}, "weight"),
        (TwoModesDataModule, {"offset": math.inf}, "offset"),
        (GaussianMixture1DDataModule, {"weights": (0.5, 0.6)}, "weights must sum to 1"),
        (GaussianMixture1DDataModule, {"weights": (1.2, -0.2)}, "weights must all be > 0"),
        (GaussianMixture1DDataModule, {"weights": (0.2, 0.3, 0.5)}, "weights must have exactly"),
        (GaussianMixture1DDataModule, {"stds": (1.0, 0.0)}, "stds"),
        (GaussianMixture1DDataModule, {"means": (0.0, "a")}, "means"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_bad_subclass_args(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_error_message_names_value():
    with pytest.raises(ValueError, match=r"batch_size must be >= 1, got -3"):
        MoonsDataModule(batch_size=-3)


def test_mixture_weights_within_tolerance_accepted():
    dm = GaussianMixture1DDataModule(weights=[0.3, 0.7 + 5e-7], means=[0, 1], stds=[1, 1])
    assert dm.weights == (0.3, 0.7 + 5e-7) and dm.means == (0.0, 1.0)


# --------------------------------------------------------------------------- Lightning


class _MeanModel(L.LightningModule):
    """Fits a per-coordinate mean; checks the batch layout the datamodule delivers."""

    def __init__(self, data_shape: tuple[int, ...]):
        super().__init__()
        self.data_shape = data_shape
        self.mu = torch.nn.Parameter(torch.zeros(data_shape))

    def _loss(self, batch):
        assert isinstance(batch, torch.Tensor) and batch.shape[1:] == self.data_shape
        return ((batch - self.mu) ** 2).mean()

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self._loss(batch))

    def predict_step(self, batch, batch_idx):
        return self.mu.expand(len(batch), *self.data_shape)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:Total length of `list` across ranks is zero")
@pytest.mark.parametrize("val_fraction", [0.1, 0.0])
def test_trainer_fit_test_predict(val_fraction, tmp_path):
    dm = GaussianMixture1DDataModule(
        num_samples=500, batch_size=50, val_fraction=val_fraction, num_predict_samples=70
    )
    model = _MeanModel(dm.data_shape)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    preds = trainer.predict(model, datamodule=dm)
    assert sum(len(p) for p in preds) == 70
    assert preds[0].shape[1:] == (1,)
