"""Statistics of a model's learning gradient across samples (Faghri et al. 2020).

Given K gradient estimates ``g_k`` (of D coordinates) at fixed parameters, with mean ``ḡ``:

- ``variance`` = (1/K) sum_k ||g_k - ḡ||^2 / D  (mean per-coordinate variance);
- ``normalized_variance`` = mean_j var_k(g_kj) / (mean_k g_kj^2 + 1e-7);
- ``grad_norm`` = ||ḡ||.

Two sources of estimates are supported, both computed with batched backward passes
(``torch.autograd.grad(..., is_grads_batched=True)``, i.e. vmap over the backward graph):

- ``per_sample``: the gradient of each sample's loss on one probe batch (K = B);
- ``mcmc``: K independent MCMC redraws of the batch-mean loss on the same batch, run as
  batches of r x B chains (r redraws at a time; ``chunk_size`` bounds r x B).

A model takes part through a small protocol: ``learning_losses(batch, generator=None)``
returns a dict of per-sample losses of shape (B,), and ``gradient_groups()`` maps each loss
name to the nn.Module whose parameters it trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

EPS = 1e-7


@runtime_checkable
class HasLearningLosses(Protocol):
    """What a model provides to have its learning-gradient variance measured."""

    def learning_losses(self, batch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Per-sample losses, each of shape (B,); their batch means are the training losses."""

    def gradient_groups(self) -> dict[str, nn.Module]:
        """Loss name -> network trained by that loss."""


@dataclass
class _Moments:
    """Running per-coordinate sums over K gradient estimates."""

    count: int = 0
    total: list[Tensor] = field(default_factory=list)
    total_sq: list[Tensor] = field(default_factory=list)

    def add(self, grads: list[Tensor]) -> None:
        """grads: one (k, *param_shape) tensor per parameter, for k new estimates."""
        k = grads[0].shape[0]
        flat = [g.reshape(g.shape[0], -1).double() for g in grads]  # 0-d parameters too
        sums = [g.sum(0) for g in flat]
        sq = [g.pow(2).sum(0) for g in flat]
        if self.count == 0:
            self.total, self.total_sq = sums, sq
        else:
            self.total = [a + b for a, b in zip(self.total, sums, strict=True)]
            self.total_sq = [a + b for a, b in zip(self.total_sq, sq, strict=True)]
        self.count += k

    def stats(self) -> dict[str, Tensor]:
        mean = torch.cat(self.total) / self.count
        mean_sq = torch.cat(self.total_sq) / self.count
        var = (mean_sq - mean.pow(2)).clamp_min(0)
        return {
            "variance": var.mean(),
            "normalized_variance": (var / (mean_sq + EPS)).mean(),
            "grad_norm": mean.norm(),
        }

    def absorbed(self, other: _Moments | None) -> _Moments:
        """These moments and ``other``'s (more estimates of the same coordinates) together."""
        if other is None or other.count == 0:
            return self
        return _Moments(
            self.count + other.count,
            [a + b for a, b in zip(self.total, other.total, strict=True)],
            [a + b for a, b in zip(self.total_sq, other.total_sq, strict=True)],
        )

    def merged(self, other: _Moments) -> _Moments:
        """Concatenate coordinates (another group's parameters) for the same K estimates."""
        return _Moments(self.count, self.total + other.total, self.total_sq + other.total_sq)


def _batched_grads(
    outputs: Tensor, params: list[Tensor], chunk_size: int, retain_graph: bool
) -> list[_Moments]:
    """Moments of d outputs[k] / d params for every k, in chunks of rows (vmap over backward)."""
    moments = _Moments()
    n = outputs.shape[0]
    eye = torch.eye(n, device=outputs.device, dtype=outputs.dtype)
    for start in range(0, n, chunk_size):
        rows = eye[start : start + chunk_size]
        last = start + chunk_size >= n
        grads = torch.autograd.grad(
            outputs,
            params,
            grad_outputs=rows,
            is_grads_batched=True,
            retain_graph=retain_graph or not last,
            allow_unused=True,
        )
        grads = [
            torch.zeros_like(p).expand(len(rows), *p.shape) if g is None else g
            for g, p in zip(grads, params, strict=True)
        ]
        moments.add(grads)
    return moments


def _summarise(moments: dict[str, _Moments]) -> dict[str, dict[str, Tensor]]:
    out = {name: m.stats() for name, m in moments.items()}
    total = None
    for m in moments.values():
        total = m if total is None else total.merged(m)
    out["total"] = total.stats()
    return out


def per_sample_gradient_stats(
    model: HasLearningLosses,
    batch,
    generator: torch.Generator | None = None,
    chunk_size: int = 32,
) -> dict[str, dict[str, Tensor]]:
    """Variance of per-sample learning gradients across one probe batch.

    Args:
        model: follows :class:`HasLearningLosses`.
        batch: the probe batch (B samples).
        generator: seeds the model's MCMC draws.
        chunk_size: per-sample gradients computed at a time (memory: chunk_size x parameters).

    Returns:
        ``{group: {"variance", "normalized_variance", "grad_norm"}}`` for each group and
        ``"total"`` (all groups' parameters together); 0-d float64 tensors.
    """
    losses = model.learning_losses(batch, generator=generator)
    groups = model.gradient_groups()
    moments = {}
    names = list(groups)
    for i, name in enumerate(names):
        params = [p for p in groups[name].parameters() if p.requires_grad]
        moments[name] = _batched_grads(losses[name], params, chunk_size, i + 1 < len(names))
    return _summarise(moments)


def mcmc_gradient_stats(
    model: HasLearningLosses,
    batch: Tensor,
    num_redraws: int = 8,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
) -> dict[str, dict[str, Tensor]]:
    """Variance of the batch-mean learning gradient across independent MCMC redraws.

    The redraws run r at a time: the probe batch is repeated r times (r x B chains), the
    per-sample losses are averaged within each copy, and the r gradients come from one batched
    backward pass. ``r = max(1, chunk_size // B)`` (all K when ``chunk_size`` is None), so at
    most ``max(chunk_size, B)`` chains and their graphs are held at once; the statistics are
    accumulated over the chunks.

    Args:
        model: follows :class:`HasLearningLosses`.
        batch: probe tensor of shape (B, *data).
        num_redraws: K >= 2.
        generator: seeds the MCMC draws.
        chunk_size: bound on the chains (redraws x B) run at a time; None: all K x B at once.

    Returns:
        Same layout as :func:`per_sample_gradient_stats`.
    """
    if num_redraws < 2:
        raise ValueError(f"num_redraws must be >= 2, got {num_redraws}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    b = len(batch)
    per_chunk = num_redraws if chunk_size is None else max(1, min(num_redraws, chunk_size // b))
    groups = model.gradient_groups()
    names = list(groups)
    moments: dict[str, _Moments] = {}
    for start in range(0, num_redraws, per_chunk):
        r = min(per_chunk, num_redraws - start)
        repeated = batch.repeat(r, *([1] * (batch.ndim - 1)))
        losses = model.learning_losses(repeated, generator=generator)
        for i, name in enumerate(names):
            per_redraw = losses[name].view(r, b).mean(1)
            params = [p for p in groups[name].parameters() if p.requires_grad]
            chunk = _batched_grads(per_redraw, params, r, i + 1 < len(names))
            moments[name] = chunk.absorbed(moments.get(name))
    return _summarise(moments)
