"""Shared pieces of the MCMC samplers: callable types, the result object, step sizes, noise,
gradients in the chains, the Metropolis-Hastings choice and the divergence check."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_PREDRAW_LIMIT = 1 << 22
"""Largest number of noise values (steps x chain elements) drawn up front in one call."""

LogProb = Callable[[Tensor], Tensor]
"""A log-density (up to a constant): maps chains of shape (B, *event) to values of shape (B,)."""

NoiseConditionalScore = Callable[[Tensor, Tensor], Tensor]
"""``score(x, sigma)``: x of shape (B, *event), sigma of shape (B,) -> score shaped like x."""


class SamplerDivergenceError(FloatingPointError):
    """Raised when a chain's state, log-density or gradient stops being finite."""


@dataclass
class SamplerResult:
    """Final state of a batch of chains plus diagnostics.

    Attributes:
        sample: final states, shape (B, *event), detached.
        log_prob: log-density at the final states, shape (B,). A sampler that does not need
            it itself (ULA) may pass a zero-argument callable instead: it is evaluated, under
            ``torch.no_grad()``, on first access (with the networks as they are then) and
            cached, so a caller that never reads it saves one forward pass of every chain.
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

    def diagnostics(self, *, log_prob_end: bool = True) -> dict[str, Tensor]:
        """Batch-mean diagnostics as 0-d tensors, keyed for logging.

        ``log_prob_end=False`` leaves out ``log_prob_end`` (and so does not evaluate a deferred
        final log-density; see ``log_prob``)."""
        out = {"log_prob_start": self.log_prob_start.mean()}
        if log_prob_end:
            out["log_prob_end"] = self.log_prob.mean()
        out["grad_norm"] = self.grad_norm.mean()
        if self.acceptance_rate is not None:
            out["acceptance_rate"] = self.acceptance_rate.mean()
        return out


def _get_log_prob(self: SamplerResult) -> Tensor:
    value = self.__dict__["_log_prob"]
    if callable(value):  # deferred: evaluate once (a Tensor is not callable)
        with torch.no_grad():
            value = value()
        self.__dict__["_log_prob"] = value
    return value


def _set_log_prob(self: SamplerResult, value: Tensor) -> None:
    self.__dict__["_log_prob"] = value


# the dataclass field ``log_prob`` becomes a property (its __init__ assigns through the setter)
SamplerResult.log_prob = property(_get_log_prob, _set_log_prob)  # type: ignore[assignment]


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


class GaussianReference:
    """A log-density ``rest(z) - ||z||^2 / (2 sigma^2)``: a Gaussian reference term whose
    gradient ``-z / sigma^2`` the samplers add analytically instead of through autograd.

    It is a :data:`LogProb` (calling it evaluates the whole log-density), so any sampler or
    caller accepts it; :func:`log_prob_and_grad` and the samplers' inner loops recognise it and
    run autograd through ``rest`` only. For LatentEBM's prior ``f(z) + log N(z; 0, sigma_0^2)``
    this removes the reference term's forward and backward operations from every step.

    Args:
        rest: the remaining log-density (B, *event) -> (B,), e.g. the EBM ``f``.
        sigma: standard deviation of the reference Gaussian (> 0).
    """

    __slots__ = ("rest", "sigma", "inv_var")

    def __init__(self, rest: LogProb, sigma: float) -> None:
        if not float(sigma) > 0:
            raise ValueError(f"GaussianReference: sigma must be > 0, got {sigma}")
        self.rest = rest
        self.sigma = float(sigma)
        self.inv_var = 1.0 / self.sigma**2

    def reference(self, z: Tensor) -> Tensor:
        """``-||z||^2 / (2 sigma^2)`` per chain, shape (B,)."""
        flat = z.flatten(1)
        return torch.linalg.vecdot(flat, flat).mul_(-0.5 * self.inv_var)

    def __call__(self, z: Tensor) -> Tensor:
        return self.rest(z) + self.reference(z)

    def __repr__(self) -> str:
        return f"GaussianReference({self.rest!r}, sigma={self.sigma:g})"


class GradientEvaluator:
    """``(log pi(z), grad log pi(z))`` for the chains of one sampler call, one backward each.

    The checks (inference mode, one value per chain) run on the first call only, and the
    backward seed is allocated once, so later calls add nothing to the forward and backward
    passes but the ``requires_grad`` switch and a detach; a :class:`GaussianReference` gets its
    gradient term analytically. ``value=False`` returns, for a GaussianReference, only the
    ``rest`` part's value (what a divergence check needs: a non-finite state makes it
    non-finite), saving the reference term's evaluation.
    """

    __slots__ = ("log_prob", "rest", "gaussian", "seed", "checked")

    def __init__(self, log_prob: LogProb) -> None:
        self.log_prob = log_prob
        self.gaussian = log_prob if isinstance(log_prob, GaussianReference) else None
        self.rest = log_prob.rest if self.gaussian is not None else log_prob
        self.seed: Tensor | None = None
        self.checked = False

    def __call__(self, z: Tensor, value: bool = True) -> tuple[Tensor, Tensor]:
        first = not self.checked
        if first and torch.is_inference_mode_enabled():
            raise RuntimeError(
                "MCMC sampling needs autograd, but inference mode is on. Run Lightning with "
                "Trainer(inference_mode=False) (the lebm CLI's default), or call outside "
                "torch.inference_mode()."
            )
        state = z if not z.requires_grad else z.detach()
        with torch.enable_grad():
            z = state.detach().requires_grad_(True)
            lp = self.rest(z)
            if first:
                if lp.shape != z.shape[:1]:
                    raise ValueError(
                        f"log_prob must return one value per chain, shape ({z.shape[0]},); "
                        f"got {tuple(lp.shape)}"
                    )
                self.checked = True
            seed = self.seed
            if seed is None or seed.shape != lp.shape or seed.dtype != lp.dtype:
                seed = self.seed = torch.ones_like(lp, memory_format=torch.contiguous_format)
            (grad,) = torch.autograd.grad(lp, z, seed)
        lp = lp.detach()
        if self.gaussian is not None:
            grad = torch.add(grad, state, alpha=-self.gaussian.inv_var)  # grad may be a view
            if value:
                lp = lp + self.gaussian.reference(state)
        return lp, grad


def scaled_noise(
    n_steps: int,
    like: Tensor,
    scale: float | Tensor,
    generator: torch.Generator | None,
    step_scales: Sequence[float] | None = None,
) -> Callable[[int], Tensor]:
    """``scale * N(0, I)`` noise shaped like ``like``, for steps 0 .. n_steps - 1.

    Like :func:`gaussian_noise` (the same draws from the same generator), but scaled once up
    front, and the steps are views from one ``unbind``: no per-step indexing or scaling.
    ``scale`` is a float or a tensor broadcastable to ``like``; ``step_scales`` (one float per
    step) multiplies step k's noise by ``step_scales[k]`` on top. Above the pre-draw limit each
    ``noise(k)`` draws and scales afresh (call it once per step, in order, for reproducible
    runs).
    """
    if n_steps == 0:
        return lambda _: like.new_empty(like.shape)
    if n_steps * like.numel() <= _PREDRAW_LIMIT:
        noise = torch.randn(
            (n_steps, *like.shape), generator=generator, device=like.device, dtype=like.dtype
        )
        if step_scales is not None:
            per_step = torch.tensor(step_scales, device=like.device, dtype=like.dtype)
            noise.mul_(per_step.view(-1, *([1] * like.ndim)))
        return noise.mul_(scale).unbind(0).__getitem__

    def draw(k: int) -> Tensor:
        eps = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
        return eps.mul_(scale if step_scales is None else scale * step_scales[k])

    return draw


def log_prob_and_grad(log_prob: LogProb, z: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate ``log_prob`` at ``z`` and its gradient in ``z`` with one backward pass.

    Gradients are taken with respect to ``z`` only, so nothing accumulates in the ``.grad`` of
    network parameters, and no weight gradients are computed. A :class:`GaussianReference`
    gets its Gaussian term's gradient analytically.

    Returns:
        (log-density of shape (B,), detached; gradient of shape z.shape).
    """
    return GradientEvaluator(log_prob)(z)


def sum_event(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: (B, *event) -> (B,)."""
    return x.flatten(1).sum(1)


def norm_event(x: Tensor) -> Tensor:
    """Euclidean norm over every dimension but the first: (B, *event) -> (B,)."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1)


def gaussian_noise(
    n_steps: int, like: Tensor, generator: torch.Generator | None
) -> Callable[[int], Tensor]:
    """Standard normal noise shaped, typed and placed like ``like``, for steps 0 .. n_steps - 1.

    Returns ``noise(k)``. When all steps together are small (at most 2^22 values) they are drawn
    in one call up front, saving a kernel launch per step; otherwise each ``noise(k)`` draws
    afresh (call it once per step, in order, for reproducible runs).
    """
    if n_steps * like.numel() <= _PREDRAW_LIMIT:
        noise = torch.randn(
            (n_steps, *like.shape), generator=generator, device=like.device, dtype=like.dtype
        )
        return noise.__getitem__
    return lambda _: torch.randn(
        like.shape, generator=generator, device=like.device, dtype=like.dtype
    )


def metropolis_hastings(
    log_u: Tensor,
    log_alpha: Tensor,
    current: tuple[Tensor, Tensor, Tensor],
    proposal: tuple[Tensor, Tensor, Tensor],
) -> tuple[tuple[Tensor, Tensor, Tensor], Tensor]:
    """Per-chain Metropolis-Hastings choice between two ``(z, log pi(z), grad log pi(z))``.

    Chain i takes its proposal when ``log_u[i] < log_alpha[i]`` and the proposal is finite
    (its position, gradient and ``log_alpha``; a non-finite proposal is rejected, not raised).

    Args:
        log_u: logs of uniform draws, shape (B,).
        log_alpha: log acceptance ratios, shape (B,).
        current: states (B, *event), log-densities (B,), gradients (B, *event).
        proposal: the same for the proposals.

    Returns:
        (the chosen states as ``current``, boolean acceptance of shape (B,)).
    """
    z, lp, grad = current
    z_prop, lp_prop, grad_prop = proposal
    finite = (
        torch.isfinite(log_alpha)
        & torch.isfinite(sum_event(z_prop))
        & torch.isfinite(sum_event(grad_prop))
    )
    accept = (log_u < log_alpha) & finite
    keep = accept.view(-1, *([1] * (z.ndim - 1)))
    chosen = (
        torch.where(keep, z_prop, z),
        torch.where(accept, lp_prop, lp),
        torch.where(keep, grad_prop, grad),
    )
    return chosen, accept


def check_finite(
    trace: Tensor,
    name: str,
    hint: str,
    *,
    where: Callable[[int], str] = lambda row: f"step {row}",
    step_size: Tensor | None = None,
) -> None:
    """Raise a SamplerDivergenceError if any chain went non-finite (one host sync).

    The message names the sampler, how many chains diverged, and for the first bad chain the
    first bad row (through ``where``), the chain index and, when given, its step size; then
    ``hint`` and the config key of the step size.

    Args:
        trace: one row per step and one column per chain, shape (R, B), for example the
            log-density of every state (a non-finite state or gradient at step k makes the
            log-density at step k + 1 non-finite) or per-chain norms.
        name: sampler name for the message.
        hint: what to do about it, appended to the message.
        where: describes row ``r`` of ``trace`` for the message (default ``"step r"``).
        step_size: per-chain step sizes, any shape with B elements, or None.
    """
    bad = ~torch.isfinite(trace)
    if not bool(bad.any()):
        return
    chains = bad.any(0)
    idx = int(chains.nonzero()[0])
    row = int(bad[:, idx].int().argmax())
    step = "" if step_size is None else f", step_size {step_size.flatten()[idx].item():g}"
    raise SamplerDivergenceError(
        f"{name}: {int(chains.sum())} of {len(chains)} chains became non-finite (first at "
        f"{where(row)}, chain {idx}{step}). {hint} In a config the step size is the sampler's "
        "`step_size` (model.init_args.<sampler>.init_args.step_size); during `lebm fit` the "
        "divergence callback adds which sampler it was and the last good checkpoint."
    )
