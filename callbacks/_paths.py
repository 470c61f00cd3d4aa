"""Where callbacks write files: the run folder of the first logger, else default_root_dir."""

from __future__ import annotations

from pathlib import Path

import lightning as L


def run_dir(trainer: L.Trainer) -> Path:
    """The run folder (e.g. ``<default_root_dir>/version_0``).

    Call it on every rank: under DDP ``trainer.log_dir`` broadcasts from rank 0, so calling it
    from rank 0 alone deadlocks.
    """
    log_dir = trainer.log_dir if trainer.loggers else None
    return Path(log_dir or trainer.default_root_dir)


def logging_step(trainer: L.Trainer) -> int:
    """The step loggers record: training batches so far (``global_step`` counts optimizer
    steps, two per batch for two-optimizer models)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def log_image_to_loggers(trainer: L.Trainer, key: str, path: Path) -> None:
    """Send a saved PNG to every logger that takes images (W&B; TensorBoard via its writer)."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[str(path)], step=logging_step(trainer))
        elif hasattr(getattr(logger, "experiment", None), "add_image"):
            import matplotlib.image as mpimg
            import torch

            image = torch.from_numpy(mpimg.imread(str(path))[..., :3]).permute(2, 0, 1)
            logger.experiment.add_image(key, image, logging_step(trainer))
