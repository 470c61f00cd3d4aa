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

from lebm.samplers import Sampler

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
        temperatures: Sequence[float] | None = None,
    ) -> None:
        if temperatures is not None:
            t = torch.as_tensor(list(temperatures), dtype=torch.float64)
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


@dataclass
class PowerPosteriorSamples:
    """Chains of every temperature for a batch of data.

    Attributes:
        z: final states, shape (N_t, K, B, *latent), detached.
        log_likelihood: ``log p(x_b | z)`` at those states, shape (N_t, K, B), detached.
        acceptance_rate: mean MH acceptance (MALA) or None.
        grad_norm: mean gradient norm over chains and steps.
    """

    z: Tensor
    log_likelihood: Tensor
    acceptance_rate: Tensor | None
    grad_norm: Tensor


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
    generator: torch.Generator | None = None,
) -> PowerPosteriorSamples:
    """Sample ``p_t(z | x_b)`` for every temperature t and data point x_b.

    ``independent``: all N_t x K x B chains start from N(0, init_scale^2 I) and run ``n_steps``
    in **one** sampler call (one tensor of N_t K B chains, each with its temperature's step
    size; no loop over temperatures). ``annealed``: temperature i starts from the final states
    of temperature i - 1 (t_0 from N(0, init_scale^2 I)) and runs ``n_steps`` steps; the ladder
    is walked in order, so this is N_t sampler calls of K B chains each.

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
        generator: optional torch.Generator.

    Returns:
        PowerPosteriorSamples.
    """
    if init not in ("independent", "annealed"):
        raise ValueError(f"init must be 'independent' or 'annealed', got {init!r}")
    if num_chains < 1:
        raise ValueError(f"num_chains must be >= 1, got {num_chains}")
    n_t, batch = len(ladder), len(x)
    latent_shape = tuple(latent_shape)
    t = ladder.t.to(device=x.device, dtype=x.dtype)
    step = sampler.step_size if step_sizes is None else step_sizes
    s = torch.as_tensor(step, device=x.device, dtype=x.dtype).expand(n_t)

    def run(log_prob, z0: Tensor, step_size: Tensor):
        return sampler(log_prob, z0, generator=generator, step_size=step_size, n_steps=n_steps)

    def target(x_rep: Tensor, t_rep: Tensor):
        def log_prob(z: Tensor) -> Tensor:
            return log_prior(z) + t_rep * log_likelihood(x_rep, z)

        return log_prob

    def start(n_chains: int) -> Tensor:
        shape = (n_chains, *latent_shape)
        return init_scale * torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)

    per_temperature = num_chains * batch
    x_kb = x.repeat(num_chains, *([1] * (x.ndim - 1)))  # (K B, *data), chain-major
    if init == "independent":
        x_all = x_kb.repeat(n_t, *([1] * (x.ndim - 1)))
        t_all = t.repeat_interleave(per_temperature)
        s_all = s.repeat_interleave(per_temperature)
        result = run(target(x_all, t_all), start(n_t * per_temperature), s_all)
        z = result.sample
        acceptance = None if result.acceptance_rate is None else result.acceptance_rate.mean()
        grad_norm = result.grad_norm.mean()
    else:
        states, acc, norms = [], [], []
        z_i = start(per_temperature)
        for i in range(n_t):
            t_i = t[i].expand(per_temperature)
            r = run(target(x_kb, t_i), z_i, s[i].expand(per_temperature))
            z_i = r.sample
            states.append(z_i)
            norms.append(r.grad_norm.mean())
            if r.acceptance_rate is not None:
                acc.append(r.acceptance_rate.mean())
        z = torch.cat(states)
        acceptance = torch.stack(acc).mean() if acc else None
        grad_norm = torch.stack(norms).mean()
        x_all = x_kb.repeat(n_t, *([1] * (x.ndim - 1)))

    with torch.no_grad():
        loglik = log_likelihood(x_all, z)
    return PowerPosteriorSamples(
        z=z.view(n_t, num_chains, batch, *latent_shape),
        log_likelihood=loglik.view(n_t, num_chains, batch),
        acceptance_rate=acceptance,
        grad_norm=grad_norm,
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
