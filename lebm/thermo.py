"""Thermodynamic integration (TI) with power posteriors.

Power posterior ``p_t(z | x) ∝ p(x | z)^t p(z)`` for ``t`` in [0, 1] (t = 0: prior, t = 1:
posterior), and the identity (Friel and Pettitt 2008)::

    log p(x) = ∫_0^1 E_{p_t(z|x)}[log p(x | z)] dt

estimated on a temperature ladder ``0 = t_0 < ... < t_{N-1} = 1`` by the trapezoid rule.
All temperatures, data points and chains are sampled in one batched tensor through the
shared samplers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lebm.samplers import GaussianReference, Sampler
from lebm.samplers.base import LogProb, SamplerDivergenceError

ChainInit = Literal["independent", "annealed"]


class TemperatureLadder:
    """Temperatures ``t_i = (i / (N - 1))^power`` (both ends included), or an explicit list.

    ``power = 1`` is uniform; ``power > 1`` packs temperatures near 0 (where
    ``E_t[log p(x|z)]`` changes fastest); ``power < 1`` packs them near 1.

    Args:
        num_temperatures: N >= 2 (ignored when ``temperatures`` is given).
        power: p > 0.
        temperatures: explicit ladder: strictly increasing, starting at 0 and ending at 1.

    Attributes:
        t: temperatures, shape (N,), float64.
        weights: trapezoid weights ``w_i = (Δt_i + Δt_{i+1}) / 2``, shape (N,), summing to 1;
            ``integrate(E) = sum_i w_i E_i``.
    """

    def __init__(
        self,
        num_temperatures: int = 10,
        power: float = 1.0,
        temperatures: Sequence[float] | Tensor | None = None,
    ) -> None:
        if temperatures is not None:
            t = torch.as_tensor(temperatures, dtype=torch.float64).detach().cpu()
            if t.ndim != 1 or len(t) < 2:
                raise ValueError(f"temperatures must list at least 2 values, got {temperatures}")
            if t[0] != 0 or t[-1] != 1:
                raise ValueError(f"temperatures must start at 0 and end at 1, got {t.tolist()}")
            if not bool((t.diff() > 0).all()):
                raise ValueError(f"temperatures must be strictly increasing, got {t.tolist()}")
        else:
            if num_temperatures < 2:
                raise ValueError(f"num_temperatures must be >= 2, got {num_temperatures}")
            if not power > 0:
                raise ValueError(f"temperature power must be > 0, got {power}")
            t = (
                torch.arange(num_temperatures, dtype=torch.float64) / (num_temperatures - 1)
            ) ** power
        self.t = t
        dt = t.diff()
        self.weights = torch.cat([dt[:1], dt[1:] + dt[:-1], dt[-1:]]) / 2

    def __len__(self) -> int:
        return len(self.t)

    def __repr__(self) -> str:
        return f"TemperatureLadder({[round(v, 4) for v in self.t.tolist()]})"

    def integrate(self, values: Tensor) -> Tensor:
        """Trapezoid rule over the ladder along dim 0: (N, ...) -> (...)."""
        w = self.weights.to(values).view(-1, *([1] * (values.ndim - 1)))
        return (w * values).sum(0)


def adapt_temperatures(
    t: Tensor, expected: Tensor, rate: float = 1.0, floor: float = 0.01
) -> Tensor:
    """Re-place the interior temperatures so adjacent power posteriors are equally far apart.

    The distance is the symmetrised KL divergence between adjacent power posteriors, which
    for power posteriors is exactly::

        J_i = KL(p_i || p_{i+1}) + KL(p_{i+1} || p_i) = (t_{i+1} - t_i) (E_{i+1} - E_i),

    ``E_i = E_{p_{t_i}}[log p(x | z)]`` (the normalisers cancel; to first order
    ``J_i ≈ Δt_i^2 Var_t[log p(x | z)]``, the spread of the log-likelihood that REFERENCE §12's
    successor uses). ``J_i`` is estimated from the chains' means, averaged over the batch;
    ``sqrt(J_i)`` is the segment's thermodynamic length. The new ladder inverts the
    piecewise-linear cumulative length at equal steps, so every segment gets the same
    length (equal ``J``), then moves ``rate`` of the way from ``t`` to it. Each segment's length
    is floored at ``floor`` x the mean, so no temperature collapses onto a neighbour and a
    noisy negative ``J`` (finite-sample) cannot reorder the ladder.

    Args:
        t: current ladder, shape (N,), strictly increasing from 0 to 1.
        expected: ``E_i`` per temperature, shape (N,) or (N, B) (per data point).
        rate: fraction of the move to take, in (0, 1] (1: jump to the equal-length ladder).
        floor: minimum segment length relative to the mean, > 0.

    Returns:
        the new ladder, shape (N,), float64, strictly increasing, ends exactly 0 and 1.
    """
    t = t.detach().to(dtype=torch.float64)
    e = expected.detach().to(device=t.device, dtype=torch.float64)
    if e.ndim == 1:
        e = e.unsqueeze(1)
    if e.shape[0] != len(t):
        raise ValueError(f"expected has {e.shape[0]} temperatures, the ladder {len(t)}")
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    dt = t.diff()
    # batch mean first (J is linear in E), then clamp: clamping per data point would add the
    # chains' noise to every segment and pull the ladder back towards uniform
    j = (dt * e.diff(dim=0).mean(1)).clamp_min(0)  # (N - 1,)
    length = j.sqrt()
    if not bool(torch.isfinite(length).all()):
        return t.clone()
    mean = length.mean()
    length = length + floor * (mean if mean > 0 else length.new_ones(()))
    cumulative = torch.cat([length.new_zeros(1), length.cumsum(0)])
    targets = torch.linspace(0, 1, len(t), dtype=torch.float64, device=t.device)
    targets = targets * cumulative[-1]
    idx = torch.searchsorted(cumulative, targets, right=True).clamp(1, len(t) - 1)
    lo, hi = cumulative[idx - 1], cumulative[idx]
    frac = (targets - lo) / (hi - lo)
    new = t[idx - 1] + frac * (t[idx] - t[idx - 1])
    new[0], new[-1] = 0.0, 1.0
    out = (1 - rate) * t + rate * new
    out[0], out[-1] = 0.0, 1.0
    return out


def replica_exchange(
    z: Tensor,
    log_likelihood: Tensor,
    t: Tensor,
    odd: bool,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """One round of swaps between adjacent temperatures, for every chain at once.

    Pairs ``(i, i + 1)`` with ``i`` even (``odd=False``) or odd (``odd=True``) are disjoint, so
    all their swaps are decided together. The states of one pair, column m (the same data point
    and chain index at both temperatures), swap with probability::

        min(1, exp((t_i - t_{i+1}) (log p(x|z_{i+1}) - log p(x|z_i))))

    which keeps the product of the power posteriors invariant (the prior terms cancel).

    Args:
        z: states, shape (N, M, *latent): M chains per temperature, column m of every
            temperature targets the same data point.
        log_likelihood: ``log p(x | z)`` at those states, shape (N, M).
        t: temperatures, shape (N,).
        odd: which pairs to try.
        generator: optional torch.Generator.

    Returns:
        (swapped z, swapped log-likelihoods, accepted swaps per pair (N - 1, M) as a boolean
        tensor whose rows of the pairs not tried are all False).
    """
    n, m = log_likelihood.shape
    t = t.to(log_likelihood)
    lower = torch.arange(int(odd), n - 1, 2, device=z.device)  # i of every pair tried
    u = torch.rand(len(lower), m, generator=generator, device=z.device, dtype=log_likelihood.dtype)
    log_alpha = (t[lower] - t[lower + 1]).unsqueeze(1) * (
        log_likelihood[lower + 1] - log_likelihood[lower]
    )
    accept = (u.log() < log_alpha) & torch.isfinite(log_alpha)
    partner = torch.arange(n, device=z.device).unsqueeze(1).expand(n, m).clone()
    partner[lower] = torch.where(accept, lower.unsqueeze(1) + 1, partner[lower])
    partner[lower + 1] = torch.where(accept, lower.unsqueeze(1), partner[lower + 1])
    z_new = z.gather(0, partner.view(n, m, *([1] * (z.ndim - 2))).expand_as(z))
    accepted = torch.zeros(n - 1, m, dtype=torch.bool, device=z.device)
    accepted[lower] = accept
    return z_new, log_likelihood.gather(0, partner), accepted


class _ChunkedLogProb(torch.autograd.Function):
    """``log_prob`` and its gradient in z computed ``chunk_size`` rows at a time.

    The forward pass evaluates each chunk with its own graph, takes the chunk's gradient and
    frees the graph, so the peak memory is one chunk's activations; the backward pass returns
    the stored per-row gradients. Only first derivatives in z are supported (what the samplers
    take).
    """

    @staticmethod
    def forward(ctx, z, fn, chunk_size):
        values, grads = [], []
        for start in range(0, len(z), chunk_size):
            rows = slice(start, start + chunk_size)
            with torch.enable_grad():
                zc = z[rows].detach().requires_grad_(True)
                lp = fn(zc, rows)
                (g,) = torch.autograd.grad(lp.sum(), zc)
            values.append(lp.detach())
            grads.append(g)
        ctx.save_for_backward(torch.cat(grads))
        return torch.cat(values)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output.view(-1, *([1] * (grad.ndim - 1))) * grad, None, None


def chunked(fn: Callable[[Tensor, slice], Tensor], chunk_size: int | None) -> LogProb:
    """A log-density over all rows from ``fn(z_rows, rows)`` evaluated ``chunk_size`` rows at
    a time (None: all at once). Row results do not depend on the chunking (up to float
    rounding of batched kernels); see :class:`_ChunkedLogProb`."""

    def log_prob(z: Tensor) -> Tensor:
        if chunk_size is None or len(z) <= chunk_size:
            return fn(z, slice(None))
        if z.requires_grad and torch.is_grad_enabled():
            return _ChunkedLogProb.apply(z, fn, chunk_size)
        with torch.no_grad():
            return torch.cat(
                [
                    fn(z[s : s + chunk_size], slice(s, s + chunk_size))
                    for s in range(0, len(z), chunk_size)
                ]
            )

    return log_prob


@dataclass
class PowerPosteriorSamples:
    """Chains of every temperature for a batch of data.

    Attributes:
        z: final states, shape (N_t, K, B, *latent), detached.
        log_likelihood: ``log p(x_b | z)`` at those states, shape (N_t, K, B), detached.
        acceptance_rate: mean MH acceptance (MALA) or None.
        grad_norm: mean gradient norm over chains and steps.
        swap_rate: replica exchange: accepted / attempted swaps of each adjacent pair
            ``(t_i, t_{i+1})``, shape (N_t - 1,); None without replica exchange.
    """

    z: Tensor
    log_likelihood: Tensor
    acceptance_rate: Tensor | None
    grad_norm: Tensor
    swap_rate: Tensor | None = None


def sample_power_posteriors(
    log_prior: Callable[[Tensor], Tensor],
    log_likelihood: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    latent_shape: Sequence[int],
    ladder: TemperatureLadder,
    sampler: Sampler,
    *,
    step_sizes: Tensor | None = None,
    n_steps: int | None = None,
    init: ChainInit = "independent",
    num_chains: int = 1,
    init_scale: float = 1.0,
    swap_every: int | None = None,
    chunk_size: int | None = None,
    reference_sigma: float | None = None,
    generator: torch.Generator | None = None,
) -> PowerPosteriorSamples:
    """Sample ``p_t(z | x_b)`` for every temperature t and data point x_b.

    ``independent``: all N_t x K x B chains start from N(0, init_scale^2 I) and run ``n_steps``
    in **one** sampler call (one tensor of N_t K B chains, each with its temperature's step
    size; no loop over temperatures). ``annealed``: temperature i starts from the final states
    of temperature i - 1 (t_0 from N(0, init_scale^2 I)) and runs ``n_steps`` steps; the ladder
    is walked in order, so this is N_t sampler calls of K B chains each.

    Replica exchange (``swap_every``, independent chains only): the sampler runs in segments of
    ``swap_every`` steps (every temperature in one call per segment); after each segment,
    adjacent temperatures swap states per (chain, data point) with the Metropolis-Hastings
    probability of :func:`replica_exchange`, alternating even and odd pairs. Each segment costs
    one extra forward pass of ``log p(x | z)`` (for the swap decision).

    ``chunk_size`` caps the chains that go through the networks at once: the log-density and
    its gradient are computed ``chunk_size`` rows at a time inside the sampler's one call
    (:func:`chunked`), so the sampler still draws the noise of all chains together and the
    chains are the same as without chunking, up to float rounding.

    Args:
        log_prior: ``log p(z)`` up to a constant: (M, *latent) -> (M,).
        log_likelihood: ``log p(x | z)``: (M, *data), (M, *latent) -> (M,).
        x: data, shape (B, *data).
        latent_shape: shape of one latent.
        ladder: temperatures.
        sampler: the sampler object (:mod:`lebm.samplers`: Langevin, MALA, HMC, ...); it must
            accept a per-chain step-size tensor.
        step_sizes: one step size per temperature, shape (N_t,); None: the sampler's own.
        n_steps: steps per chain (per temperature when annealed); None: the sampler's own.
        init: ``"independent"`` or ``"annealed"``.
        num_chains: K chains per (temperature, data point).
        init_scale: standard deviation of the initial Gaussian.
        swap_every: sampler steps between replica-exchange rounds (None: no exchange).
        chunk_size: chains per network evaluation (None: all at once).
        reference_sigma: when given, the prior is ``log_prior(z) - ||z||^2 / (2 sigma^2)``:
            ``log_prior`` is then only the rest (a latent EBM's ``f``), and the samplers add
            the Gaussian term's gradient analytically
            (:class:`~lebm.samplers.GaussianReference`; the same chains up to float rounding,
            with fewer operations per step).
        generator: optional torch.Generator.

    Returns:
        PowerPosteriorSamples.

    Raises:
        SamplerDivergenceError: as the sampler's, with the temperatures whose chains diverged.
    """
    if init not in ("independent", "annealed"):
        raise ValueError(f"init must be 'independent' or 'annealed', got {init!r}")
    if num_chains < 1:
        raise ValueError(f"num_chains must be >= 1, got {num_chains}")
    if swap_every is not None and (swap_every < 1 or init != "independent"):
        raise ValueError(
            f"swap_every must be an int >= 1 with init='independent' (replica exchange needs "
            f"every temperature in one population), got swap_every={swap_every}, init={init!r}"
        )
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    n_t, batch = len(ladder), len(x)
    latent_shape = tuple(latent_shape)
    t = ladder.t.to(device=x.device, dtype=x.dtype)
    step = sampler.step_size if step_sizes is None else step_sizes
    s = torch.as_tensor(step, device=x.device, dtype=x.dtype).expand(n_t)
    total_steps = sampler.n_steps if n_steps is None else n_steps
    per_temperature = num_chains * batch
    x_kb = x.repeat(num_chains, *([1] * (x.ndim - 1)))  # (K B, *data), chain-major
    x_all = x_kb.repeat(n_t, *([1] * (x.ndim - 1)))
    # rows whose log-density was ever non-finite, to name the temperatures on divergence
    bad = torch.zeros(n_t * per_temperature, dtype=torch.bool, device=x.device)

    def target(x_rep: Tensor, t_rep: Tensor, offset: int):
        def log_prob(z: Tensor, rows: slice) -> Tensor:
            lp = log_prior(z) + t_rep[rows] * log_likelihood(x_rep[rows], z)
            start = offset + (rows.start or 0)
            bad[start : start + len(lp)] |= ~torch.isfinite(lp.detach())
            return lp

        if reference_sigma is None:
            return chunked(log_prob, chunk_size)
        return GaussianReference(chunked(log_prob, chunk_size), reference_sigma)

    def run(log_prob, z0: Tensor, step_size: Tensor, steps: int):
        try:
            return sampler(log_prob, z0, generator=generator, step_size=step_size, n_steps=steps)
        except SamplerDivergenceError as err:
            raise SamplerDivergenceError(
                _diverged_temperatures(bad, t, per_temperature, err)
            ) from err

    def start(n_chains: int) -> Tensor:
        shape = (n_chains, *latent_shape)
        return init_scale * torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)

    def loglik_of(z: Tensor) -> Tensor:
        with torch.no_grad():
            return chunked(lambda zc, rows: log_likelihood(x_all[rows], zc), chunk_size)(z)

    swap_rate = None
    if init == "independent":
        t_all = t.repeat_interleave(per_temperature)
        s_all = s.repeat_interleave(per_temperature)
        log_prob = target(x_all, t_all, 0)
        z = start(n_t * per_temperature)
        segment = total_steps if swap_every is None else swap_every
        done, rounds, acc_sum, norm_sum = 0, 0, 0.0, 0.0
        attempted = torch.zeros(n_t - 1, device=x.device, dtype=x.dtype)
        accepted = torch.zeros(n_t - 1, device=x.device, dtype=x.dtype)
        loglik = None
        while done < total_steps or done == total_steps == 0:
            steps = min(segment, total_steps - done)
            result = run(log_prob, z, s_all, steps)
            z, done = result.sample, done + steps
            weight = max(steps, 1)
            norm_sum = norm_sum + weight * result.grad_norm.mean()
            if result.acceptance_rate is not None:
                acc_sum = acc_sum + weight * result.acceptance_rate.mean()
            if swap_every is not None:
                z_t = z.view(n_t, per_temperature, *latent_shape)
                ll = loglik_of(z).view(n_t, per_temperature)
                z_t, ll, swapped = replica_exchange(z_t, ll, t, rounds % 2 == 1, generator)
                tried = torch.arange(n_t - 1, device=x.device) % 2 == rounds % 2
                attempted += tried.to(x.dtype) * per_temperature
                accepted += swapped.sum(1).to(x.dtype)
                z, loglik, rounds = z_t.reshape(z.shape), ll.reshape(-1), rounds + 1
            if total_steps == 0:
                break
        steps_run = max(total_steps, 1)
        grad_norm = norm_sum / steps_run
        acceptance = None if result.acceptance_rate is None else acc_sum / steps_run
        if swap_every is not None:
            swap_rate = accepted / attempted.clamp_min(1)
    else:
        states, acc, norms = [], [], []
        z_i = start(per_temperature)
        for i in range(n_t):
            lp_i = target(x_kb, t[i].expand(per_temperature), i * per_temperature)
            r = run(lp_i, z_i, s[i].expand(per_temperature), total_steps)
            z_i = r.sample
            states.append(z_i)
            norms.append(r.grad_norm.mean())
            if r.acceptance_rate is not None:
                acc.append(r.acceptance_rate.mean())
        z = torch.cat(states)
        acceptance = torch.stack(acc).mean() if acc else None
        grad_norm = torch.stack(norms).mean()
        loglik = None

    if loglik is None:
        loglik = loglik_of(z)
    return PowerPosteriorSamples(
        z=z.view(n_t, num_chains, batch, *latent_shape),
        log_likelihood=loglik.view(n_t, num_chains, batch),
        acceptance_rate=acceptance,
        grad_norm=grad_norm,
        swap_rate=swap_rate,
    )


def _diverged_temperatures(
    bad: Tensor, t: Tensor, per_temperature: int, err: SamplerDivergenceError
) -> str:
    """The sampler's divergence message, prefixed with the temperatures whose chains went
    non-finite and how many of each."""
    counts = bad.view(len(t), per_temperature).sum(1)
    named = [
        f"t_{i} = {t[i].item():.4g} ({int(c)} of {per_temperature})"
        for i, c in enumerate(counts.tolist())
        if c > 0
    ]
    where = ", ".join(named) if named else "none identified (the gradient or state overflowed)"
    return (
        f"Power-posterior chains diverged at temperature(s) {where}; higher temperatures "
        f"(sharper likelihood) usually need a smaller posterior step size. {err}"
    )


def expected_log_likelihoods(samples: PowerPosteriorSamples) -> Tensor:
    """``E_{p_t}[log p(x_b | z)]`` per temperature and data point: shape (N_t, B)."""
    return samples.log_likelihood.mean(1)


def thermodynamic_log_evidence(
    log_prior: Callable[[Tensor], Tensor],
    log_likelihood: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    latent_shape: Sequence[int],
    ladder: TemperatureLadder,
    sampler: Sampler,
    **kwargs,
) -> Tensor:
    """TI estimate of ``log p(x_b)`` for each data point, shape (B,).

    ``log_prior`` may be unnormalised (an EBM prior): the power posteriors, and so the
    estimate, do not depend on its normaliser. Keyword arguments go to
    :func:`sample_power_posteriors` (``init``, ``num_chains``, ``step_sizes``, ``generator``, ...).
    Works for any latent model given its (log prior, log likelihood) pair.
    """
    samples = sample_power_posteriors(
        log_prior, log_likelihood, x, latent_shape, ladder, sampler, **kwargs
    )
    return ladder.integrate(expected_log_likelihoods(samples))
