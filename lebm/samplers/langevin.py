"""Langevin dynamics: unadjusted (ULA) and Metropolis-adjusted (MALA).

One update, in lebm's step-size convention::

    z' = z + s * grad log pi(z) + sqrt(2 s) * eps,    eps ~ N(0, I)

A paper writing ``z - (h^2 / 2) grad E(z) + h eps`` has ``s = h^2 / 2``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lebm.samplers.base import (
    LogProb,
    SamplerResult,
    check_finite,
    gaussian_noise,
    log_prob_and_grad,
    metropolis_hastings,
    norm_event,
    per_chain_step_size,
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

    Cost: exactly one forward and one backward pass of ``log_prob`` per step (plus one
    forward at the end for ULA). Gradients are taken with respect to the chains only: no
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
    noise_std = (2.0 * s).sqrt()
    device, dtype = z0.device, z0.dtype

    with torch.autocast(device_type=device.type, enabled=False):
        z = z0.detach()
        lp, grad = log_prob_and_grad(log_prob, z)
        lp_start = lp
        # log-densities of every state, for one divergence check at the end: a non-finite
        # state or gradient makes the next state's log-density non-finite too.
        lp_trace = lp.new_empty(n_steps + 1, batch)
        lp_trace[0] = lp
        grad_norm_sum = torch.zeros(batch, device=device, dtype=dtype)
        accepted = torch.zeros(batch, device=device, dtype=dtype) if mh else None
        trajectory = [z] if return_trajectory else None
        noise = gaussian_noise(n_steps, z, generator)

        for k in range(n_steps):
            grad_norm_sum += norm_event(grad)
            eps = noise(k)
            proposal = torch.addcmul(z, s, grad).addcmul_(noise_std, eps)
            if mh:
                lp_prop, grad_prop = log_prob_and_grad(log_prob, proposal)
                # log q(z | z') - log q(z' | z), with q(a | b) = N(a; b + s grad(b), 2 s I);
                # the forward term is ||sqrt(2s) eps||^2 / (4 s) = ||eps||^2 / 2.
                reverse = z - proposal - s * grad_prop
                log_q_ratio = -sum_event(reverse**2) / (4.0 * s_flat) + sum_event(eps**2) / 2.0
                log_alpha = lp_prop - lp + log_q_ratio
                u = torch.rand(batch, generator=generator, device=device, dtype=dtype)
                (z, lp, grad), accept = metropolis_hastings(
                    u.log(), log_alpha, (z, lp, grad), (proposal, lp_prop, grad_prop)
                )
                accepted += accept
            else:
                z = proposal
                if k + 1 < n_steps:
                    lp, grad = log_prob_and_grad(log_prob, z)
                else:  # last state: the log-density is needed, its gradient is not
                    with torch.no_grad():
                        lp = log_prob(z)
            lp_trace[k + 1] = lp
            if trajectory is not None:
                trajectory.append(z)

    check_finite(
        lp_trace,
        name,
        "Lower the step size, use MALA (mh=True) which rejects exploding proposals, or check "
        "the energy/likelihood for overflow (e.g. a likelihood sigma that is too small).",
        step_size=s,
    )
    steps = max(n_steps, 1)
    return SamplerResult(
        sample=z.detach(),
        log_prob=lp.detach(),
        log_prob_start=lp_start,
        grad_norm=grad_norm_sum / steps,
        acceptance_rate=None if accepted is None else accepted / steps,
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
