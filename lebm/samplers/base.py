"""Shared pieces of the MCMC samplers: the result object and the divergence error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

LogProb = Callable[[Tensor], Tensor]
"""A log-density (up to a constant): maps chains of shape (B, *event) to values of shape (B,)."""


class SamplerDivergenceError(FloatingPointError):
    """Raised when a chain's state, log-density or gradient stops being finite."""


@dataclass
class SamplerResult:
    """Final state of a batch of chains plus diagnostics.

    Attributes:
        sample: final states, shape (B, *event), detached.
        log_prob: log-density at the final states, shape (B,).
        log_prob_start: log-density at the initial states, shape (B,).
        grad_norm: per-chain mean over steps of ``||grad log pi||``, shape (B,).
        acceptance_rate: per-chain fraction of accepted Metropolis-Hastings proposals, shape (B,);
            None for the unadjusted sampler.
        trajectory: states at every step, shape (n_steps + 1, B, *event), or None unless requested.
    """

    sample: Tensor
    log_prob: Tensor
    log_prob_start: Tensor
    grad_norm: Tensor
    acceptance_rate: Tensor | None = None
    trajectory: Tensor | None = None

    def diagnostics(self) -> dict[str, Tensor]:
        """Batch-mean diagnostics as 0-d tensors, keyed for logging."""
        out = {
            "log_prob_start": self.log_prob_start.mean(),
            "log_prob_end": self.log_prob.mean(),
            "grad_norm": self.grad_norm.mean(),
        }
        if self.acceptance_rate is not None:
            out["acceptance_rate"] = self.acceptance_rate.mean()
        return out


def per_chain_step_size(step_size: float | Tensor, z: Tensor) -> Tensor:
    """Broadcastable step size of shape (B, 1, ..., 1) from a float or a (B,) tensor.

    A float is checked on the host; a tensor costs one device sync for its positivity check.
    """
    if not isinstance(step_size, Tensor):
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size:g}")
        s = torch.full((z.shape[0],), float(step_size), dtype=z.dtype, device=z.device)
    else:
        s = step_size.to(dtype=z.dtype, device=z.device)
        if s.ndim == 0:
            s = s.expand(z.shape[0])
        if s.shape != (z.shape[0],):
            raise ValueError(
                f"step_size must be a float or a tensor of shape ({z.shape[0]},) (one per chain), "
                f"got shape {tuple(s.shape)}"
            )
        if not bool((s > 0).all()):
            raise ValueError(f"step_size must be positive, got min {s.min().item():g}")
    return s.view(-1, *([1] * (z.ndim - 1)))


def log_prob_and_grad(log_prob: LogProb, z: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate ``log_prob`` at ``z`` and its gradient in ``z`` with one backward pass.

    Gradients are taken with respect to ``z`` only, so nothing accumulates in the ``.grad`` of
    network parameters, and no weight gradients are computed.

    Returns:
        (log-density of shape (B,), detached; gradient of shape z.shape).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "MCMC sampling needs autograd, but inference mode is on. Run Lightning with "
            "Trainer(inference_mode=False) (the lebm CLI's default), or call outside "
            "torch.inference_mode()."
        )
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        lp = log_prob(z)
        if lp.shape != z.shape[:1]:
            raise ValueError(
                f"log_prob must return one value per chain, shape ({z.shape[0]},); "
                f"got {tuple(lp.shape)}"
            )
        (grad,) = torch.autograd.grad(lp.sum(), z)
    return lp.detach(), grad


def check_finite(lp_trace: Tensor, step_size: Tensor, name: str) -> None:
    """Raise a SamplerDivergenceError if any chain went non-finite (one host sync).

    Args:
        lp_trace: log-density of every state, shape (n_steps + 1, B); a non-finite state or
            gradient at step k makes the log-density at step k + 1 non-finite.
        step_size: the per-chain step sizes used.
        name: sampler name for the message.
    """
    bad = ~torch.isfinite(lp_trace)
    if not bool(bad.any()):
        return
    chains = bad.any(0)
    idx = int(chains.nonzero()[0])
    step = int(bad[:, idx].int().argmax())
    raise SamplerDivergenceError(
        f"{name}: {int(chains.sum())} of {len(chains)} chains became non-finite (first at step "
        f"{step}, chain {idx}, step_size {step_size.flatten()[idx].item():g}). Lower the step size, "
        "use MALA (mh=True) which rejects exploding proposals, or check the energy/likelihood "
        "for overflow (e.g. a likelihood sigma that is too small)."
    )
