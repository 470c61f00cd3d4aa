"""Save model samples as a PNG after validation epochs (and send them to image loggers).

Low-dimensional samples are drawn as a scatter plot (2-D) or histogram (1-D) over held-out
data; image samples (N, C, H, W) as an image grid (torchvision ``make_grid``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from callbacks._paths import log_image_to_loggers, logging_step, run_dir
from lebm.plotting import is_image_batch, plot_samples, save_image_grid


class SamplePlotter(Callback):
    """Plot ``pl_module.sample(n)`` every ``every_n_epochs`` validation epochs.

    Files: ``<run>/samples/epoch=NNN.png`` for each plotted epoch and ``<run>/samples.png``
    (the latest), also sent to loggers that take images (key ``samples``). Only rank 0 samples
    and writes. Points are scattered over the datamodule's ``split("val")`` when it has one;
    images are tiled into a square grid of ``num_images`` samples.

    Args:
        num_samples: points to draw per plot (low-dimensional data).
        num_images: images per grid (image data).
        every_n_epochs: plot after every n-th validation epoch (and always after the last).
        seed: seed for the sampling noise, so successive plots differ only by the model.
    """

    def __init__(
        self, num_samples: int = 1000, num_images: int = 64, every_n_epochs: int = 1, seed: int = 0
    ) -> None:
        for name, value in (
            ("num_samples", num_samples),
            ("num_images", num_images),
            ("every_n_epochs", every_n_epochs),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.num_samples = num_samples
        self.num_images = num_images
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
        path = out / "samples" / f"epoch={epoch:03d}.png"
        self.plot(trainer, pl_module, path)
        shutil.copyfile(path, out / "samples.png")
        log_image_to_loggers(trainer, "samples", path)

    def plot(self, trainer: L.Trainer, pl_module: L.LightningModule, path: Path) -> None:
        """Draw samples and write one figure (scatter / histogram / image grid) to ``path``."""
        generator = torch.Generator(pl_module.device).manual_seed(self.seed)
        shape = getattr(pl_module.hparams, "data_shape", None)
        shape = shape or getattr(trainer.datamodule, "data_shape", None) or ()
        n = self.num_images if len(shape) == 3 else self.num_samples
        samples = pl_module.sample(n, generator=generator)
        if is_image_batch(samples):
            save_image_grid(samples, path)
            return
        split = getattr(trainer.datamodule, "split", None)
        reference = split("val") if callable(split) else None
        title = f"{type(pl_module).__name__}, epoch {trainer.current_epoch}, "
        title += f"iteration {logging_step(trainer)}"
        plot_samples(samples, reference, title, path)
