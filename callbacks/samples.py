"""Save model samples as a PNG after validation epochs (and send them to image loggers)."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from callbacks._paths import log_image_to_loggers, logging_step, run_dir
from lebm.plotting import plot_samples


class SamplePlotter(Callback):
    """Plot ``pl_module.sample(num_samples)`` over held-out data every ``every_n_epochs`` epochs.

    Files: ``<run>/samples/epoch=NNN.png`` for each plotted epoch and ``<run>/samples.png``
    (the latest). Only rank 0 samples and writes. The reference points come from the
    datamodule's ``split("val")`` when it has one.

    Args:
        num_samples: points to draw per plot.
        every_n_epochs: plot after every n-th validation epoch (and always after the last).
        seed: seed for the sampling noise, so successive plots differ only by the model.
    """

    def __init__(self, num_samples: int = 1000, every_n_epochs: int = 1, seed: int = 0) -> None:
        if num_samples < 1 or every_n_epochs < 1:
            raise ValueError(
                f"num_samples and every_n_epochs must be >= 1, got {num_samples}, {every_n_epochs}"
            )
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.seed = seed

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        out = run_dir(trainer)  # on every rank: trainer.log_dir is a collective under DDP
        if not trainer.is_global_zero:
            return
        generator = torch.Generator(pl_module.device).manual_seed(self.seed)
        samples = pl_module.sample(self.num_samples, generator=generator)
        split = getattr(trainer.datamodule, "split", None)
        reference = split("val") if callable(split) else None
        title = f"{type(pl_module).__name__}, epoch {epoch}, iteration {logging_step(trainer)}"
        path = out / "samples" / f"epoch={epoch:03d}.png"
        plot_samples(samples, reference, title, path)
        plot_samples(samples, reference, title, out / "samples.png")
        log_image_to_loggers(trainer, "samples", path)
