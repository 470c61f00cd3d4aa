"""Write the samples produced by ``lebm predict`` to disk."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from callbacks._paths import run_dir
from lebm.plotting import is_image_batch, plot_samples, save_image_grid


class SampleWriter(BasePredictionWriter):
    """Concatenate predicted samples and save them as ``samples.pt``, plus ``samples.png``: a
    scatter / histogram for 1-/2-D data, a grid of the first ``num_images`` for images.

    Under DDP every rank writes its own part as ``samples_rank<r>.pt``.

    Args:
        output_dir: folder for the files; default ``<run>/predictions``.
        num_images: images in the PNG grid (image data).
    """

    def __init__(self, output_dir: str | None = None, num_images: int = 64) -> None:
        super().__init__(write_interval="epoch")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        self.output_dir = output_dir
        self.num_images = num_images
        self.last_path: Path | None = None

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module, predictions, batch_indices) -> None:
        if not predictions:
            return
        if isinstance(predictions[0], list):  # several predict dataloaders
            predictions = [p for group in predictions for p in group]
        samples = torch.cat([p.detach().cpu() for p in predictions])
        out = Path(self.output_dir) if self.output_dir else run_dir(trainer) / "predictions"
        out.mkdir(parents=True, exist_ok=True)
        name = "samples.pt" if trainer.world_size == 1 else f"samples_rank{trainer.global_rank}.pt"
        self.last_path = out / name
        torch.save(samples, self.last_path)
        if not trainer.is_global_zero:
            return
        if is_image_batch(samples):
            save_image_grid(samples[: self.num_images], out / "samples.png")
        elif samples[0].numel() <= 2:
            plot_samples(samples, title=f"{len(samples)} samples", path=out / "samples.png")
