"""Measure the variance of a model's learning gradient during training."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from callbacks._paths import logging_step
from lebm.data import batch_data
from lebm.grad_stats import HasLearningLosses, mcmc_gradient_stats, per_sample_gradient_stats

Source = Literal["per_sample", "mcmc"]


class GradientVariance(Callback):
    """Every ``every_n_steps`` training batches, estimate the learning-gradient variance.

    At the current (fixed) parameters and on a fixed probe batch, draws K gradient estimates
    from each requested source (see :mod:`lebm.grad_stats`):

    - ``per_sample``: the per-sample gradients of the probe batch (K = probe_size);
    - ``mcmc``: ``num_redraws`` independent MCMC redraws of the batch gradient.

    and logs, per network of ``model.gradient_groups()`` and in total, to every logger:
    ``grad_var/<source>/<group>/variance``, ``.../normalized_variance`` and ``.../grad_norm``
    (also kept in ``self.history`` as (step, values) pairs).
    Nothing touches the parameters' ``.grad`` or the global RNG (a private generator seeds the
    chains), so training is unchanged. Under DDP every rank measures its own probe batch and
    the logged value is the mean over ranks.

    Args:
        every_n_steps: measure after every n-th training batch (and after the first).
        probe_size: probe batch size (taken from the datamodule's ``split("train")`` when it
            has one, else from the first training batch).
        num_redraws: K for the ``mcmc`` source (>= 2).
        sources: which estimates to draw.
        chunk_size: bounds memory: per-sample gradients formed at a time (``per_sample``),
            and chains run at a time (``mcmc``: ``max(1, chunk_size // probe_size)`` redraws
            of the probe batch at a time, at least one).
        seed: seed of the private generator.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        probe_size: int = 64,
        num_redraws: int = 8,
        sources: list[Source] | None = None,
        chunk_size: int = 32,
        seed: int = 0,
    ) -> None:
        sources = list(sources) if sources is not None else ["per_sample", "mcmc"]
        problems = []
        if every_n_steps < 1:
            problems.append(f"every_n_steps must be >= 1, got {every_n_steps}")
        if probe_size < 2:
            problems.append(f"probe_size must be >= 2, got {probe_size}")
        if num_redraws < 2:
            problems.append(f"num_redraws must be >= 2, got {num_redraws}")
        if chunk_size < 1:
            problems.append(f"chunk_size must be >= 1, got {chunk_size}")
        unknown = set(sources) - {"per_sample", "mcmc"}
        if unknown or not sources:
            problems.append(
                f"sources must be a non-empty subset of ['per_sample', 'mcmc'], got {sources}"
            )
        if problems:
            raise ValueError("GradientVariance: " + "; ".join(problems))
        self.every_n_steps = every_n_steps
        self.probe_size = probe_size
        self.num_redraws = num_redraws
        self.sources = sources
        self.chunk_size = chunk_size
        self.seed = seed
        self._probe: Tensor | None = None
        self._batches = 0
        self.history: list[tuple[int, dict[str, float]]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, HasLearningLosses):
            raise TypeError(
                f"GradientVariance needs a model with learning_losses(batch, generator=None) -> "
                f"dict of per-sample losses and gradient_groups() -> dict of modules; "
                f"{type(pl_module).__name__} lacks them (see lebm.grad_stats)."
            )

    def _probe_batch(self, trainer: L.Trainer, batch) -> Tensor:
        if self._probe is None:
            split = getattr(trainer.datamodule, "split", None)
            data = split("train") if callable(split) else batch_data(batch)
            if trainer.world_size > 1 and callable(split):  # a different probe on each rank
                data = data[trainer.global_rank :: trainer.world_size]
            self._probe = data[: self.probe_size].clone()
        return self._probe

    @torch.no_grad()
    def measure(self, pl_module: L.LightningModule, probe: Tensor) -> dict[str, Tensor]:
        """All statistics for the probe batch, keyed ``grad_var/<source>/<group>/<stat>``."""
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed + self._batches)
        probe = probe.to(pl_module.device)
        out = {}
        with torch.enable_grad():
            for source in self.sources:
                if source == "per_sample":
                    stats = per_sample_gradient_stats(pl_module, probe, generator, self.chunk_size)
                else:
                    stats = mcmc_gradient_stats(
                        pl_module, probe, self.num_redraws, generator, self.chunk_size
                    )
                for group, values in stats.items():
                    for stat, value in values.items():
                        out[f"grad_var/{source}/{group}/{stat}"] = value.float()
        return out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches += 1
        if (self._batches - 1) % self.every_n_steps:
            return
        values = self.measure(pl_module, self._probe_batch(trainer, batch))
        # Every rank reduces (a collective), then the loggers (rank 0) write once. Logged
        # straight to the loggers: self.log would repeat the value at unmeasured steps.
        values = {k: trainer.strategy.reduce(v, reduce_op="mean") for k, v in values.items()}
        step = logging_step(trainer)
        self.history.append((step, {k: float(v) for k, v in values.items()}))
        for logger in trainer.loggers:
            logger.log_metrics({k: float(v) for k, v in values.items()}, step=step)
