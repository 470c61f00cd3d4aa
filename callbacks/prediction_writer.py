"""Write the samples produced by ``lebm predict`` to disk: one file, in request order, however
many processes drew them."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from callbacks._paths import run_dir
from lebm.plotting import is_image_batch, plot_samples, save_image_grid


def merge_in_request_order(parts: list[tuple[Tensor, Tensor]]) -> Tensor:
    """Samples of every rank put in request order: ``parts`` holds (request indices (n_r,),
    samples (n_r, ...)) per rank; a request drawn twice (a padding sampler) is kept once."""
    indices = torch.cat([i for i, _ in parts])
    samples = torch.cat([s for _, s in parts])
    order = torch.argsort(indices, stable=True)
    indices, samples = indices[order], samples[order]
    first = torch.ones_like(indices, dtype=torch.bool)
    first[1:] = indices[1:] != indices[:-1]
    return samples[first]


class SampleWriter(BasePredictionWriter):
    """Concatenate predicted samples and save them as ``samples.pt``, plus ``samples.png``: a
    scatter / histogram for 1-/2-D data, a grid of the first ``num_images`` for images.

    Under DDP every rank draws its share of the requests (lebm's datamodules give each rank a
    contiguous block of whole batches); the shares are gathered to rank 0, which writes one
    ``samples.pt`` holding every request once, in request order. Each model's ``predict_step``
    seeds a batch by the run's seed and its first request, so the file is the one a single
    process writes (up to float summation order).

    Args:
        output_dir: folder for the files; default ``<run>/predictions``.
        num_images: images in the PNG grid (image data).
        plot: also write ``samples.png``.
    """

    def __init__(
        self, output_dir: str | None = None, num_images: int = 64, plot: bool = True
    ) -> None:
        super().__init__(write_interval="epoch")
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        self.output_dir = output_dir
        self.num_images = num_images
        self.plot = plot
        self.last_path: Path | None = None

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module, predictions, batch_indices) -> None:
        # predictions: per batch (one dataloader) or per dataloader then batch; batch_indices:
        # per dataloader then batch (the dataset indices of each batch's requests)
        if predictions and isinstance(predictions[0], list):
            predictions = [p for group in predictions for p in group]
        batch_indices = [b for group in batch_indices or [] for b in group]
        samples = [p.detach().cpu() for p in predictions]
        if len(batch_indices) == len(samples):
            indices = [torch.as_tensor(b, dtype=torch.long) for b in batch_indices]
        else:  # indices not tracked (not a DataLoader): the batches' order
            ends = torch.tensor([len(s) for s in samples]).cumsum(0).tolist()
            indices = [
                torch.arange(end - len(s), end) for s, end in zip(samples, ends, strict=True)
            ]
        part = (
            torch.cat(indices) if indices else torch.zeros(0, dtype=torch.long),
            torch.cat(samples) if samples else torch.zeros(0),
        )
        # every rank: under DDP run_dir broadcasts from rank 0
        out = Path(self.output_dir) if self.output_dir else run_dir(trainer) / "predictions"
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            parts: list | None = [None] * trainer.world_size if trainer.is_global_zero else None
            torch.distributed.gather_object(part, parts, dst=0)
        else:
            parts = [part]
        if not trainer.is_global_zero:
            return
        parts = [p for p in parts if len(p[0])]
        if not parts:
            return
        merged = merge_in_request_order(parts)
        out.mkdir(parents=True, exist_ok=True)
        self.last_path = out / "samples.pt"
        torch.save(merged, self.last_path)
        if not self.plot:
            return
        if is_image_batch(merged):
            save_image_grid(merged[: self.num_images], out / "samples.png")
        elif merged[0].numel() <= 2:
            plot_samples(merged, title=f"{len(merged)} samples", path=out / "samples.png")
