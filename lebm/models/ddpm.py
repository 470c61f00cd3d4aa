"""Denoising diffusion probabilistic model (Ho, Jain, Abbeel 2020).

Forward process ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` on a :class:`NoiseSchedule`;
the network predicts ``eps`` from ``(x_t, t)``, trained with the per-sample "simple" loss
``mean_d (eps_hat - eps)^2`` at one uniformly drawn step per sample; samples come from
ancestral sampling (:func:`lebm.samplers.ddpm_ancestral`) with ``sigma_t^2 = beta_t``
("large") or ``beta_tilde_t`` ("small").
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lebm.models.score_base import ScoreModelBase
from lebm.samplers import ddpm_ancestral
from lebm.schedules import NoiseSchedule, ScheduleName


class DDPM(ScoreModelBase):
    """DDPM with epsilon prediction; an MLP for low-dimensional data, a U-Net for images.

    Defaults suit 2-D toy data: T = 100 steps of the linear schedule rescaled by 1000 / T
    (Ho et al.'s 1e-4 .. 0.02 at T = 1000, so ``abar_T`` stays near 0 for small T), a
    conditional MLP of width 128, Adam lr 1e-3, EMA 0.995.

    Args:
        schedule: ``"linear"`` or ``"cosine"`` (Nichol and Dhariwal).
        num_timesteps: T.
        beta_start: first beta of the linear schedule (before rescaling; unused by cosine).
        beta_end: last beta of the linear schedule (before rescaling; unused by cosine).
        rescale_schedule: multiply the linear betas by 1000 / T (unused by cosine).
        variance: ancestral-sampling variance, ``"large"`` (beta_t) or ``"small"`` (beta_tilde_t).
        clip_x0: clamp the predicted x_0 to [-clip_x0, clip_x0] while sampling (1.0 for images
            in [-1, 1]); None for unbounded data.
        **kwargs: ``data_shape``, the network ``net`` (by class path) and optimisation
            (``lr``, ``weight_decay``, ``warmup_steps``, ``ema_decay``) arguments of
            :class:`~lebm.models.score_base.ScoreModelBase`.
    """

    def __init__(
        self,
        *,
        schedule: ScheduleName = "linear",
        num_timesteps: int = 100,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        rescale_schedule: bool = True,
        variance: Literal["large", "small"] = "large",
        clip_x0: float | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if variance not in ("large", "small"):
            raise ValueError(f"DDPM: variance must be 'large' or 'small', got {variance!r}")
        if clip_x0 is not None and not clip_x0 > 0:
            raise ValueError(f"DDPM: clip_x0 must be > 0 or None, got {clip_x0}")
        linear = {"beta_start": beta_start, "beta_end": beta_end, "rescale": rescale_schedule}
        self.schedule = NoiseSchedule.from_name(
            schedule, num_timesteps, **(linear if schedule == "linear" else {})
        )

    def _schedule(self) -> NoiseSchedule:
        """The schedule on the model's device (moved once, then cached)."""
        if self.schedule.device != self.device:
            self.schedule = self.schedule.to(self.device)
        return self.schedule

    def per_sample_loss(
        self, x: Tensor, generator: torch.Generator | None = None, net: nn.Module | None = None
    ) -> Tensor:
        """``mean_d (eps_hat(x_t, t) - eps)^2`` with ``t ~ U{0..T-1}``, eps ~ N(0, I): (B,)."""
        schedule = self._schedule()
        t = schedule.sample_timesteps(len(x), generator, device=x.device)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_t = schedule.add_noise(x, eps, t)
        eps_hat = (net or self.net)(x_t, t.to(x.dtype))
        return (eps_hat - eps).pow(2).flatten(1).mean(1)

    def _sample(
        self, net: nn.Module, num_samples: int, generator: torch.Generator | None
    ) -> Tensor:
        x_T = torch.randn(num_samples, *self.data_shape, generator=generator, device=self.device)
        result = ddpm_ancestral(
            net,  # the timesteps come as floats (t_dtype), as lebm's networks take them
            self._schedule(),
            x_T,
            t_dtype=x_T.dtype,
            variance=self.hparams.variance,
            clip_x0=self.hparams.clip_x0,
            generator=generator,
        )
        return result.sample
