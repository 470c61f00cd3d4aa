"""Progress a person can follow without a terminal: one line per validation epoch.

Lightning's progress bar suits an interactive terminal; in a log file or CI output it is either
off or a wall of carriage returns. :class:`EpochLines` prints one concise line per validation
epoch instead::

    epoch 4/20  step 315  val/mmd 0.0231  val/mse 0.0124  val/swd 0.0893  (48 s)

``mode="auto"`` (the ``lebm`` CLI's default, ``--progress.mode``) prints the lines only when the
progress bar is off; the CLI turns the bar off itself when standard output is not a terminal,
so ``make run`` shows a bar in a terminal and one line per validation in CI.
"""

from __future__ import annotations

import fnmatch
import sys
import time
from typing import Literal

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from callbacks._paths import logging_step
from callbacks.curves import logged_this_evaluation

Mode = Literal["auto", "lines", "bar", "off"]


def stdout_is_terminal() -> bool:
    """True when standard output is an interactive terminal (not a file, pipe or CI log)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return False


def format_value(value: float) -> str:
    """Four significant digits: 0.02307, 12.35, 1.2e-05."""
    return f"{value:.4g}"


class EpochLines(Callback):
    """Print one line per validation epoch: epoch, step, headline metrics, elapsed time.

    The line is printed in ``on_validation_end``, after the model and callbacks have logged
    the epoch's validation metrics (``on_validation_epoch_end`` of a callback runs before the
    model's, so the current values are not there yet). Rank 0 prints, to standard output.

    Args:
        mode: ``lines`` always prints, ``off`` never; ``auto`` prints when the trainer shows
            no progress bar; ``bar`` never prints (the CLI then keeps Lightning's bar on).
        keys: metric names or glob patterns shown, in this order (scalars only; keys not
            logged are skipped).
    """

    def __init__(self, mode: Mode = "auto", keys: list[str] | None = None) -> None:
        if mode not in ("auto", "lines", "bar", "off"):
            raise ValueError(f"mode must be one of auto, lines, bar, off; got {mode!r}")
        self.mode = mode
        self.keys = list(keys) if keys is not None else ["val/*"]
        self._start: float | None = None

    def prints(self, trainer: L.Trainer) -> bool:
        """Whether lines are printed with this trainer."""
        if self.mode == "auto":
            return trainer.progress_bar_callback is None
        return self.mode == "lines"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()
        if not (self.prints(trainer) and trainer.is_global_zero):
            return
        data = type(trainer.datamodule).__name__ if trainer.datamodule is not None else "data"
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else "unbounded"
        every = trainer.check_val_every_n_epoch
        cadence = "each epoch" if every in (None, 1) else f"every {every} epochs"
        print(
            f"lebm: training {type(pl_module).__name__} on {data}, {epochs} epochs; "
            f"one line per validation ({cadence}) follows",
            flush=True,
        )

    def line(self, trainer: L.Trainer) -> str:
        """The progress line for the current state of ``trainer``."""
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else "?"
        parts = [f"epoch {trainer.current_epoch + 1}/{epochs}", f"step {logging_step(trainer)}"]
        metrics = logged_this_evaluation(trainer)
        shown: list[str] = []
        for pattern in self.keys:
            for name in sorted(metrics):
                if name not in shown and fnmatch.fnmatch(name, pattern):
                    shown.append(name)
        parts += [f"{name} {format_value(metrics[name])}" for name in shown]
        if self._start is not None:
            parts.append(f"({time.monotonic() - self._start:.0f} s)")
        return "  ".join(parts)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self.prints(trainer):
            return
        if trainer.state.fn != TrainerFn.FITTING:  # `lebm validate` prints its own table
            return
        print(self.line(trainer), flush=True)
