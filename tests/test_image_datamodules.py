"""Tests for the image datamodules in ``datamodules.images``.

The torchvision sets are read from tiny fake files written on the fly in their real formats
(``tests/fake_datasets.py``), so torchvision's own reading code runs; only the MD5 comparison
of CIFAR-10 / SVHN / CelebA files is stubbed. The network is blocked in every test.
"""

import inspect
import pickle
import socket
import urllib.error

import lightning as L
import numpy as np
import pytest
import torch
from jsonargparse import ArgumentError, ArgumentParser
from sklearn.datasets import load_digits

import datamodules
from datamodules import (
    CelebADataModule,
    CIFAR10DataModule,
    DigitsDataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    ImageFolderDataModule,
    MNISTDataModule,
    SVHNDataModule,
)
from datamodules.images import DOWNLOAD_HINT, IMAGE_EXTENSIONS, ImagesOnly
from tests.conftest import quiet_trainer
from tests.fake_datasets import (
    stub_integrity_checks,
    write_fake_celeba,
    write_fake_cifar10,
    write_fake_image_folder,
    write_fake_mnist,
    write_fake_svhn,
)

ALL_MODULES = [
    DigitsDataModule,
    MNISTDataModule,
    FashionMNISTDataModule,
    CIFAR10DataModule,
    SVHNDataModule,
    CelebADataModule,
    ImageFolderDataModule,
]
DEFAULT_SHAPE = {
    DigitsDataModule: (1, 8, 8),
    MNISTDataModule: (1, 28, 28),
    FashionMNISTDataModule: (1, 28, 28),
    CIFAR10DataModule: (3, 32, 32),
    SVHNDataModule: (3, 32, 32),
    CelebADataModule: (3, 64, 64),
    ImageFolderDataModule: (3, 64, 64),
}
BASE_ARGS = {
    "root": "data",
    "image_size": None,
    "batch_size": 64,
    "num_workers": 0,
    "seed": 0,
    "val_fraction": None,
    "num_predict_samples": 1000,
    "download": False,
}
OWN_ARGS = {
    DigitsDataModule: {"test_fraction": 0.1},
    CelebADataModule: {"crop_size": 140},
    ImageFolderDataModule: {"channels": 3, "test_fraction": 0.1},
}
N_TRAIN, N_TEST = 40, 10  # fake torchvision sets; val_fraction 0.05 holds out 2 of 40

# The four sets with an official train / test split only: class, writer, HWC -> NCHW.
TRAIN_TEST_SETS = [
    (MNISTDataModule, lambda root: write_fake_mnist(root, N_TRAIN, N_TEST)),
    (
        FashionMNISTDataModule,
        lambda root: write_fake_mnist(root, N_TRAIN, N_TEST, name="FashionMNIST", seed=5),
    ),
    (CIFAR10DataModule, lambda root: write_fake_cifar10(root, N_TRAIN, N_TEST)),
    (SVHNDataModule, lambda root: write_fake_svhn(root, N_TRAIN, N_TEST)),
]
by_class = pytest.mark.parametrize("cls", ALL_MODULES, ids=lambda c: c.__name__)
by_train_test_set = pytest.mark.parametrize(
    ("cls", "write"), TRAIN_TEST_SETS, ids=[c.__name__ for c, _ in TRAIN_TEST_SETS]
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to reach the network fails at once instead of hanging."""

    connect = socket.socket.connect

    def refuse(*args, **kwargs):
        raise OSError("network access is blocked in tests")

    def local_only(sock, address):  # unix sockets (worker processes) stay allowed
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            refuse()
        return connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", local_only)


@pytest.fixture
def stubbed(monkeypatch):
    stub_integrity_checks(monkeypatch)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    """One folder holding every fake torchvision set; returns (root, written arrays)."""
    root = tmp_path_factory.mktemp("data")
    written = {cls: write(root) for cls, write in TRAIN_TEST_SETS}
    written[CelebADataModule] = write_fake_celeba(root, n_train=6, n_valid=2, n_test=3)
    return root, written


def _as_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) -> float (N, C, H, W) in [-1, 1]."""
    x = torch.from_numpy(images).float()
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return x / 127.5 - 1


def _all_batches(loader) -> torch.Tensor:
    return torch.cat(list(loader))


# --------------------------------------------------------------------------- API surface


def test_exports():
    names = {c.__name__ for c in ALL_MODULES} | {"ImageDataModule", "TorchvisionDataModule"}
    assert names <= set(datamodules.__all__)
    for name in names:
        assert hasattr(datamodules, name)


@by_class
def test_signature_is_cli_friendly(cls):
    """jsonargparse resolves every base argument plus the subclass's own (keyword-only,
    typed, defaulted); nothing is downloaded by default."""
    init = vars(cls).get("__init__")
    own = [
        p
        for p in (list(inspect.signature(init).parameters.values())[1:] if init else [])
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    for p in own:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY, p
        assert p.annotation is not inspect.Parameter.empty, f"{cls.__name__}.{p.name}"
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "data")
    defaults = parser.parse_args([]).data.as_dict()
    assert defaults == {**BASE_ARGS, **OWN_ARGS.get(cls, {})}


def test_cli_parses_and_validates_arguments(tmp_path):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageFolderDataModule, "data")
    cfg = parser.parse_args(
        [f"--data.root={tmp_path}", "--data.image_size=24", "--data.channels=1"]
    )
    dm = ImageFolderDataModule(**cfg.data.as_dict())
    assert dm.data_shape == (1, 24, 24) and dm.root == str(tmp_path)
    with pytest.raises(ArgumentError, match="channels"):
        parser.parse_args(["--data.channels=2"])
    with pytest.raises(ArgumentError, match="no_such"):
        parser.parse_args(["--data.no_such=1"])


@by_class
def test_data_shape_before_setup_without_files(cls, tmp_path):
    """Instantiating touches no file, so configs build on machines without the data."""
    dm = cls(root=str(tmp_path / "nothing_here"))
    assert dm.data_shape == DEFAULT_SHAPE[cls]
    assert dm.download is False
    assert not (tmp_path / "nothing_here").exists()
    assert cls.__name__ in repr(dm) and "image_size" in repr(dm)


def test_base_is_abstract():
    with pytest.raises(TypeError):
        ImageDataModule()  # type: ignore[abstract]


# --------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (DigitsDataModule, {"image_size": 4}, "image_size must be an int >= 8, got 4"),
        (MNISTDataModule, {"image_size": 16.5}, "image_size"),
        (CIFAR10DataModule, {"batch_size": 0}, "batch_size must be >= 1, got 0"),
        (SVHNDataModule, {"num_workers": -1}, "num_workers must be >= 0, got -1"),
        (MNISTDataModule, {"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\), got 1.0"),
        (DigitsDataModule, {"val_fraction": -0.1}, "val_fraction"),
        (DigitsDataModule, {"num_predict_samples": 0}, "num_predict_samples must be >= 1"),
        (DigitsDataModule, {"test_fraction": 1.0}, r"test_fraction must be in \[0, 1\)"),
        (
            DigitsDataModule,
            {"val_fraction": 0.5, "test_fraction": 0.5},
            "val_fraction \\+ test_fraction must be < 1",
        ),
        (ImageFolderDataModule, {"channels": 2}, "channels must be 1 .* or 3 .*, got 2"),
        (ImageFolderDataModule, {"download": True}, "cannot download.*download=False"),
        (CelebADataModule, {"val_fraction": 0.1}, "official validation split.*val_fraction"),
        (CelebADataModule, {"crop_size": 4}, "crop_size must be an int >= 8, got 4"),
    ],
)
def test_bad_arguments(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_bad_split_and_stage_names():
    dm = DigitsDataModule()
    with pytest.raises(ValueError, match="split name must be one of"):
        dm.split("valid")
    with pytest.raises(ValueError, match="split name must be one of"):
        dm.dataset("training")
    with pytest.raises(ValueError, match="stage must be one of"):
        dm.setup("train")


# --------------------------------------------------------------------------- digits


def test_digits_splits_cover_the_data_with_labels():
    dm = DigitsDataModule()
    sizes = [len(dm.split(name)) for name in ("train", "val", "test")]
    assert sizes == [1437, 180, 180]
    digits = load_digits()
    label_of = {
        row.tobytes(): int(y) for row, y in zip(digits.images / 8 - 1, digits.target, strict=True)
    }
    seen = []
    for name in ("train", "val", "test"):
        x, y = dm.split(name), dm.labels(name)
        assert x.shape == (len(x), 1, 8, 8) and x.dtype == torch.float32
        assert y.shape == (len(x),) and y.dtype == torch.int64
        for image, label in zip(x.double().numpy(), y.tolist(), strict=True):
            assert label_of[image[0].tobytes()] == label  # labels follow their images
            seen.append(image[0].tobytes())
    assert len(set(seen)) == len(set(label_of))  # every distinct image lands in some split
    assert len(seen) == 1797
    all_x = torch.cat([dm.split(n) for n in ("train", "val", "test")])
    assert all_x.min() == -1 and all_x.max() == 1


def test_digits_split_is_seeded():
    a, b, c = DigitsDataModule(), DigitsDataModule(), DigitsDataModule(seed=1)
    assert torch.equal(a.split("val"), b.split("val"))
    assert torch.equal(a.labels("test"), b.labels("test"))
    assert not torch.equal(a.split("val"), c.split("val"))
    empty = DigitsDataModule(val_fraction=0.0, test_fraction=0.0)
    assert len(empty.split("train")) == 1797 and len(empty.split("val")) == 0
    assert empty.val_dataloader() == [] and empty.test_dataloader() == []


@pytest.mark.parametrize("size", [16, 32, 11])
def test_digits_resize(size):
    native, dm = DigitsDataModule(), DigitsDataModule(image_size=size)
    x = dm.split("train")
    assert dm.data_shape == (1, size, size) and x.shape == (1437, 1, size, size)
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(dm.labels("train"), native.labels("train"))
    # Resizing keeps each image's mean brightness (bilinear upsampling is close to mean-preserving).
    native_means = native.split("train").mean(dim=(1, 2, 3))
    assert torch.allclose(x.mean(dim=(1, 2, 3)), native_means, atol=0.1)


def test_digits_loaders():
    dm = DigitsDataModule(batch_size=64, num_predict_samples=100)
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 1437 // 64  # drop_last
    assert all(isinstance(b, torch.Tensor) and b.shape == (64, 1, 8, 8) for b in train)
    assert torch.equal(train[0], next(iter(dm.train_dataloader())))  # seeded shuffle
    assert not torch.equal(train[0], dm.split("train")[:64])  # but shuffled
    assert torch.equal(_all_batches(dm.val_dataloader()), dm.split("val"))  # fixed order
    assert torch.equal(_all_batches(dm.test_dataloader()), dm.split("test"))
    requests = _all_batches(dm.predict_dataloader())
    assert torch.equal(requests, torch.arange(100))
    small = DigitsDataModule(batch_size=5000)  # one batch, not dropped
    assert [len(b) for b in small.train_dataloader()] == [1437]


# --------------------------------------------------------------------------- torchvision sets


@by_train_test_set
def test_torchvision_set_reads_the_files(cls, write, fake_root, stubbed):
    root, written = fake_root
    arrays = written[cls]
    dm = cls(root=str(root), batch_size=8)
    dm.prepare_data()
    dm.setup()
    assert [len(dm.dataset(n)) for n in ("train", "val", "test")] == [N_TRAIN - 2, 2, N_TEST]
    test = _all_batches(dm.test_dataloader())
    assert test.dtype == torch.float32 and test.shape == (N_TEST, *dm.data_shape)
    assert torch.allclose(test, _as_nchw(arrays["test_images"]), atol=1e-6)  # exact pixels
    train = _all_batches(dm.train_dataloader())
    assert train.shape == (32, *dm.data_shape)  # 38 images, batches of 8, last one dropped
    # train + val are exactly the written train images, each once.
    full = _as_nchw(arrays["train_images"])
    for name in ("train", "val"):
        split = dm.dataset(name)
        assert isinstance(split, ImagesOnly)
        assert torch.allclose(
            torch.stack([split[i] for i in range(len(split))]), full[split.indices]
        )
    indices = torch.cat([dm.dataset("train").indices, dm.dataset("val").indices])
    assert sorted(indices.tolist()) == list(range(N_TRAIN))
    values = torch.cat([train, test])
    assert values.min() == -1 and values.max() == 1


def test_val_split_is_seeded_and_sized(fake_root):
    root, _ = fake_root

    def val_indices(**kwargs):
        return MNISTDataModule(root=str(root), **kwargs).dataset("val").indices.tolist()

    assert val_indices() == val_indices()
    assert val_indices() != val_indices(seed=3)
    assert len(val_indices(val_fraction=0.25)) == 10
    dm = MNISTDataModule(root=str(root), val_fraction=0.0)
    assert len(dm.dataset("train")) == N_TRAIN and dm.val_dataloader() == []
    with pytest.raises(ValueError, match="leaves no training images"):
        MNISTDataModule(root=str(root), val_fraction=0.99).dataset("train")


@pytest.mark.parametrize(("cls", "size"), [(MNISTDataModule, 32), (CIFAR10DataModule, 16)])
def test_torchvision_set_resizes(cls, size, fake_root, stubbed):
    root, _ = fake_root
    dm = cls(root=str(root), image_size=size, batch_size=4)
    batch = next(iter(dm.val_dataloader()))
    assert batch.shape == (2, *dm.data_shape) and dm.data_shape[1:] == (size, size)
    assert batch.min() >= -1 and batch.max() <= 1


def test_checksums_are_really_checked_without_the_stub(fake_root):
    """The fake CIFAR files fail torchvision's MD5 check: its reading code is in the path."""
    root, _ = fake_root
    with pytest.raises(RuntimeError, match="corrupted"):
        CIFAR10DataModule(root=str(root)).setup("test")


def test_celeba_official_partitions(fake_root, stubbed):
    root, written = fake_root
    partitions = written[CelebADataModule]
    dm = CelebADataModule(root=str(root), batch_size=4)
    dm.setup()
    assert [len(dm.dataset(n)) for n in ("train", "val", "test")] == [6, 2, 3]
    assert dm.dataset("val").dataset.filename == partitions["valid"]
    assert dm.dataset("test").dataset.filename == partitions["test"]
    batch = next(iter(dm.train_dataloader()))
    assert batch.shape == (4, 3, 64, 64) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1 and batch.std() > 0.1
    small = CelebADataModule(root=str(root), image_size=32, crop_size=100)
    assert next(iter(small.test_dataloader())).shape == (3, 3, 32, 32)


@pytest.mark.parametrize(
    ("cls", "folder", "origin"),
    [
        (MNISTDataModule, "MNIST/raw", "torchvision.datasets.MNIST"),
        (FashionMNISTDataModule, "FashionMNIST/raw", "fashion-mnist"),
        (CIFAR10DataModule, "cifar-10-batches-py", "cifar-10-python.tar.gz"),
        (SVHNDataModule, "svhn", "housenumbers/train_32x32.mat"),
        (CelebADataModule, "celeba", "mmlab.ie.cuhk.edu.hk/projects/CelebA"),
    ],
)
def test_missing_files_error(cls, folder, origin, tmp_path):
    dm = cls(root=str(tmp_path))
    for step in (dm.prepare_data, lambda: dm.setup("fit"), dm.test_dataloader):
        with pytest.raises(FileNotFoundError) as info:
            step()
        message = str(info.value)
        assert str((tmp_path / folder).absolute()) in message
        assert origin in message and DOWNLOAD_HINT in message
        for name in dm.expected_files():
            assert name in message


def test_partly_missing_files_are_named(tmp_path, stubbed):
    write_fake_svhn(tmp_path, 4, 2)
    (tmp_path / "svhn" / "test_32x32.mat").unlink()
    dm = SVHNDataModule(root=str(tmp_path))
    assert dm.missing_files() == ["test_32x32.mat"]
    with pytest.raises(FileNotFoundError, match="lacks test_32x32.mat"):
        dm.prepare_data()


def test_failed_download_is_reported(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    dm = MNISTDataModule(root=str(tmp_path), download=True)
    with pytest.raises(FileNotFoundError, match="Downloading them failed") as info:
        dm.prepare_data()
    assert calls  # torchvision's download really was asked for
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)


def test_datamodule_after_setup_pickles(fake_root):
    """ddp_spawn and DataLoader workers pickle the datasets."""
    root, _ = fake_root
    dm = MNISTDataModule(root=str(root), batch_size=4)
    dm.setup()
    clone = pickle.loads(pickle.dumps(dm))
    assert torch.equal(next(iter(clone.val_dataloader())), next(iter(dm.val_dataloader())))


# --------------------------------------------------------------------------- image folder


def test_image_folder_finds_and_converts_images(tmp_path):
    written = write_fake_image_folder(tmp_path / "imgs", n=12)
    for channels in (3, 1):
        dm = ImageFolderDataModule(
            root=str(tmp_path / "imgs"), image_size=16, channels=channels, batch_size=4
        )
        assert [str(p) for p in written] == sorted(dm.image_files())  # hidden / .txt skipped
        dm.setup()
        assert [len(dm.dataset(n)) for n in ("train", "val", "test")] == [10, 1, 1]
        x = torch.cat([_all_batches(dm.train_dataloader()), dm.dataset("val")[0][None]])
        assert x.shape == (9, channels, 16, 16) and dm.data_shape == (channels, 16, 16)
        assert x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    again = ImageFolderDataModule(root=str(tmp_path / "imgs"), seed=0)
    other = ImageFolderDataModule(root=str(tmp_path / "imgs"), seed=1)
    assert again.dataset("test").dataset.paths == dm.dataset("test").dataset.paths
    assert other.dataset("train").dataset.paths != dm.dataset("train").dataset.paths


def test_image_folder_errors(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        ImageFolderDataModule(root=str(missing)).prepare_data()
    assert str(missing) in str(info.value) and ".png" in str(info.value)

    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError, match="holds no images") as info:
        ImageFolderDataModule(root=str(empty)).setup("fit")
    assert str(empty) in str(info.value)
    assert all(ext in str(info.value) for ext in IMAGE_EXTENSIONS)

    few = tmp_path / "few"
    write_fake_image_folder(few, n=2)
    with pytest.raises(ValueError, match="leave no training images"):
        ImageFolderDataModule(root=str(few), val_fraction=0.5, test_fraction=0.4).setup()

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.png").write_bytes(b"not a png")
    dm = ImageFolderDataModule(root=str(broken), val_fraction=0.0, test_fraction=0.0)
    with pytest.raises(OSError, match="bad.png"):
        next(iter(dm.train_dataloader()))


# --------------------------------------------------------------------------- with a Trainer


class _ShapeRecorder(L.LightningModule):
    """Records the shape of every batch it is given; learns one dummy weight."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.shapes: dict[str, list[tuple[int, ...]]] = {"train": [], "val": [], "predict": []}

    def training_step(self, batch, batch_idx):
        self.shapes["train"].append(tuple(batch.shape))
        return (self.weight - batch.mean()) ** 2

    def validation_step(self, batch, batch_idx):
        self.shapes["val"].append(tuple(batch.shape))

    def predict_step(self, batch, batch_idx):
        self.shapes["predict"].append(tuple(batch.shape))
        return torch.zeros(len(batch), 1, 28, 28)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_fit_and_predict(fake_root, tmp_path):
    root, _ = fake_root
    dm = MNISTDataModule(root=str(root), batch_size=16, num_predict_samples=20)
    model = _ShapeRecorder()
    trainer = quiet_trainer(
        tmp_path, max_epochs=1, accelerator="cpu", devices=1, num_sanity_val_steps=0
    )
    trainer.fit(model, datamodule=dm)
    assert model.shapes["train"] == [(16, 1, 28, 28)] * 2
    assert model.shapes["val"] == [(2, 1, 28, 28)]
    trainer.predict(model, datamodule=dm)
    assert model.shapes["predict"] == [(16,), (4,)]


def test_worker_processes(fake_root, stubbed):
    root, _ = fake_root
    dm = CIFAR10DataModule(root=str(root), batch_size=8, num_workers=2)
    assert torch.equal(
        _all_batches(dm.test_dataloader()),
        _all_batches(CIFAR10DataModule(root=str(root), batch_size=8).test_dataloader()),
    )
