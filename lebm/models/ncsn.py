"""Noise-conditional score network (Song and Ermon 2019; NCSNv2 options from Song and Ermon 2020).

A network ``s(x, sigma)`` learns the score of the data perturbed by N(0, sigma^2 I) at every
level of a geometric :class:`SigmaLadder` ``sigma_1 > ... > sigma_L``, by score matching at one
random level per sample weighted by ``lambda(sigma) = sigma^2``; samples come from annealed
Langevin dynamics (:func:`lebm.samplers.annealed_langevin`) down the ladder, with an optional
final denoising step ``x + sigma_L^2 s(x, sigma_L)``.

The objective (:mod:`lebm.score_matching`) is denoising score matching by default; sliced and
exact score matching of the perturbed data are the alternatives. The network can model the
score directly, or an energy whose negative gradient is the score:

* ``parameterization="score"``: ``s(x, sigma) = net(x, log sigma) / sigma`` (the NCSNv2 output
  scaling: the network's output stays O(1) at every level);
* ``parameterization="energy"``: ``E(x, sigma) = ||x - net(x, log sigma)||^2 / (2 sigma^2)`` and
  ``s = -grad_x E`` (Salimans and Ho 2021's energy from a denoiser), trained through the
  gradient (double backpropagation).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lebm.models.score_base import ScoreModelBase
from lebm.samplers import annealed_langevin
from lebm.schedules import SigmaLadder
from lebm.score_matching import score_from_energy, score_matching_loss

Objective = Literal["denoising", "sliced", "exact"]
Parameterization = Literal["score", "energy"]


class NCSN(ScoreModelBase):
    """NCSN: noise-conditional score network trained by score matching, sampled by annealed
    Langevin dynamics.

    Defaults are the paper's: L = 10 levels from sigma_1 = 1 to sigma_L = 0.01, 100 Langevin
    steps per level with ``alpha_i = step_lr sigma_i^2 / sigma_L^2``, step_lr = 4e-5 in lebm's
    convention, which is the official code's published 2e-5 (see ``step_lr``). For data
    not scaled to about unit size, set ``sigma_max`` near the largest distance between data
    points (NCSNv2's rule); the toy configs do. Chains start from N(0, sigma_max^2 I), which
    the data perturbed at sigma_max resembles.

    Args:
        sigma_max: sigma_1, the largest noise level.
        sigma_min: sigma_L, the smallest.
        num_levels: L.
        objective: ``"denoising"``, ``"sliced"`` or ``"exact"`` score matching of the perturbed
            data (exact only for low dimension).
        parameterization: ``"score"`` or ``"energy"`` (see the module docstring).
        num_projections: sliced score matching: random directions per sample.
        steps_per_level: annealed Langevin steps at each level.
        step_lr: annealed Langevin base step ``eps``, in the paper's convention (its
            Algorithm 1, and :func:`lebm.samplers.annealed_langevin`):
            ``x + (alpha_i / 2) s + sqrt(alpha_i) z``. The official NCSN code updates
            ``x + a_i s + sqrt(2 a_i) z`` with ``a_i = step_lr sigma_i^2 / sigma_L^2``, twice
            this step at the same number, so its published step_lr 2e-5 (the one behind the
            paper's samples) is lebm's 4e-5: double a number taken from that code or its
            configs.
        final_denoise: end sampling with ``x + sigma_L^2 s(x, sigma_L)``.
        **kwargs: ``data_shape``, the network ``net`` (by class path) and optimisation
            (``lr``, ``weight_decay``, ``warmup_steps``, ``ema_decay``) arguments of
            :class:`~lebm.models.score_base.ScoreModelBase`.
    """

    def __init__(
        self,
        *,
        sigma_max: float = 1.0,
        sigma_min: float = 0.01,
        num_levels: int = 10,
        objective: Objective = "denoising",
        parameterization: Parameterization = "score",
        num_projections: int = 1,
        steps_per_level: int = 100,
        step_lr: float = 4e-5,
        final_denoise: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        problems = []
        if objective not in ("denoising", "sliced", "exact"):
            problems.append(
                f"objective must be 'denoising', 'sliced' or 'exact', got {objective!r}"
            )
        if parameterization not in ("score", "energy"):
            problems.append(
                f"parameterization must be 'score' or 'energy', got {parameterization!r}"
            )
        if num_projections < 1:
            problems.append(f"num_projections must be >= 1, got {num_projections}")
        if steps_per_level < 1:
            problems.append(f"steps_per_level must be >= 1, got {steps_per_level}")
        if not step_lr > 0:
            problems.append(f"step_lr must be > 0, got {step_lr}")
        if problems:
            raise ValueError("NCSN: " + "; ".join(problems))
        self.ladder = SigmaLadder(sigma_max, sigma_min, num_levels)

    def _ladder(self) -> SigmaLadder:
        """The sigma ladder on the model's device (moved once, then cached)."""
        if self.ladder.device != self.device:
            self.ladder = self.ladder.to(self.device)
        return self.ladder

    def score_fn(self, net: nn.Module | None = None):
        """The score ``s(x, sigma)``: (B, *data_shape), sigma (B,) -> (B, *data_shape)."""
        net = net or self.net

        def view(sigma: Tensor, x: Tensor) -> Tensor:
            return sigma.to(x.dtype).view(-1, *([1] * (x.dim() - 1)))

        if self.hparams.parameterization == "score":

            def score(x: Tensor, sigma: Tensor) -> Tensor:
                return net(x, sigma.log().to(x.dtype)) / view(sigma, x)

            return score

        def score(x: Tensor, sigma: Tensor) -> Tensor:
            def energy(y: Tensor) -> Tensor:
                residual = (y - net(y, sigma.log().to(y.dtype))).flatten(1)
                return residual.pow(2).sum(1) / (2 * sigma.to(y.dtype) ** 2)

            return score_from_energy(energy)(x)

        return score

    def per_sample_loss(
        self, x: Tensor, generator: torch.Generator | None = None, net: nn.Module | None = None
    ) -> Tensor:
        """``sigma^2 * score-matching loss`` at one uniformly drawn level per sample: (B,)."""
        ladder = self._ladder()
        score = self.score_fn(net)
        sigmas = ladder.sigmas.to(x.dtype)
        hp = self.hparams
        if hp.objective == "denoising":  # lambda(sigma) = sigma^2 is built into the loss
            return score_matching_loss("denoising", score, x, sigmas=sigmas, generator=generator)
        levels = ladder.sample_levels(len(x), generator, device=x.device)
        sigma = sigmas[levels]
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_noisy = x + sigma.view(-1, *([1] * (x.dim() - 1))) * noise

        def score_at_level(y: Tensor) -> Tensor:
            return score(y, sigma)

        # the objectives switch autograd on themselves (validation runs under no_grad)
        options = {"num_projections": hp.num_projections} if hp.objective == "sliced" else {}
        loss = score_matching_loss(
            hp.objective, score_at_level, x_noisy, generator=generator, **options
        )
        return sigma**2 * loss

    def _sample(
        self, net: nn.Module, num_samples: int, generator: torch.Generator | None
    ) -> Tensor:
        hp = self.hparams
        ladder = self._ladder()
        x0 = torch.randn(num_samples, *self.data_shape, generator=generator, device=self.device)
        x0 = x0 * hp.sigma_max
        result = annealed_langevin(  # no_grad inside; an energy score enables autograd itself
            self.score_fn(net),
            x0,
            ladder.sigmas,
            hp.steps_per_level,
            hp.step_lr,
            final_denoise=hp.final_denoise,
            generator=generator,
        )
        return result.sample
