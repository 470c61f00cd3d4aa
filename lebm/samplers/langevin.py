"""Langevin dynamics: unadjusted (ULA) and Metropolis-adjusted (MALA).

One update, in lebm's step-size convention::

    z' = z + s * grad log pi(z) + sqrt(2 s) * eps,    eps ~ N(0, I)

A paper writing ``z - (h^2 / 2) grad E(z) + h eps`` has ``s = h^2 / 2``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lebm.samplers.base import (
    GradientEvaluator,
    LogProb,
    SamplerResult,
    check_finite,
    metropolis_hastings,
    norm_event,
    per_chain_step_size,
    scaled_noise,
    sum_event,
)


def langevin(
    log_prob: LogProb,
    z0: Tensor,
    n_steps: int,
    step_size: float | Tensor,
    *,
    mh: bool = False,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> SamplerResult:
    """Run ``B`` independent Langevin chains, one per row of ``z0``.

    Each chain is independent, so chains for several targets (for example several
    temperatures of a power posterior) can share one tensor and one call, provided
    ``log_prob`` evaluates each row under its own target.

    Cost: exactly one forward and one backward pass of ``log_prob`` per step. ULA does not
    evaluate its final state: ``result.log_prob`` is computed (one forward pass) only when read.
    A :class:`~lebm.samplers.GaussianReference` log-density gets its Gaussian term's gradient
    analytically. Gradients are taken with respect to the chains only: no
    network parameter receives ``.grad``. Autocast is disabled inside, so chains stay in
    the dtype of ``z0`` (float32) under mixed-precision training.

    Args:
        log_prob: maps (B, *event) to the log-density (up to a constant) of shape (B,).
        z0: initial states, shape (B, *event).
        n_steps: number of updates (>= 0).
        step_size: ``s`` in the update above; a float, or a tensor of shape (B,) giving
            each chain its own step size.
        mh: apply a per-chain Metropolis-Hastings correction (MALA). Non-finite proposals
            are then rejected rather than raised.
        generator: optional torch.Generator for reproducible noise (on z0's device).
        return_trajectory: also return every state, shape (n_steps + 1, B, *event).

    Returns:
        SamplerResult with the final states and diagnostics.

    Raises:
        SamplerDivergenceError: a chain's state, log-density or gradient became non-finite
            (ULA; the message names the step and step size).
    """
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    name = "MALA" if mh else "Langevin"
    batch = z0.shape[0]
    s = per_chain_step_size(step_size, z0)
    s_flat = s.flatten()
    # a float step size enters the update as a scalar (no broadcast multiply per step)
    s_scalar = None if isinstance(step_size, Tensor) else float(step_size)
    device, dtype = z0.device, z0.dtype
    evaluate = GradientEvaluator(log_prob)

    with torch.autocast(device_type=device.type, enabled=False):
        z = z0.detach()
        lp, grad = evaluate(z)
        lp_start = lp
        # per-step values for one divergence check at the end: a non-finite state or gradient
        # makes the next state's log-density non-finite too. ULA keeps only what that check
        # needs (for a GaussianReference, the value without the reference term).
        lp_trace = [lp]
        grad_norms = []
        accepted = torch.zeros(batch, device=device, dtype=dtype) if mh else None
        trajectory = [z] if return_trajectory else None
        # sqrt(2 s) eps for every step, scaled once up front
        noise = scaled_noise(
            n_steps, z, (2.0 * s_scalar) ** 0.5 if s_scalar else (2.0 * s).sqrt(), generator
        )

        for k in range(n_steps):
            grad_norms.append(norm_event(grad))
            scaled_eps = noise(k)
            if s_scalar is None:
                proposal = torch.addcmul(scaled_eps, s, grad).add_(z)
            else:
                proposal = torch.add(scaled_eps, grad, alpha=s_scalar).add_(z)
            if mh:
                lp_prop, grad_prop = evaluate(proposal)
                # log q(z | z') - log q(z' | z), with q(a | b) = N(a; b + s grad(b), 2 s I);
                # the forward term is ||sqrt(2s) eps||^2 / (4 s).
                reverse = z - proposal - s * grad_prop
                log_q_ratio = (sum_event(scaled_eps**2) - sum_event(reverse**2)) / (4.0 * s_flat)
                log_alpha = lp_prop - lp + log_q_ratio
                u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
                (z, lp, grad), accept = metropolis_hastings(
                    u.log(), log_alpha, (z, lp, grad), (proposal, lp_prop, grad_prop)
                )
                accepted += accept
                lp_trace.append(lp)
            else:
                z = proposal
                if k + 1 < n_steps:
                    lp, grad = evaluate(z, value=False)
                    lp_trace.append(lp)
            if trajectory is not None:
                trajectory.append(z)

    final_lp: Tensor | Callable[[], Tensor] = lp
    if not mh and n_steps > 0:
        # the last state: its log-density is only evaluated if the caller reads it (a deferred
        # value, see SamplerResult.log_prob); the divergence check looks at the state itself
        lp_trace.append(sum_event(z))

        def final_lp(z: Tensor = z, log_prob: LogProb = log_prob) -> Tensor:
            with torch.autocast(device_type=device.type, enabled=False):
                return log_prob(z).detach()

    check_finite(
        torch.stack(lp_trace),
        name,
        "Lower the step size, use MALA (mh=True) which rejects exploding proposals, or check "
        "the energy/likelihood for overflow (e.g. a likelihood sigma that is too small).",
        step_size=s,
    )
    return SamplerResult(
        sample=z.detach(),
        log_prob=final_lp,
        log_prob_start=lp_start,
        grad_norm=torch.stack(grad_norms).mean(0) if n_steps else torch.zeros_like(lp_start),
        acceptance_rate=None if accepted is None else accepted / max(n_steps, 1),
        trajectory=None if trajectory is None else torch.stack(trajectory),
    )


def mala(
    log_prob: LogProb,
    z0: Tensor,
    n_steps: int,
    step_size: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> SamplerResult:
    """Metropolis-adjusted Langevin: :func:`langevin` with ``mh=True``."""
    return langevin(
        log_prob,
        z0,
        n_steps,
        step_size,
        mh=True,
        generator=generator,
        return_trajectory=return_trajectory,
    )
