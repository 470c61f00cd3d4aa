"""Random-walk Metropolis: the lecture's first sampler, and the only one here that needs no
gradient.

One transition per chain, in lebm's step-size convention (the Langevin update
``z + s grad log pi + sqrt(2 s) eps`` without its drift)::

    z' = z + sqrt(2 s) * eps,    eps ~ N(0, I)
    accept z' with probability min(1, pi(z') / pi(z)) = min(1, exp(log pi(z') - log pi(z)))

The proposal is symmetric, so no proposal-density ratio enters. A reference that writes the
proposal as ``N(z, sigma^2 I)`` has ``s = sigma^2 / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from lebm.samplers.base import (
    LogProb,
    SamplerResult,
    check_finite,
    gaussian_noise,
    metropolis_hastings,
    per_chain_step_size,
)


@dataclass
class RandomWalkResult(SamplerResult):
    """A :class:`~lebm.samplers.SamplerResult` of a gradient-free sampler: ``grad_norm`` is NaN
    (never computed) and :meth:`diagnostics` leaves it out."""

    def diagnostics(self) -> dict[str, Tensor]:
        out = super().diagnostics()
        out.pop("grad_norm")
        return out


def random_walk_metropolis(
    log_prob: LogProb,
    z0: Tensor,
    n_steps: int,
    step_size: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> RandomWalkResult:
    """Run ``B`` independent random-walk Metropolis chains, one per row of ``z0``.

    Cost: ``1 + n_steps`` forward passes of ``log_prob`` under ``torch.no_grad()`` (no
    backward pass at all). Proposals whose state or log-density is not finite are rejected.

    Args:
        log_prob: maps (B, *event) to the log-density (up to a constant) of shape (B,).
        z0: initial states, shape (B, *event).
        n_steps: number of proposals (>= 0).
        step_size: ``s``: proposals are ``z + sqrt(2 s) eps``; a float, or a tensor of shape
            (B,) giving each chain its own.
        generator: optional torch.Generator for the proposals and the acceptance draws (on
            z0's device).
        return_trajectory: also return the state after every proposal, shape
            (n_steps + 1, B, *event).

    Returns:
        RandomWalkResult; ``acceptance_rate`` is the per-chain fraction of accepted proposals.

    Raises:
        ValueError: bad ``n_steps`` or ``step_size``, or a log_prob that does not return one
            value per chain.
        SamplerDivergenceError: the log-density is not finite at a start state.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
    s = per_chain_step_size(step_size, z0)
    noise_std = (2.0 * s).sqrt()
    batch, device, dtype = z0.shape[0], z0.device, z0.dtype

    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
        z = z0.detach()
        lp = log_prob(z)
        if lp.shape != (batch,):
            raise ValueError(
                f"log_prob must return one value per chain, shape ({batch},); got {tuple(lp.shape)}"
            )
        check_finite(
            lp[None],
            "RandomWalkMetropolis",
            "Chains reject proposals where the log-density is not finite, but cannot start "
            "there: start them inside the support (check z0 and the energy for overflow).",
            where=lambda _: "the initial log-density",
            step_size=s,
        )
        lp_start = lp
        accepted = torch.zeros(batch, device=device, dtype=dtype)
        trajectory = [z] if return_trajectory else None
        noise = gaussian_noise(n_steps, z, generator)
        log_u = torch.rand((n_steps, batch), generator=generator, device=device, dtype=dtype).log()
        for k in range(n_steps):
            proposal = torch.addcmul(z, noise_std, noise(k))
            lp_prop = log_prob(proposal)
            # no gradient: the position fills the helper's gradient slot (checked for finiteness)
            (z, lp, _), accept = metropolis_hastings(
                log_u[k], lp_prop - lp, (z, lp, z), (proposal, lp_prop, proposal)
            )
            accepted += accept
            if trajectory is not None:
                trajectory.append(z)

    steps = max(n_steps, 1)
    return RandomWalkResult(
        sample=z,
        log_prob=lp,
        log_prob_start=lp_start,
        grad_norm=torch.full((batch,), float("nan"), device=device, dtype=dtype),
        acceptance_rate=accepted / steps,
        trajectory=None if trajectory is None else torch.stack(trajectory),
    )
