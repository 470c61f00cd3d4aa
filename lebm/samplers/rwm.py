"""Random-walk Metropolis: the lecture's first sampler, and the only one here that needs no
gradient.

One transition per chain, in lebm's step-size convention (the Langevin update
``z + s grad log pi + sqrt(2 s) eps`` without its drift)::

    z' = z + sqrt(2 s) * eps,    eps ~ N(0, I)
    accept z' with probability min(1, pi(z') / pi(z)) = min(1, exp(log pi(z') - log pi(z)))

The proposal is symmetric, so no proposal-density ratio enters. A reference that writes the
proposal as ``N(z, sigma^2 I)`` has ``s = sigma^2 / 2``.

Optional global moves (``jump_prob > 0``): at each step each chain independently, with
probability ``jump_prob``, proposes instead from a fixed distribution q that ignores its state
(an independence proposal: ``N(0, a^2 I)`` or uniform on ``[-a, a]^D``, ``a = jump_scale``)
and accepts with ``min(1, pi(z') q(z) / (pi(z) q(z')))``. Both moves leave pi invariant and the
choice between them does not depend on the state, so the mixture does too. Local chains cannot
cross between well-separated modes, so they cannot move mass between them; the jumps can
(a data-space EBM trained by contrastive divergence needs this to learn mode weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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

    def diagnostics(self, *, log_prob_end: bool = True) -> dict[str, Tensor]:
        out = super().diagnostics(log_prob_end=log_prob_end)
        out.pop("grad_norm")
        return out


JumpDistribution = Literal["gaussian", "uniform"]


def _jump_log_density(z: Tensor, distribution: JumpDistribution, scale: float) -> Tensor:
    """``log q(z)`` of the independence proposal up to a constant, shape (B,)."""
    flat = z.flatten(1)
    if distribution == "gaussian":
        return -0.5 * flat.square().sum(1) / scale**2
    inside = (flat.abs() <= scale).all(1)
    return torch.where(inside, 0.0, float("-inf")).to(z.dtype)


def _draw_jumps(
    z: Tensor, distribution: JumpDistribution, scale: float, generator: torch.Generator | None
) -> Tensor:
    """One independence proposal per chain, shaped like ``z``."""
    kwargs = {"generator": generator, "device": z.device, "dtype": z.dtype}
    if distribution == "gaussian":
        return scale * torch.randn(z.shape, **kwargs)
    return scale * (2.0 * torch.rand(z.shape, **kwargs) - 1.0)


def check_jumps(jump_prob: float, jump_distribution: str, jump_scale: float) -> None:
    """ValueError naming the bad setting of the independence jumps."""
    if not 0.0 <= jump_prob <= 1.0:
        raise ValueError(f"jump_prob must be in [0, 1], got {jump_prob!r}")
    if jump_distribution not in ("gaussian", "uniform"):
        raise ValueError(
            f"jump_distribution must be 'gaussian' or 'uniform', got {jump_distribution!r}"
        )
    if not jump_scale > 0:
        raise ValueError(f"jump_scale must be > 0, got {jump_scale!r}")


def random_walk_metropolis(
    log_prob: LogProb,
    z0: Tensor,
    n_steps: int,
    step_size: float | Tensor,
    *,
    jump_prob: float = 0.0,
    jump_distribution: JumpDistribution = "gaussian",
    jump_scale: float = 1.0,
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
        jump_prob: per chain and step, the probability of an independence proposal from q
            instead (0: plain random-walk Metropolis, drawing no extra random numbers).
        jump_distribution: q: ``"gaussian"`` ``N(0, jump_scale^2 I)`` or ``"uniform"`` on
            ``[-jump_scale, jump_scale]^D`` (a chain outside that box never jumps).
        jump_scale: q's scale ``a`` (units of z; for standardised data about 1.5 for the
            Gaussian, 3 for the uniform: q must cover every mode).
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
    check_jumps(jump_prob, jump_distribution, jump_scale)
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
        if jump_prob > 0:
            jumps = torch.rand((n_steps, batch), generator=generator, device=device) < jump_prob
            event_ones = [1] * (z.ndim - 1)
        for k in range(n_steps):
            proposal = torch.addcmul(z, noise_std, noise(k))
            if jump_prob > 0:
                target = _draw_jumps(z, jump_distribution, jump_scale, generator)
                proposal = torch.where(jumps[k].view(-1, *event_ones), target, proposal)
            lp_prop = log_prob(proposal)
            log_alpha = lp_prop - lp
            if jump_prob > 0:  # the independence proposal's Hastings ratio q(z) / q(z')
                hastings = _jump_log_density(z, jump_distribution, jump_scale) - _jump_log_density(
                    proposal, jump_distribution, jump_scale
                )
                log_alpha = log_alpha + torch.where(jumps[k], hastings, 0.0)
            # no gradient: the position fills the helper's gradient slot (checked for finiteness)
            (z, lp, _), accept = metropolis_hastings(
                log_u[k], log_alpha, (z, lp, z), (proposal, lp_prop, proposal)
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
