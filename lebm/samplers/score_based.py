"""Samplers driven by a learned score or noise predictor: annealed Langevin (NCSN) and
DDPM ancestral sampling.

Both are pure functions of a network callable and a start tensor, like :func:`langevin`. They
need no gradients (the network gives the score directly), so they run under
``torch.no_grad()``; a score that needs autograd inside (``lebm.score_matching.
score_from_energy``) turns it on for itself. Sampling cannot be differentiated through.

Chains keep the dtype of the start tensor: network outputs are cast to it, so the network may
run under the caller's autocast while the chain accumulates in float32.

There is no log-density here: ``SamplerResult.log_prob`` and ``log_prob_start`` are NaN and
:meth:`ScoreSamplerResult.diagnostics` leaves them out. ``grad_norm`` is the per-chain mean
over steps of the norm of the score used (for DDPM the implied score
``-eps / sqrt(1 - abar_t)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lebm.samplers.base import (
    NoiseConditionalScore,
    SamplerResult,
    check_finite,
    norm_event,
    scaled_noise,
)
from lebm.schedules import NoiseSchedule

EpsModel = Callable[[Tensor, Tensor], Tensor]
"""``eps_model(x_t, t)``: x_t of shape (B, *event), t of shape (B,) long in 0 .. T-1 ->
predicted noise shaped like x_t."""

DDPMVariance = Literal["large", "small"]


@dataclass
class ScoreSamplerResult(SamplerResult):
    """A :class:`SamplerResult` from a score-driven sampler: no log-density is known, so
    ``log_prob`` and ``log_prob_start`` are NaN (shape (B,)) and left out of diagnostics."""

    def diagnostics(self) -> dict[str, Tensor]:
        """Batch-mean diagnostics as 0-d tensors: only ``grad_norm`` (the score norm)."""
        return {"grad_norm": self.grad_norm.mean()}


def _checked(out: Tensor, x: Tensor, name: str) -> Tensor:
    if out.shape != x.shape:
        raise ValueError(
            f"{name} must return a tensor shaped like x {tuple(x.shape)}, got {tuple(out.shape)}"
        )
    return out.to(x.dtype)


def annealed_langevin(
    score: NoiseConditionalScore,
    x0: Tensor,
    sigmas: Tensor | Sequence[float],
    n_steps_each: int,
    step_lr: float,
    *,
    final_denoise: bool = False,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> ScoreSamplerResult:
    """Annealed Langevin dynamics (Song and Ermon 2019, Algorithm 1).

    For each level ``i`` (from the largest sigma to the smallest, ``sigma_L``), with
    ``alpha_i = step_lr * sigma_i^2 / sigma_L^2``, ``n_steps_each`` updates::

        x <- x + (alpha_i / 2) score(x, sigma_i) + sqrt(alpha_i) z,   z ~ N(0, I)

    i.e. lebm's Langevin step ``z + s grad + sqrt(2 s) eps`` with ``s = alpha_i / 2``. With
    ``final_denoise`` one last noise-free step ``x <- x + sigma_L^2 score(x, sigma_L)``
    (NCSNv2; Tweedie's posterior mean under the smallest noise).

    Cost: ``L * n_steps_each`` network calls (+1 with ``final_denoise``), one host sync.

    Args:
        score: ``score(x, sigma)`` with x of shape (B, *event) and sigma of shape (B,) (every
            entry the current level, in x's dtype and device), returning a tensor shaped like
            x. Output is cast to x's dtype.
        x0: initial states, shape (B, *event) (NCSN: uniform noise; NCSNv2: scaled Gaussian).
        sigmas: noise levels, shape (L,), positive, non-increasing (``SigmaLadder.sigmas``).
        n_steps_each: updates per level (paper: 100), >= 0.
        step_lr: ``eps`` in ``alpha_i``, > 0, in the paper's convention above. The official
            NCSN code steps ``x + a_i s + sqrt(2 a_i) z`` with ``a_i = step_lr sigma_i^2 /
            sigma_L^2`` (twice this step at the same number): its published 2e-5 for images
            is 4e-5 here.
        final_denoise: add the final denoising step.
        generator: optional torch.Generator for the noise (on x0's device).
        return_trajectory: also return every state, shape
            ``(L * n_steps_each + 1 [+ 1 with final_denoise], B, *event)``.

    Returns:
        ScoreSamplerResult; ``grad_norm`` is the per-chain mean over updates of ``||score||``.

    Raises:
        ValueError: bad arguments or a score of the wrong shape.
        SamplerDivergenceError: a chain became non-finite (checked once, at the end).
    """
    if isinstance(n_steps_each, bool) or not isinstance(n_steps_each, int) or n_steps_each < 0:
        raise ValueError(f"n_steps_each must be an int >= 0, got {n_steps_each!r}")
    if not step_lr > 0:
        raise ValueError(f"step_lr must be positive, got {step_lr:g}")
    sigmas_tensor = torch.as_tensor(sigmas)
    if sigmas_tensor.ndim != 1 or len(sigmas_tensor) == 0:
        raise ValueError(
            f"sigmas must be a non-empty 1-D sequence of noise levels, got shape "
            f"{tuple(sigmas_tensor.shape)}"
        )
    levels = [float(v) for v in sigmas_tensor.tolist()]  # one host read
    if not all(v > 0 and v < float("inf") for v in levels):
        raise ValueError(f"sigmas must be positive and finite, got {levels}")
    if any(b > a for a, b in zip(levels, levels[1:], strict=False)):
        raise ValueError(f"sigmas must be non-increasing (largest first), got {levels}")

    batch, device, dtype = x0.shape[0], x0.device, x0.dtype
    sigma_last = levels[-1]
    n_updates = len(levels) * n_steps_each
    n_calls = n_updates + int(final_denoise)
    steps_of = [(i, a) for i, a in enumerate(levels) for _ in range(n_steps_each)]

    alphas = [step_lr * sigma**2 / sigma_last**2 for _, sigma in steps_of]
    with torch.no_grad():
        x = x0.detach()
        # per-chain score norm at every call and the final state's norm: the one-sync check
        norms = []
        trajectory = [x] if return_trajectory else None
        # sqrt(alpha_i) z for every update, scaled once up front
        noise = scaled_noise(n_updates, x, 1.0, generator, [a**0.5 for a in alphas])
        sigma_vectors = [torch.full((batch,), v, device=device, dtype=dtype) for v in levels]
        for k, (i, _) in enumerate(steps_of):
            s = _checked(score(x, sigma_vectors[i]), x, "score")
            norms.append(norm_event(s))
            x = torch.add(noise(k), s, alpha=alphas[k] / 2).add_(x)
            if trajectory is not None:
                trajectory.append(x)
        if final_denoise:
            s = _checked(score(x, sigma_vectors[-1]), x, "score")
            norms.append(norm_event(s))
            x = torch.add(x, s, alpha=sigma_last**2)
            if trajectory is not None:
                trajectory.append(x)
        norms.append(norm_event(x))
        trace = torch.stack(norms)

    def where(row: int) -> str:
        if row == n_calls:
            return "the final state"
        if row == n_updates:
            return f"the final denoising step (sigma {sigma_last:g})"
        i, sigma = steps_of[row]
        return (
            f"level {i} (sigma {sigma:g}, alpha {step_lr * sigma**2 / sigma_last**2:g}), "
            f"step {row % n_steps_each}"
        )

    check_finite(
        trace,
        "annealed Langevin",
        "Lower step_lr (alpha_1 = step_lr * sigma_1^2 / sigma_L^2 must stay below about "
        "4 * (variance of the data at sigma_1)), or check the score network's output scale.",
        where=where,
    )
    nan = torch.full((batch,), float("nan"), device=device, dtype=dtype)
    return ScoreSamplerResult(
        sample=x,
        log_prob=nan,
        log_prob_start=nan.clone(),
        grad_norm=trace[:n_updates].mean(0) if n_updates else torch.zeros_like(nan),
        trajectory=None if trajectory is None else torch.stack(trajectory),
    )


def ddpm_ancestral(
    eps_model: EpsModel,
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    variance: DDPMVariance = "large",
    clip_x0: float | None = None,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
    t_dtype: torch.dtype = torch.long,
) -> ScoreSamplerResult:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), for t = T-1 down to 0::

        eps  = eps_model(x_t, t)
        mean = (x_t - beta_t / sqrt(1 - abar_t) * eps) / sqrt(alpha_t)
        x_{t-1} = mean + sigma_t z   (no noise at t = 0),
        sigma_t^2 = beta_t ("large") or beta_tilde_t ("small").

    With ``clip_x0 = c`` the mean goes through the clamped x0-prediction instead (the DDPM
    reference code for images in [-1, 1])::

        x0_hat = clamp((x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), -c, c)
        mean   = posterior_mean_coef_x0[t] x0_hat + posterior_mean_coef_xt[t] x_t

    which equals the first form when nothing is clamped; the returned sample then lies in
    [-c, c] (at t = 0 the posterior mean is x0_hat itself).

    Cost: T network calls, one host sync (plus one to read the schedule's coefficients when it
    lives on an accelerator). Around the network a step costs two fused updates and a norm:
    the noise of every step is drawn and scaled up front, the timesteps built once, the
    coefficients are Python floats.

    Args:
        eps_model: ``eps_model(x_t, t)`` with t of shape (B,), dtype ``t_dtype``, 0-indexed (see
            :mod:`lebm.schedules`); returns the predicted noise shaped like x_t (cast to its
            dtype).
        schedule: the NoiseSchedule the model was trained with.
        x_T: start, shape (B, *event); normally ``torch.randn``.
        variance: ``"large"`` (beta_t) or ``"small"`` (beta_tilde_t).
        clip_x0: clamp the predicted x_0 to [-clip_x0, clip_x0] (> 0), or None.
        generator: optional torch.Generator for the noise (on x_T's device).
        return_trajectory: also return every state x_T .. x_0, shape (T + 1, B, *event).
        t_dtype: dtype of the timesteps handed to ``eps_model`` (default long). lebm's networks
            take a float t: passing x's dtype builds them as floats once, instead of a
            conversion inside ``eps_model`` at every step.

    Returns:
        ScoreSamplerResult; ``grad_norm`` is the per-chain mean over steps of the implied
        score norm ``||eps|| / sqrt(1 - abar_t)``.

    Raises:
        ValueError: bad arguments or a model output of the wrong shape.
        SamplerDivergenceError: a chain became non-finite (checked once, at the end).
    """
    if variance not in ("large", "small"):
        raise ValueError(f"variance must be 'large' or 'small', got {variance!r}")
    if clip_x0 is not None and not clip_x0 > 0:
        raise ValueError(f"clip_x0 must be positive or None, got {clip_x0}")
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be a NoiseSchedule, got {type(schedule).__name__}")

    num_steps = schedule.num_steps
    batch, device, dtype = x_T.shape[0], x_T.device, x_T.dtype
    # host copies of the coefficients (one transfer): Python floats, no per-step gather or sync
    table = torch.stack(
        [
            schedule.betas,
            schedule.alphas,
            schedule.sqrt_alpha_bars,
            schedule.sqrt_one_minus_alpha_bars,
            schedule.posterior_mean_coef_x0,
            schedule.posterior_mean_coef_xt,
            schedule.posterior_variance,
        ]
    ).tolist()
    betas, alphas, sqrt_abar, sqrt_one_minus, coef_x0, coef_xt, beta_tilde = table
    var = betas if variance == "large" else beta_tilde

    # per step k (t = T-1-k), with a = 1 / sqrt(alpha_t), b = -beta_t / (sqrt(1 - abar_t)
    # sqrt(alpha_t)): mean = a x + b eps; plain Python floats, no per-step gather or sync
    ts = range(num_steps - 1, -1, -1)
    coef_a = [alphas[t] ** -0.5 for t in ts]
    coef_b = [-betas[t] / (sqrt_one_minus[t] * alphas[t] ** 0.5) for t in ts]
    with torch.no_grad():
        x = x_T.detach()
        norms = []
        trajectory = [x] if return_trajectory else None
        n_noisy = num_steps - 1
        # sigma_t z for t = T-1 .. 1, scaled once up front
        noise = scaled_noise(n_noisy, x, 1.0, generator, [var[t] ** 0.5 for t in ts][:n_noisy])
        timesteps = (
            torch.arange(num_steps - 1, -1, -1, device=device, dtype=t_dtype)
            .repeat_interleave(batch)
            .view(num_steps, batch)
            .unbind(0)
        )
        for k, t in enumerate(ts):
            eps = _checked(eps_model(x, timesteps[k]), x, "eps_model")
            norms.append(norm_event(eps))
            if clip_x0 is None:
                if t > 0:  # x_{t-1} = sigma_t z + a x + b eps
                    x = torch.add(noise(k), x, alpha=coef_a[k]).add_(eps, alpha=coef_b[k])
                else:
                    x = torch.mul(x, coef_a[k]).add_(eps, alpha=coef_b[k])
            else:
                x0_hat = torch.add(x, eps, alpha=-sqrt_one_minus[t]).div_(sqrt_abar[t])
                x0_hat = x0_hat.clamp_(-clip_x0, clip_x0)
                if t > 0:
                    x = torch.add(noise(k), x, alpha=coef_xt[t]).add_(x0_hat, alpha=coef_x0[t])
                else:
                    x = torch.add(x0_hat.mul_(coef_x0[t]), x, alpha=coef_xt[t])
            if trajectory is not None:
                trajectory.append(x)
        # implied score norms ||eps|| / sqrt(1 - abar_t), and the final state's norm
        inv_sqrt_one_minus = torch.tensor(
            [1.0 / sqrt_one_minus[t] for t in ts] + [1.0], device=device, dtype=dtype
        )
        norms.append(norm_event(x))
        trace = torch.stack(norms).mul_(inv_sqrt_one_minus.view(-1, 1))

    check_finite(
        trace,
        "DDPM ancestral sampling",
        "Check the noise model's output (a model trained with another schedule, or "
        "overflow in low precision); clip_x0 bounds the x0-prediction for data in [-c, c].",
        where=lambda row: "the final state" if row == num_steps else f"t = {num_steps - 1 - row}",
    )
    nan = torch.full((batch,), float("nan"), device=device, dtype=dtype)
    return ScoreSamplerResult(
        sample=x,
        log_prob=nan,
        log_prob_start=nan.clone(),
        grad_norm=trace[:num_steps].mean(0),
        trajectory=None if trajectory is None else torch.stack(trajectory),
    )
