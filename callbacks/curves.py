"""Record logged scalars during training and plot them against the step."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from callbacks._paths import log_image_to_loggers, logging_step, run_dir
from lebm.plotting import plot_curves


def logged_this_evaluation(trainer: L.Trainer) -> dict[str, float]:
    """Scalar metrics logged during the evaluation loop that is ending (call it from
    ``on_validation_end`` / ``on_test_end``), by name.

    ``trainer.callback_metrics`` keeps a value until it is logged again, so a metric logged
    only every few validations (FID every 10 epochs) would otherwise be read again, stale, at
    the validations in between. The names come from the running loop's result collection.
    """
    results = getattr(trainer, "_results", None)
    if results is None:  # no running loop: nothing is known to be fresh
        return {}
    names = {item.meta.name for _, item in results.valid_items()}
    return {
        name: float(value)
        for name, value in trainer.callback_metrics.items()
        if name in names and value.numel() == 1
    }


class MetricCurves(Callback):
    """Plot chosen logged metrics against the training step to ``<run>/metrics.png``.

    Training metrics are read every ``every_n_steps`` steps and validation metrics after each
    validation epoch, from ``trainer.callback_metrics``, so this works with any logger.
    Validation values are read in ``on_validation_end``, once the model's own
    ``on_validation_epoch_end`` has logged them: a callback's ``on_validation_epoch_end`` runs
    *before* the model's, so reading there would plot the previous epoch's value (and drop the
    last one). Each point sits at the step the loggers record it at, so the series equal the
    ``metrics.csv`` columns. The figure is rewritten after every validation epoch and at the
    end of fit (rank 0).

    Args:
        keys: metric names or glob patterns (``"val/*"``) to plot, one panel each.
        every_n_steps: how often to record training metrics.
    """

    def __init__(
        self,
        keys: list[str] | None = None,
        every_n_steps: int = 10,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.keys = keys or ["train/loss_ebm", "train/loss_gen", "train/mse", "val/*"]
        self.every_n_steps = every_n_steps
        self.history: dict[str, list[tuple[int, float]]] = {}

    def _record(self, metrics: dict[str, float], step: int, prefix: str) -> None:
        for name, value in metrics.items():
            if not name.startswith(prefix):
                continue
            if any(fnmatch.fnmatch(name, pattern) for pattern in self.keys):
                self.history.setdefault(name, []).append((step, value))

    def _plot(self, trainer: L.Trainer) -> Path | None:
        path = run_dir(trainer) / "metrics.png"  # on every rank: log_dir is a collective
        if not trainer.is_global_zero or not self.history:
            return None
        order = sorted(self.history, key=lambda k: (k.startswith("val/"), k))
        plot_curves({k: self.history[k] for k in order}, path)
        return path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # the steps at which Lightning logs with log_every_n_steps = every_n_steps
        if (logging_step(trainer) + 1) % self.every_n_steps == 0:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
            self._record(metrics, logging_step(trainer), "train/")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._record(logged_this_evaluation(trainer), logging_step(trainer), "val/")
        self._plot(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = self._plot(trainer)
        if path is not None:
            log_image_to_loggers(trainer, "metrics", path)

    def state_dict(self) -> dict:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict["history"].items()}
