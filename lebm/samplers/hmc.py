"""Hamiltonian Monte Carlo with a scalar or diagonal mass and per-chain Metropolis-Hastings.

The chains move under the Hamiltonian (``M`` the mass: a scalar, or a diagonal of the event
shape)::

    H(z, p) = -log pi(z) + p^T M^{-1} p / 2,        p ~ N(0, M)

integrated by ``L`` leapfrog steps of size ``eps``::

    p <- p + (eps / 2) grad log pi(z)
    z <- z + eps M^{-1} p                  } L times (the two half-kicks between
    p <- p + (eps / 2) grad log pi(z)      }  consecutive steps merge into one full kick)

and each proposal is accepted with probability ``min(1, exp(H(z, p) - H(z', p')))``.

Relation to lebm's Langevin convention ``z' = z + s grad log pi(z) + sqrt(2 s) xi``: one
leapfrog step (``L = 1``) with ``M = I`` proposes ``z' = z + (eps^2 / 2) grad log pi(z) + eps p``,
which is that update with ``s = eps^2 / 2``, and its acceptance test on ``H`` equals MALA's.
So ``hmc(..., step_size=eps, n_leapfrog=1)`` is ``mala(..., step_size=eps**2 / 2)`` in law,
and a Langevin step size ``s`` corresponds to ``eps = sqrt(2 s)``; with a scalar mass ``m``,
to ``eps = sqrt(2 s m)``.
"""

from __future__ import annotations

import math

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
)


def _mass_factors(mass: float | Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
    """Validate ``mass`` and return ``(sqrt(M), M^{-1})``, each broadcastable to ``z``."""
    event = tuple(z.shape[1:])
    if isinstance(mass, Tensor):
        m = mass.to(dtype=z.dtype, device=z.device)
        if m.ndim != 0 and tuple(m.shape) != event:
            raise ValueError(
                f"mass must be a float or a tensor of the event shape {event} (a diagonal mass "
                f"matrix), got shape {tuple(m.shape)}"
            )
        if not bool(((m > 0) & torch.isfinite(m)).all()):  # one host sync
            raise ValueError(f"mass must be positive and finite, got min {m.min().item():g}")
    else:
        if isinstance(mass, bool) or not isinstance(mass, int | float):
            raise ValueError(f"mass must be a float or a tensor, got {type(mass).__name__}")
        if not (mass > 0 and math.isfinite(mass)):
            raise ValueError(f"mass must be positive and finite, got {mass:g}")
        m = torch.tensor(float(mass), dtype=z.dtype, device=z.device)
    return m.sqrt(), m.reciprocal()


def _kinetic_difference(p0: Tensor, p1: Tensor, inv_mass: float | Tensor) -> Tensor:
    """``p0^T M^{-1} p0 - p1^T M^{-1} p1`` per chain, shape (B,)."""
    a, b = p0.flatten(1), p1.flatten(1)
    if isinstance(inv_mass, float):
        return (torch.linalg.vecdot(a, a) - torch.linalg.vecdot(b, b)).mul_(inv_mass)
    w = inv_mass.expand(p0.shape).flatten(1) if inv_mass.ndim else inv_mass
    return torch.linalg.vecdot(a * w, a) - torch.linalg.vecdot(b * w, b)


def _check_n_leapfrog(n_leapfrog: int) -> None:
    if isinstance(n_leapfrog, bool) or not isinstance(n_leapfrog, int) or n_leapfrog < 1:
        raise ValueError(f"n_leapfrog must be an int >= 1, got {n_leapfrog!r}")


def leapfrog(
    log_prob: LogProb,
    z: Tensor,
    momentum: Tensor,
    grad: Tensor,
    step_size: float | Tensor,
    n_leapfrog: int,
    inv_mass: float | Tensor = 1.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``n_leapfrog`` leapfrog steps of the dynamics of ``H(z, p) = -log pi(z) + p^T M^{-1} p / 2``.

    Cost: ``n_leapfrog`` forward and backward passes of ``log_prob`` (the gradient at the start
    is passed in, the one at the end is returned for reuse).

    Args:
        log_prob: maps (B, *event) to the log-density (up to a constant) of shape (B,).
        z: start positions, shape (B, *event).
        momentum: start momenta, shape (B, *event).
        grad: ``grad log pi(z)`` at the start, shape (B, *event).
        step_size: ``eps``; a float or a tensor broadcastable to z (e.g. (B, 1, ..., 1)).
        n_leapfrog: number of steps ``L`` (>= 1).
        inv_mass: ``M^{-1}``, a float or a tensor broadcastable to z (the diagonal).

    Returns:
        (end positions, end momenta, log-density at the end of shape (B,), gradient there).
    """
    _check_n_leapfrog(n_leapfrog)
    return _leapfrog(
        GradientEvaluator(log_prob), z, momentum, grad, step_size, n_leapfrog, inv_mass
    )


def _axpy(y: Tensor, a: float | Tensor, x: Tensor) -> Tensor:
    """``y + a x`` in one operation: a scalar ``a`` as alpha, a tensor one by addcmul."""
    return torch.add(y, x, alpha=a) if isinstance(a, float) else torch.addcmul(y, a, x)


def _leapfrog(
    evaluate: GradientEvaluator,
    z: Tensor,
    momentum: Tensor,
    grad: Tensor,
    step_size: float | Tensor,
    n_leapfrog: int,
    inv_mass: float | Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`leapfrog` on an evaluator; float step size and mass enter as scalars."""
    half = step_size / 2
    drift = step_size * inv_mass
    p = _axpy(momentum, half, grad)
    lp = grad.new_empty(0)  # set by the first step (n_leapfrog >= 1)
    for i in range(n_leapfrog):
        z = _axpy(z, drift, p)
        lp, grad = evaluate(z)
        p = _axpy(p, step_size if i + 1 < n_leapfrog else half, grad)
    return z, p, lp, grad


def hmc(
    log_prob: LogProb,
    z0: Tensor,
    n_steps: int,
    step_size: float | Tensor,
    n_leapfrog: int = 5,
    mass: float | Tensor = 1.0,
    *,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> SamplerResult:
    """Run ``B`` independent HMC chains, one per row of ``z0``.

    Each of the ``n_steps`` proposals draws a fresh momentum ``p ~ N(0, M)``, runs
    ``n_leapfrog`` leapfrog steps of size ``step_size`` (see the module docstring for the
    equations and the relation to Langevin's step size) and accepts or rejects per chain by
    Metropolis-Hastings on the Hamiltonian. Proposals whose position, log-density, gradient or
    energy is not finite are rejected, so a step size that makes the dynamics diverge lowers
    the acceptance rate instead of raising.

    Chains are independent, so chains for several targets (for example the temperatures of a
    power posterior, each with its own step size) can share one tensor and one call, provided
    ``log_prob`` evaluates each row under its own target.

    Cost: ``1 + n_steps * n_leapfrog`` forward and backward passes of ``log_prob``: the gradient
    at the current state is reused across proposals (an accepted proposal's end gradient becomes
    the next start gradient). Gradients are taken with respect to the chains only: no network
    parameter receives ``.grad``. Autocast is disabled inside, so chains stay in the dtype of
    ``z0`` (float32) under mixed-precision training.

    Args:
        log_prob: maps (B, *event) to the log-density (up to a constant) of shape (B,).
        z0: initial states, shape (B, *event).
        n_steps: number of proposals (>= 0).
        step_size: the leapfrog step ``eps`` (not Langevin's ``s``: ``s = eps^2 / 2``); a
            float, or a tensor of shape (B,) giving each chain its own step size.
        n_leapfrog: leapfrog steps per proposal, ``L >= 1``.
        mass: ``M``; a positive float (``M = mass * I``), or a positive tensor of the event
            shape ``z0.shape[1:]`` (the diagonal of ``M``). A mass equal to the target's
            precision (its diagonal) equalises the speeds of the coordinates.
        generator: optional torch.Generator for the momenta and the acceptance draws (on z0's
            device).
        return_trajectory: also return the state after every proposal, shape
            (n_steps + 1, B, *event).

    Returns:
        SamplerResult; ``grad_norm`` is the per-chain mean over proposals of
        ``||grad log pi||`` at the state each starts from, ``acceptance_rate`` the per-chain
        fraction of accepted proposals.

    Raises:
        ValueError: bad arguments (``n_steps``, ``step_size``, ``n_leapfrog``, ``mass``) or a
            log_prob that does not return one value per chain.
        SamplerDivergenceError: the log-density or its gradient is not finite at a start state
            (later non-finite proposals are rejected instead).
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
    _check_n_leapfrog(n_leapfrog)
    eps = per_chain_step_size(step_size, z0)
    sqrt_mass, inv_mass = _mass_factors(mass, z0)
    batch, device, dtype = z0.shape[0], z0.device, z0.dtype
    # float step size and scalar mass enter the leapfrog updates as Python scalars
    eps_step: float | Tensor = eps if isinstance(step_size, Tensor) else float(step_size)
    inv_m: float | Tensor = inv_mass if isinstance(mass, Tensor) else 1.0 / float(mass)
    evaluate = GradientEvaluator(log_prob)

    with torch.autocast(device_type=device.type, enabled=False):
        z = z0.detach()
        lp, grad = evaluate(z)
        check_finite(
            torch.stack([lp, norm_event(grad)]),
            "HMC",
            "HMC rejects proposals that diverge, but a chain cannot start where the "
            "log-density or its gradient is not finite: check z0 and the energy/likelihood for "
            "overflow (e.g. a likelihood sigma that is too small).",
            where=lambda row: ("the initial log-density", "the initial gradient")[row],
            step_size=eps,
        )
        lp_start = lp
        grad_norm_sum = torch.zeros(batch, device=device, dtype=dtype)
        accepted = torch.zeros(batch, device=device, dtype=dtype)
        trajectory = [z] if return_trajectory else None
        momenta = scaled_noise(n_steps, z, sqrt_mass, generator)  # p ~ N(0, M)
        log_u = torch.rand((n_steps, batch), generator=generator, device=device, dtype=dtype)
        log_u = log_u.log_().unbind(0)

        for k in range(n_steps):
            grad_norm_sum += norm_event(grad)
            p0 = momenta(k)
            z_prop, p_prop, lp_prop, grad_prop = _leapfrog(
                evaluate, z, p0, grad, eps_step, n_leapfrog, inv_m
            )
            # H(z, p) = -log pi(z) + p^T M^{-1} p / 2 at the start and at the proposal
            log_alpha = lp_prop - lp + 0.5 * _kinetic_difference(p0, p_prop, inv_m)
            (z, lp, grad), accept = metropolis_hastings(
                log_u[k], log_alpha, (z, lp, grad), (z_prop, lp_prop, grad_prop)
            )
            accepted += accept
            if trajectory is not None:
                trajectory.append(z)

    steps = max(n_steps, 1)
    return SamplerResult(
        sample=z.detach(),
        log_prob=lp,
        log_prob_start=lp_start,
        grad_norm=grad_norm_sum / steps,
        acceptance_rate=accepted / steps,
        trajectory=None if trajectory is None else torch.stack(trajectory),
    )
