"""Figures shared by callbacks and scripts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402


def plot_samples(
    samples: Tensor,
    reference: Tensor | None = None,
    title: str = "",
    path: str | Path | None = None,
):
    """Scatter (2-D) or histogram (1-D) of samples over optional reference data.

    Args:
        samples: shape (N, 1) / (N,) or (N, 2); other shapes are plotted by their first two
            coordinates.
        reference: real points drawn underneath in grey, same layout.
        title: figure title.
        path: if given, the figure is saved there (parents created) and closed.

    Returns:
        The matplotlib figure (already closed when saved).
    """
    samples = samples.detach().float().cpu().flatten(1)
    ref = None if reference is None else reference.detach().float().cpu().flatten(1)
    fig, ax = plt.subplots(figsize=(5, 5) if samples.shape[1] > 1 else (6, 4))
    if samples.shape[1] == 1:
        both = samples if ref is None else ref
        lo, hi = both.min().item(), both.max().item()
        bins = [lo + (hi - lo) * i / 60 for i in range(61)]
        if ref is not None:
            ax.hist(ref[:, 0].numpy(), bins=bins, density=True, color="0.7", label="data")
        ax.hist(
            samples[:, 0].numpy(), bins=bins, density=True, histtype="step", lw=2, label="model"
        )
        ax.set_ylabel("density")
    else:
        if ref is not None:
            ax.scatter(ref[:, 0], ref[:, 1], s=3, c="0.75", label="data")
        ax.scatter(samples[:, 0], samples[:, 1], s=3, c="tab:blue", alpha=0.7, label="model")
        ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", markerscale=3)
    ax.set_title(title)
    fig.tight_layout()
    return _finish(fig, path)


def is_image_batch(samples: Tensor) -> bool:
    """True for a batch of images: shape (N, C, H, W) with C in {1, 3}."""
    return samples.dim() == 4 and samples.shape[1] in (1, 3)


def save_image_grid(
    images: Tensor,
    path: str | Path,
    nrow: int | None = None,
    value_range=(-1.0, 1.0),
    min_tile: int = 64,
) -> Tensor:
    """Tile images into one grid (torchvision ``make_grid``) and save it as a PNG.

    Args:
        images: shape (N, C, H, W), C in {1, 3}, values in ``value_range`` (clamped).
        path: PNG file to write (parents created).
        nrow: images per row; default ``ceil(sqrt(N))`` (a square grid).
        value_range: data range mapped to black..white.
        min_tile: small images are enlarged by the integer factor ``min_tile // H`` (nearest
            neighbour, pixels stay sharp) so 8-16 px digits are visible; 1 keeps the size.

    Returns:
        The grid, float tensor (3, H', W') in [0, 1].
    """
    from torchvision.utils import make_grid, save_image

    if not is_image_batch(images):
        raise ValueError(f"save_image_grid needs images (N, 1|3, H, W), got {tuple(images.shape)}")
    images = images.detach().float().cpu()
    lo, hi = value_range
    images = ((images.clamp(lo, hi) - lo) / (hi - lo)).clamp(0, 1)
    factor = max(1, min_tile // images.shape[-2])
    if factor > 1:
        images = images.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    grid = make_grid(images, nrow=nrow, padding=1, pad_value=1.0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    return grid


def plot_curves(
    history: Mapping[str, Sequence[tuple[int, float]]],
    path: str | Path | None = None,
    title: str = "",
):
    """One small panel per metric: value against training iteration.

    Args:
        history: metric name -> list of (step, value).
        path: if given, save there and close.
        title: figure title.
    """
    names = [k for k, v in history.items() if len(v) > 0]
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        steps, values = zip(*history[name], strict=True)
        ax.plot(steps, values, marker="." if len(steps) < 50 else None)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path)


def plot_run_comparison(
    panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]],
    path: str | Path | None = None,
    xlabel: str = "iteration",
):
    """One panel per metric, one line per run (``lebm compare``).

    Args:
        panels: metric name -> run label -> list of (x, value).
        path: if given, save there and close.
        xlabel: label of the x axis (``iteration`` or ``epoch``).
    """
    names = [k for k, runs in panels.items() if any(len(v) for v in runs.values())]
    labels = list(dict.fromkeys(label for name in names for label in panels[name]))
    colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    cols = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows + 0.4), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for label, series in panels[name].items():
            if not series:
                continue
            xs, ys = zip(*series, strict=True)
            ax.plot(xs, ys, marker="." if len(xs) < 50 else None, color=colors[label])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colors[label], marker=".") for label in labels]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 2), fontsize=8)
    fig.tight_layout(rect=(0, 0.06 * max(1, math.ceil(len(labels) / 2)) / rows, 1, 1))
    return _finish(fig, path)


def _finish(fig, path: str | Path | None):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def plot_temperature_ladders(
    ladders: dict[str, dict[int, list[float]]], path: str | Path | None = None
):
    """Temperature ladders over training: one panel per run, one line per temperature t_i
    (ThermoLatentEBM logs them as ``train/temperature/tNN``; an adaptive ladder moves).

    Args:
        ladders: run label -> temperature index i -> t_i at each logged step, as a list of
            (step, t_i) pairs.
        path: if given, save there and close.
    """
    cols = max(1, min(3, len(ladders)))
    rows = max(1, math.ceil(len(ladders) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (label, ladder) in zip(axes.flat, ladders.items(), strict=False):
        for i, series in sorted(ladder.items()):
            if series:
                steps, values = zip(*series, strict=True)
                ax.plot(steps, values, color=plt.cm.viridis(i / max(1, len(ladder) - 1)), lw=1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("iteration")
        ax.set_ylabel("temperature t_i")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(ladders) :]:
        ax.axis("off")
    fig.tight_layout()
    return _finish(fig, path)
