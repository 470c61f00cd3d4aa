"""Train the digit classifier behind ``lebm.features.DigitFeatures`` and write its weights.

    python -m lebm.experiments.train_digit_classifier                 # writes the shipped file
    python -m lebm.experiments.train_digit_classifier --out /tmp/d.pt --epochs 20 --seed 1

Trains :class:`lebm.nets.digit_classifier.DigitClassifier` on the train split of
``DigitsDataModule(image_size=16)`` (sklearn's 8 x 8 digits in [-1, 1], bilinearly upsampled)
with cross-entropy, AdamW and a cosine learning-rate decay, and light augmentation so the
features stay meaningful for imperfect generated digits and other resolutions: a random
affine warp per image (scale, shift, small rotation) and, for a quarter of the batches, a
round trip through a random other resolution (8 to 32 px). The val split is only reported.

Deterministic on the CPU: the initial weights come from ``torch.manual_seed(seed)`` inside
``torch.random.fork_rng`` (the caller's global generator is left alone), shuffling and
augmentation from a ``torch.Generator`` seeded with ``seed``, and training runs under
``torch.use_deterministic_algorithms(True)`` with one intra-op thread (both restored
afterwards). The same seed, epochs, torch build and CPU give bit-identical weights. ``--seed``
seeds training only: the data split is always ``DigitsDataModule``'s seed 0, so accuracies
are measured on the same held-out images. About 15 s of training on 2 CPU cores, plus about
15 s to import lightning / torchvision (through the datamodule).

Writes ``{"config", "state_dict", "metadata"}`` to ``--out`` (default: the shipped
``lebm/assets/digit_classifier.pt``); metadata holds the train / val / test accuracies, seed,
epochs, batch size, learning rate and the torch version.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lebm.nets.digit_classifier import (
    DEFAULT_WEIGHTS,
    DigitClassifier,
    resize_images,
    save_digit_classifier,
)

DEFAULT_EPOCHS = 20
DEFAULT_SEED = 0
DEFAULT_BATCH_SIZE = 64
DEFAULT_LR = 2e-3
TRAIN_IMAGE_SIZE = 16
SPLITS: tuple[str, ...] = ("train", "val", "test")


def load_digit_splits(
    image_size: int = TRAIN_IMAGE_SIZE, seed: int = 0
) -> dict[str, tuple[Tensor, Tensor]]:
    """``{split: (images (N, 1, S, S) in [-1, 1], labels (N,))}`` from ``DigitsDataModule``.

    Args:
        image_size: S, the side the datamodule resizes the 8 x 8 digits to.
        seed: the datamodule's split seed (0 is the one the shipped weights were trained with).
    """
    from datamodules.images import DigitsDataModule

    dm = DigitsDataModule(image_size=image_size, seed=seed)
    return {name: (dm.split(name), dm.labels(name)) for name in SPLITS}


@torch.no_grad()
def accuracy(
    model: DigitClassifier, images: Tensor, labels: Tensor, batch_size: int = 512
) -> float:
    """Fraction of ``images`` (N, 1, H, W) whose arg-max logit equals ``labels`` (N,)."""
    was_training = model.training
    model.eval()
    correct = sum(
        int((model(x).argmax(1) == y).sum())
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True)
    )
    model.train(was_training)
    return correct / len(labels)


def augment(
    x: Tensor,
    generator: torch.Generator,
    max_shift: float = 0.1,
    scale_range: tuple[float, float] = (0.7, 1.15),
    max_rotation_deg: float = 10.0,
) -> Tensor:
    """Random affine warp of each image (N, C, H, W) -> (N, C, H, W), zero (= -1) padded.

    Per image: zoom factor uniform in ``scale_range`` (> 1 enlarges the digit), rotation
    uniform in +-``max_rotation_deg`` and a shift uniform in +-``max_shift`` of the image
    side on each axis. Bilinear ``grid_sample``; pixels from outside are background (-1).
    """
    n = len(x)

    def uniform(low: float, high: float) -> Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    zoom = uniform(*scale_range)
    angle = uniform(-max_rotation_deg, max_rotation_deg) * math.pi / 180
    shift = uniform(-2 * max_shift, 2 * max_shift), uniform(-2 * max_shift, 2 * max_shift)
    cos, sin = angle.cos() / zoom, angle.sin() / zoom  # output -> input coordinates
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1
    )
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, mode="bilinear", align_corners=False) - 1


def random_resolution(x: Tensor, generator: torch.Generator, sizes: Sequence[int]) -> Tensor:
    """Round trip of a batch (N, 1, S, S) through a random side from ``sizes`` and back to S."""
    size = sizes[int(torch.randint(len(sizes), (1,), generator=generator))]
    return resize_images(resize_images(x, size), x.shape[-1])


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded global generator, deterministic algorithms and one intra-op thread, then restored.

    One thread because CPU convolution kernels split their reductions by thread count (2
    threads give weights about 0.06 away from 1 thread's); it is also the fastest setting for
    this small network on a busy 2-core machine.
    """
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous[0])
            torch.set_num_threads(previous[1])


def fit_digit_classifier(
    epochs: int = DEFAULT_EPOCHS,
    seed: int = DEFAULT_SEED,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    weight_decay: float = 1e-4,
    splits: dict[str, tuple[Tensor, Tensor]] | None = None,
    verbose: bool = False,
) -> tuple[DigitClassifier, dict[str, float]]:
    """Trains a :class:`DigitClassifier` from scratch; deterministic given the arguments.

    Args:
        epochs: passes over the train split.
        seed: seed of the initial weights, the shuffling and the augmentation.
        batch_size: images per optimizer step.
        lr: Adam's initial learning rate, decayed to 0 on a cosine over all steps.
        weight_decay: AdamW's decoupled weight decay.
        splits: the output of :func:`load_digit_splits` (loaded when None).
        verbose: print the loss and val accuracy after every epoch.

    Returns:
        ``(model, accuracies)``: the model in eval mode and ``{"train", "val", "test"}``
        accuracies on the un-augmented splits.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    splits = splits if splits is not None else load_digit_splits()
    images, labels = splits["train"]
    generator = torch.Generator().manual_seed(seed)
    with deterministic(seed):
        model = DigitClassifier(input_size=TRAIN_IMAGE_SIZE)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps = epochs * math.ceil(len(images) / batch_size)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps))
        )
        model.train()
        for epoch in range(epochs):
            total = 0.0
            for index in torch.randperm(len(images), generator=generator).split(batch_size):
                x = augment(images[index], generator)
                if torch.rand((), generator=generator) < 0.25:
                    x = random_resolution(x, generator, (8, 12, 20, 28, 32))
                loss = F.cross_entropy(model(x), labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item() * len(index)
            if verbose:
                val = accuracy(model, *splits["val"])
                print(f"epoch {epoch + 1:3d}  loss {total / len(images):.4f}  val acc {val:.4f}")
        model.eval()
        accuracies = {name: accuracy(model, *splits[name]) for name in SPLITS}
    return model, accuracies


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Command-line entry point; returns the train / val / test accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file to write")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    splits = load_digit_splits()
    loaded = time.perf_counter()
    model, accuracies = fit_digit_classifier(
        args.epochs, args.seed, splits=splits, verbose=not args.quiet
    )
    seconds = time.perf_counter() - loaded
    metadata: dict[str, Any] = {
        "accuracy": accuracies,
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": DEFAULT_BATCH_SIZE,
        "lr": DEFAULT_LR,
        "train_image_size": TRAIN_IMAGE_SIZE,
        "data": "DigitsDataModule(image_size=16, seed=0) train split",
        "torch_version": str(torch.__version__),
    }
    path = save_digit_classifier(model, args.out, metadata)
    print(
        "accuracy  "
        + "  ".join(f"{name} {value:.4f}" for name, value in accuracies.items())
        + f"\ndata loaded in {loaded - start:.1f} s, trained in {seconds:.1f} s; "
        + f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)"
    )
    return accuracies


if __name__ == "__main__":
    main()
