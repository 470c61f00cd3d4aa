"""Score-matching objectives, one value per sample (the caller reduces).

Each objective fits a *score* ``s(x) ~ grad_x log p(x)``: a network that outputs the score
directly, or an energy network turned into one by :func:`score_from_energy`
(``s = -grad_x E``). Shapes: data ``x`` of shape (B, *event); a score callable returns a
tensor shaped like its input.

- :func:`exact_score_matching` (Hyvarinen 2005): ``1/2 ||s(x)||^2 + tr(ds/dx)``; one backward
  pass per data dimension, so low dimension only.
- :func:`sliced_score_matching` (Song et al. 2019): the trace replaced by random projections
  ``v^T (ds/dx) v``; one backward pass whatever the dimension.
- :func:`denoising_score_matching` (Vincent 2011; NCSN): match the score of the data blurred
  by ``N(0, sigma^2 I)`` to ``-(x~ - x) / sigma^2``; no derivative of the network at all.

The input derivatives need autograd, so each objective turns it on inside even when called
under ``torch.no_grad()`` (Lightning's validation loop); the loss then comes back detached.
With grad mode on (training) the loss is differentiable in the network's parameters.
Inference mode cannot be worked around: run Lightning with ``Trainer(inference_mode=False)``.

Every sample's score must depend on that sample only (no batch norm in train mode): the
per-sample derivatives are taken as derivatives of batch sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from lebm.samplers.base import NoiseConditionalScore, sum_event

Score = Callable[[Tensor], Tensor]
"""``score(x)``: (B, *event) -> (B, *event)."""

ScoreObjective = Literal["exact", "sliced", "denoising"]
ProjectionDistribution = Literal["gaussian", "rademacher"]

EXACT_MAX_DIM = 64
"""Default largest data dimension for the exact objective (one backward per dimension)."""


def _grad_mode(name: str) -> bool:
    """Whether the caller has grad mode on (the loss is then trainable); raise in inference
    mode, where input derivatives cannot be taken at all."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{name} needs autograd for derivatives in x, but inference mode is on. Run "
            "Lightning with Trainer(inference_mode=False) (the lebm CLI's default), or call "
            "outside torch.inference_mode()."
        )
    return torch.is_grad_enabled()


def _differentiable_input(x: Tensor) -> Tensor:
    """``x`` itself when it is already part of a graph, else a leaf copy that requires grad."""
    return x if x.requires_grad else x.detach().requires_grad_(True)


def _check_output(s: Tensor, x: Tensor, name: str = "score") -> Tensor:
    if not isinstance(s, Tensor) or s.shape != x.shape:
        shape = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
        raise ValueError(
            f"{name} must return a tensor shaped like its input {tuple(x.shape)}, got {shape}"
        )
    return s


def score_from_energy(energy: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """The score ``s(x, *args) = -grad_x E(x, *args)`` of an energy ``E`` (density ∝ e^{-E}).

    Extra arguments are passed on, so a noise-conditional energy ``E(x, sigma)`` gives a
    noise-conditional score usable by :func:`denoising_score_matching` and
    :func:`lebm.samplers.annealed_langevin`.

    The gradient is taken with ``create_graph=True`` whenever grad mode is on at the call
    (training, and inside the objectives here, which differentiate the score again), so losses
    of the score train the energy's parameters. Under ``torch.no_grad()`` (sampling) the
    gradient is still computed (autograd is switched on locally) but returned detached, and no
    second-order graph is built.

    Args:
        energy: maps (B, *event) (and any extra arguments) to energies of shape (B,).

    Returns:
        score callable: (B, *event) -> (B, *event).
    """

    def score(x: Tensor, *args: Tensor) -> Tensor:
        create_graph = _grad_mode("score_from_energy")
        with torch.enable_grad():
            x_in = _differentiable_input(x)
            e = energy(x_in, *args)
            if e.shape != x.shape[:1]:
                raise ValueError(
                    f"energy must return one value per sample, shape ({x.shape[0]},); "
                    f"got {tuple(e.shape)}"
                )
            (grad,) = torch.autograd.grad(e.sum(), x_in, create_graph=create_graph)
        return -grad

    return score


def exact_score_matching(score: Score, x: Tensor, *, max_dim: int = EXACT_MAX_DIM) -> Tensor:
    """Hyvarinen's objective per sample::

        J(x) = 1/2 ||s(x)||^2 + tr(ds/dx (x))

    (``tr(ds/dx)`` is the Laplacian of the model's log-density). Its expectation over the data
    equals ``1/2 E||s - grad log p_data||^2`` up to a constant.

    The trace is exact: one backward pass per data dimension D, each differentiating the
    batch sum of one output coordinate. Use :func:`sliced_score_matching` beyond a few dozen
    dimensions.

    Args:
        score: (B, *event) -> (B, *event).
        x: data, shape (B, *event).
        max_dim: largest allowed D.

    Returns:
        Loss per sample, shape (B,).

    Raises:
        ValueError: D > max_dim (names the alternatives), or a score of the wrong shape.
    """
    dim = math.prod(x.shape[1:])
    if dim > max_dim:
        raise ValueError(
            f"exact score matching takes one backward pass per dimension; data dimension {dim} "
            f"> max_dim={max_dim}. Use sliced_score_matching (one backward pass for any "
            "dimension) or denoising_score_matching, or raise max_dim."
        )
    train = _grad_mode("exact score matching")
    with torch.enable_grad():
        x_in = _differentiable_input(x)
        s = _check_output(score(x_in), x).flatten(1)
        trace = torch.zeros_like(s[:, 0])
        if s.requires_grad:
            for i in range(dim):
                (g,) = torch.autograd.grad(
                    s[:, i].sum(), x_in, create_graph=train, retain_graph=True, allow_unused=True
                )
                if g is not None:
                    trace = trace + g.flatten(1)[:, i]
        loss = 0.5 * s.pow(2).sum(1) + trace
    return loss if train else loss.detach()


def _projections(
    shape: tuple[int, ...],
    like: Tensor,
    distribution: ProjectionDistribution,
    generator: torch.Generator | None,
) -> Tensor:
    if distribution == "gaussian":
        return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
    signs = torch.randint(0, 2, shape, generator=generator, device=like.device)
    return (2 * signs - 1).to(like.dtype)


def sliced_score_matching(
    score: Score,
    x: Tensor,
    num_projections: int = 1,
    generator: torch.Generator | None = None,
    distribution: ProjectionDistribution = "gaussian",
    *,
    variance_reduction: bool = True,
) -> Tensor:
    """Sliced score matching per sample, averaged over ``M = num_projections`` directions v::

        J(x) = mean_v [ v^T (ds/dx) v + 1/2 ||s(x)||^2 ]       (variance_reduction=True, SSM-VR)
        J(x) = mean_v [ v^T (ds/dx) v + 1/2 (v^T s(x))^2 ]     (variance_reduction=False, SSM)

    Both have the exact objective's expectation over v whenever ``E[v v^T] = I``, true of
    both distributions offered; SSM-VR (the default) computes the ``1/2 ||s||^2`` term exactly
    and so has lower variance. Rademacher directions (entries ±1) also give a lower-variance
    trace estimate than Gaussian ones (Hutchinson).

    Cost: one forward pass of ``score`` on ``x`` itself and one backward pass per projection
    (``v^T (ds/dx) v`` as ``v . grad_x (v . s)``). Row i of the score's input is sample i, so a
    score conditioned per sample (a noise level, a timestep) can close over its (B,) condition.

    Args:
        score: (B, *event) -> (B, *event).
        x: data, shape (B, *event).
        num_projections: M >= 1.
        generator: optional torch.Generator for v (on x's device).
        distribution: ``"gaussian"`` or ``"rademacher"``.
        variance_reduction: SSM-VR (default) or plain SSM.

    Returns:
        Loss per sample, shape (B,).
    """
    if (
        isinstance(num_projections, bool)
        or not isinstance(num_projections, int)
        or num_projections < 1
    ):
        raise ValueError(f"num_projections must be a positive int, got {num_projections!r}")
    if distribution not in ("gaussian", "rademacher"):
        raise ValueError(f"distribution must be 'gaussian' or 'rademacher', got {distribution!r}")
    train = _grad_mode("sliced score matching")
    with torch.enable_grad():
        x_in = _differentiable_input(x)
        v = _projections((num_projections, *x.shape), x, distribution, generator)
        s = _check_output(score(x_in), x)
        loss = torch.zeros_like(sum_event(s))
        for m in range(num_projections):
            sv = sum_event(s * v[m])
            vjv = torch.zeros_like(sv)
            if s.requires_grad:
                (g,) = torch.autograd.grad(
                    sv.sum(), x_in, create_graph=train, retain_graph=True, allow_unused=True
                )
                if g is not None:
                    vjv = sum_event(g * v[m])
            loss = loss + vjv + (0 if variance_reduction else 0.5 * sv.pow(2))
        loss = loss / num_projections
        if variance_reduction:
            loss = loss + 0.5 * sum_event(s.pow(2))
    return loss if train else loss.detach()


def denoising_score_matching(
    score: NoiseConditionalScore,
    x: Tensor,
    sigmas: Tensor | float,
    levels: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Denoising score matching with one noise level per sample (NCSN)::

        x~ = x + sigma z,   z ~ N(0, I)
        J(x) = lambda(sigma) * 1/2 ||s(x~, sigma) + (x~ - x) / sigma^2||^2,   lambda = sigma^2
             = 1/2 ||sigma s(x~, sigma) + z||^2

    Its minimiser over s is the score of the data convolved with ``N(0, sigma^2 I)`` at
    every level; the weight ``sigma^2`` makes the levels' losses comparable (order one).

    Args:
        score: ``score(x_noisy, sigma)`` with sigma of shape (B,) (x's dtype and device).
        x: clean data, shape (B, *event).
        sigmas: the ladder, shape (L,) (``SigmaLadder.sigmas``), or one float.
        levels: level index per sample, shape (B,), integer; drawn uniformly from
            ``0 .. L-1`` when None (pass your own, e.g. ``ladder.sample_levels(B)``, to log the
            loss per level).
        generator: optional torch.Generator for the levels and the noise (on x's device).

    Returns:
        Loss per sample, shape (B,).
    """
    sig = torch.as_tensor(sigmas, dtype=x.dtype, device=x.device).reshape(-1)
    if sig.numel() == 0:
        raise ValueError("sigmas must hold at least one noise level")
    if sig.device.type == "cpu" and not bool((sig > 0).all()):  # host check only where free
        raise ValueError(f"sigmas must be positive, got {sig.tolist()}")
    batch = x.shape[0]
    if levels is None:
        levels = torch.randint(0, len(sig), (batch,), generator=generator, device=x.device)
    else:
        if levels.is_floating_point() or levels.shape != (batch,):
            raise ValueError(
                f"levels must be integer indices of shape ({batch},), got dtype {levels.dtype}, "
                f"shape {tuple(levels.shape)}"
            )
        levels = levels.to(x.device)
    sigma = sig[levels]
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    sigma_b = sigma.view(-1, *([1] * (x.ndim - 1)))
    x_noisy = x + sigma_b * z
    s = _check_output(score(x_noisy, sigma), x)
    return 0.5 * sum_event((sigma_b * s + z).pow(2))


def score_matching_loss(
    kind: ScoreObjective,
    score: Score | NoiseConditionalScore,
    x: Tensor,
    *,
    sigmas: Tensor | float | None = None,
    levels: Tensor | None = None,
    num_projections: int = 1,
    distribution: ProjectionDistribution = "gaussian",
    variance_reduction: bool = True,
    max_dim: int = EXACT_MAX_DIM,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Dispatch to one objective by name; per-sample losses, shape (B,).

    ``"exact"`` and ``"sliced"`` take ``score(x)``; ``"denoising"`` takes
    ``score(x_noisy, sigma)`` and needs ``sigmas``. Options that do not apply to ``kind``
    must be left at their defaults.
    """
    if kind == "denoising":
        if sigmas is None:
            raise ValueError("denoising score matching needs sigmas (e.g. SigmaLadder.sigmas)")
        return denoising_score_matching(score, x, sigmas, levels=levels, generator=generator)
    if sigmas is not None or levels is not None:
        raise ValueError(f"sigmas and levels only apply to 'denoising', not {kind!r}")
    if kind == "exact":
        return exact_score_matching(score, x, max_dim=max_dim)
    if kind == "sliced":
        return sliced_score_matching(
            score,
            x,
            num_projections,
            generator,
            distribution,
            variance_reduction=variance_reduction,
        )
    raise ValueError(f"unknown score objective {kind!r}; choose 'exact', 'sliced' or 'denoising'")
