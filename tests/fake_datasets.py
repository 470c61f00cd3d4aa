"""Tiny fake image data sets written in the exact file formats torchvision reads.

Each ``write_fake_*`` helper takes the ``root`` a datamodule is given (for example
``MNISTDataModule(root=root)``) and writes random images where that datamodule looks for them,
so the real torchvision reading code runs in tests without any download:

* :func:`write_fake_mnist` — IDX files in ``<root>/<name>/raw/`` (MNIST, FashionMNIST, ...).
* :func:`write_fake_cifar10` — pickled batches in ``<root>/cifar-10-batches-py/``.
* :func:`write_fake_svhn` — ``.mat`` files in ``<root>/svhn/``.
* :func:`write_fake_celeba` — jpgs and the five annotation files in ``<root>/celeba/``.
* :func:`write_fake_image_folder` — mixed-format, mixed-size images in nested folders.

CIFAR-10, SVHN and CelebA loaders verify MD5 checksums of the real files; call
:func:`stub_integrity_checks` (with pytest's ``monkeypatch``) to skip only that checksum
comparison: the existence checks and every reading step stay real.

Images hold every value 0..255 where the image is large enough (pixel 0 of image 0 is 0,
pixel 1 is 255), so value-range tests see both ends.
"""

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()


def _random_images(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 array of ``shape`` (N first), uniform over 0..255, with 0 and 255 present."""
    images = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    if images.size >= 2:
        flat = images.reshape(-1)
        flat[0], flat[1] = 0, 255
    return images


def _write_idx(path: Path, array: np.ndarray) -> None:
    """Writes a uint8 array as an IDX file: magic 0x0000 08 <ndim>, big-endian int32 dims."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_fake_mnist(
    root: str | os.PathLike,
    n_train: int = 20,
    n_test: int = 10,
    name: str = "MNIST",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Writes the four uncompressed IDX files of an MNIST-format set to ``<root>/<name>/raw/``.

    Files: ``train-images-idx3-ubyte`` (n_train, 28, 28), ``train-labels-idx1-ubyte``
    (n_train,), ``t10k-images-idx3-ubyte`` (n_test, 28, 28), ``t10k-labels-idx1-ubyte``
    (n_test,), all uint8. ``name`` is the torchvision class name: "MNIST", "FashionMNIST",
    "KMNIST".

    Returns:
        ``{"train_images", "train_labels", "test_images", "test_labels"}``: the arrays
        written (images (N, 28, 28) uint8, labels (N,) uint8 in 0..9).
    """
    raw = Path(root, name, "raw")
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    arrays = {
        "train_images": _random_images((n_train, 28, 28), seed),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": _random_images((n_test, 28, 28), seed + 2),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    for prefix, split in (("train", "train"), ("t10k", "test")):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", arrays[f"{split}_images"])
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", arrays[f"{split}_labels"])
    return arrays


def write_fake_cifar10(
    root: str | os.PathLike, n_train: int = 25, n_test: int = 10, seed: int = 0
) -> dict[str, np.ndarray]:
    """Writes CIFAR-10's python-pickle files to ``<root>/cifar-10-batches-py/``.

    ``data_batch_1`` .. ``data_batch_5`` share the ``n_train`` train images (as evenly as
    possible, in order), ``test_batch`` holds ``n_test``; each is a pickled dict with
    ``data`` (N, 3072) uint8 (channel-major rows: 1024 red, 1024 green, 1024 blue values),
    ``labels`` (list of N ints), ``batch_label`` and ``filenames``. ``batches.meta`` holds
    ``label_names``.

    Returns:
        ``{"train_images", "train_labels", "test_images", "test_labels"}``: images
        (N, 32, 32, 3) uint8 (HWC, as torchvision stores them), labels (N,) int64.
    """
    folder = Path(root, "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    arrays = {
        "train_images": _random_images((n_train, 32, 32, 3), seed),
        "train_labels": rng.integers(0, 10, size=n_train),
        "test_images": _random_images((n_test, 32, 32, 3), seed + 2),
        "test_labels": rng.integers(0, 10, size=n_test),
    }

    def dump(file: str, images: np.ndarray, labels: np.ndarray, label: str) -> None:
        entry = {
            "batch_label": label,
            "labels": [int(y) for y in labels],
            "data": images.transpose(0, 3, 1, 2).reshape(len(images), 3 * 32 * 32),
            "filenames": [f"fake_{i}.png" for i in range(len(images))],
        }
        with open(folder / file, "wb") as f:
            pickle.dump(entry, f)

    chunks = np.array_split(np.arange(n_train), 5)
    for k, chunk in enumerate(chunks, start=1):
        images, labels = arrays["train_images"][chunk], arrays["train_labels"][chunk]
        dump(f"data_batch_{k}", images, labels, f"training batch {k} of 5")
    dump("test_batch", arrays["test_images"], arrays["test_labels"], "testing batch 1 of 1")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
    meta = {"label_names": [*names, "truck"], "num_cases_per_batch": 10000, "num_vis": 3072}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)
    return arrays


def write_fake_svhn(
    root: str | os.PathLike, n_train: int = 20, n_test: int = 10, seed: int = 0
) -> dict[str, np.ndarray]:
    """Writes SVHN's ``train_32x32.mat`` and ``test_32x32.mat`` to ``<root>/svhn/``.

    Each holds ``X`` (32, 32, 3, N) uint8 and ``y`` (N, 1) uint8 with labels 1..10 (10 is
    the digit 0), as in the official files.

    Returns:
        ``{"train_images", "train_labels", "test_images", "test_labels"}``: images
        (N, 32, 32, 3) uint8 (HWC), labels (N,) uint8 in 1..10 (as stored).
    """
    from scipy.io import savemat

    folder = Path(root, "svhn")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    arrays = {
        "train_images": _random_images((n_train, 32, 32, 3), seed),
        "train_labels": rng.integers(1, 11, size=n_train, dtype=np.uint8),
        "test_images": _random_images((n_test, 32, 32, 3), seed + 2),
        "test_labels": rng.integers(1, 11, size=n_test, dtype=np.uint8),
    }
    for split in ("train", "test"):
        x = np.ascontiguousarray(arrays[f"{split}_images"].transpose(1, 2, 3, 0))
        y = arrays[f"{split}_labels"][:, None]
        savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
    return arrays


def write_fake_celeba(
    root: str | os.PathLike,
    n_train: int = 6,
    n_valid: int = 2,
    n_test: int = 2,
    seed: int = 0,
    size: tuple[int, int] = (178, 218),
) -> dict[str, list[str]]:
    """Writes an aligned-CelebA-format set to ``<root>/celeba/``.

    ``img_align_celeba/000001.jpg`` ... (``size`` = (width, height), default the official
    178 x 218), and the annotation files torchvision reads: ``list_eval_partition.txt``
    (``<file> <0|1|2>``; the first ``n_train`` images are train, then valid, then test),
    ``identity_CelebA.txt``, ``list_attr_celeba.txt`` (count line, 40 attribute names, then
    ``<file>`` and 40 values of +-1), ``list_bbox_celeba.txt`` and
    ``list_landmarks_align_celeba.txt`` (count line, header line, then rows).

    Returns:
        ``{"train": [...], "valid": [...], "test": [...]}``: the file names of each partition.
    """
    folder = Path(root, "celeba")
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = n_train + n_valid + n_test
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    width, height = size
    for i, name in enumerate(names):
        pixels = _random_images((1, height, width, 3), seed + i)[0]
        Image.fromarray(pixels, mode="RGB").save(images / name, quality=90)
    partition = [0] * n_train + [1] * n_valid + [2] * n_test

    def write(file: str, rows: list[str], header: str | None = None) -> None:
        lines = rows if header is None else [str(n), header, *rows]
        (folder / file).write_text("\n".join(lines) + "\n")

    write("list_eval_partition.txt", [f"{f} {p}" for f, p in zip(names, partition, strict=True)])
    write("identity_CelebA.txt", [f"{f} {rng.integers(1, 10178)}" for f in names])
    attrs = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRIBUTES)))
    write(
        "list_attr_celeba.txt",
        [f + " " + " ".join(f"{a:2d}" for a in row) for f, row in zip(names, attrs, strict=True)],
        header=" ".join(CELEBA_ATTRIBUTES) + " ",
    )
    boxes = rng.integers(0, 100, size=(n, 4))
    write(
        "list_bbox_celeba.txt",
        [f"{f} " + " ".join(map(str, row)) for f, row in zip(names, boxes, strict=True)],
        header="image_id x_1 y_1 width height",
    )
    marks = rng.integers(0, 178, size=(n, 10))
    landmarks = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y "
    write(
        "list_landmarks_align_celeba.txt",
        [f"{f} " + " ".join(map(str, row)) for f, row in zip(names, marks, strict=True)],
        header=landmarks + "rightmouth_x rightmouth_y",
    )
    return {
        "train": names[:n_train],
        "valid": names[n_train : n_train + n_valid],
        "test": names[n_train + n_valid :],
    }


def write_fake_image_folder(
    root: str | os.PathLike,
    n: int = 12,
    size: tuple[int, int] = (40, 30),
    seed: int = 0,
) -> list[Path]:
    """Writes ``n`` images of assorted formats, modes and sizes in nested folders under ``root``.

    Image ``i`` goes to ``root/class_<i % 3>/`` (every fourth one a level deeper, in
    ``sub/``), cycling through the extensions .png, .jpg, .JPEG, .bmp, .webp and the PIL modes
    RGB, L, RGBA, P; its size is ``size`` (width, height) with every other image transposed
    to (height, width). Also writes files that must be ignored: ``root/notes.txt``, a
    hidden ``root/.hidden.png`` and ``root/.cache/skip.png``.

    Returns:
        The paths of the ``n`` images written, sorted.
    """
    root = Path(root)
    extensions = (".png", ".jpg", ".JPEG", ".bmp", ".webp")
    modes = ("RGB", "L", "RGBA", "P")
    paths = []
    for i in range(n):
        folder = root / f"class_{i % 3}"
        if i % 4 == 3:
            folder = folder / "sub"
        folder.mkdir(parents=True, exist_ok=True)
        width, height = size if i % 2 == 0 else size[::-1]
        pixels = _random_images((1, height, width, 3), seed + i)[0]
        image = Image.fromarray(pixels, mode="RGB")
        mode = modes[i % len(modes)]
        extension = extensions[i % len(extensions)]
        if extension.lower() in (".jpg", ".jpeg") and mode in ("RGBA", "P"):
            mode = "L"  # JPEG stores neither alpha nor palettes
        image = image.convert(mode)
        path = folder / f"image_{i:03d}{extension}"
        image.save(path)
        paths.append(path)
    (root / "notes.txt").write_text("not an image\n")
    Image.new("RGB", (8, 8)).save(root / ".hidden.png")
    (root / ".cache").mkdir(exist_ok=True)
    Image.new("RGB", (8, 8)).save(root / ".cache" / "skip.png")
    return sorted(paths)


def stub_integrity_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes torchvision's MD5 comparison pass, for fake files of sets that carry checksums.

    Replaces only ``torchvision.datasets.utils.check_md5`` (which every
    ``check_integrity`` call, as imported by the cifar / svhn / celeba modules, looks up at
    call time); ``check_integrity`` still returns False for a missing file. The patch is
    undone when the test that owns ``monkeypatch`` ends.
    """
    import torchvision.datasets.utils as tv_utils

    monkeypatch.setattr(tv_utils, "check_md5", lambda fpath, md5, **kwargs: True)
