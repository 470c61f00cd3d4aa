"""Latent-space EBM prior model (Pang, Han, Nijkamp, Zhu, Wu; NeurIPS 2020).

Model::

    p_alpha(z) = exp(f_alpha(z)) N(z; 0, sigma_0^2 I) / Z_alpha
    x = g_beta(z) + eps,  eps ~ N(0, sigma_eps^2 I)

One training iteration (manual optimization, two Adam optimizers):

1. positives z+ ~ p(z | x): ``posterior_sampler`` on log p_alpha(z) + log p(x | z);
2. negatives z- ~ p_alpha(z): ``prior_sampler`` from N(0, sigma_0^2 I);
3. EBM loss ``mean f(z-) - mean f(z+)``; generator loss ``-mean log p(x | z+)`` (z detached);
4. one backward pass for both losses (their parameters are disjoint), then both optimizer steps.

Variants override three hooks, not the iteration: :meth:`LatentEBM.posterior` (how z+ is
drawn), :meth:`LatentEBM.negatives` (how z- is drawn) and :meth:`LatentEBM.generator_loss`
(see :class:`~lebm.models.ThermoLatentEBM`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from jsonargparse import lazy_instance
from torch import Tensor

from lebm.components import EnergyFactory, GeneratorFactory, as_factory, as_instance
from lebm.data import batch_data
from lebm.losses import contrastive_energy_loss, gaussian_log_likelihood, gaussian_log_prior
from lebm.models.base import GenerativeModel
from lebm.nets import EnergyMLP, GeneratorMLP
from lebm.samplers import GaussianReference, Langevin, LogProb, Sampler, SamplerResult

# Pang et al.'s SVHN chains in lebm's convention (s = h^2 / 2). Signature defaults are jsonargparse
# lazy instances: printed by --print_config as class_path + init_args, built afresh per model.
PANG_PRIOR_SAMPLER = lazy_instance(Langevin, n_steps=60, step_size=0.08)
PANG_POSTERIOR_SAMPLER = lazy_instance(Langevin, n_steps=20, step_size=0.005)


@dataclass
class Posterior:
    """Posterior latents of one batch, as the hooks pass them on.

    Attributes:
        z: the positives for the EBM, shape (B, latent_dim), detached.
        state: whatever :meth:`LatentEBM.generator_loss` needs (vanilla: z itself).
        logs: diagnostics to log under ``train/``.
    """

    z: Tensor
    state: Any
    logs: dict[str, Tensor] = field(default_factory=dict)


class LatentEBM(GenerativeModel):
    """Latent EBM prior + Gaussian generator, learned by short-run MCMC maximum likelihood.

    Defaults are Pang et al.'s SVHN settings mapped to lebm's step convention
    ``z + s grad log pi + sqrt(2 s) eps`` (their ``z - (h^2/2) grad E + h eps`` has
    ``s = h^2 / 2``): prior 60 Langevin steps of s = 0.08 (h = 0.4), posterior 20 steps of
    s = 0.005 (h = 0.1), Adam lr 2e-5 (EBM) and 1e-4 (generator), betas (0.5, 0.999); an MLP
    EBM 200-200 and an MLP generator 128-128 (GELU) for low-dimensional data.

    Args:
        data_shape: shape of one data point, e.g. ``(2,)``; linked from the datamodule by the CLI.
        latent_dim: size of z.
        energy: the EBM ``f_alpha``: a class called as ``energy(latent_dim)`` (config:
            ``class_path`` + ``init_args``), mapping (B, latent_dim) -> (B,);
            None: :class:`lebm.nets.EnergyMLP` with its defaults (200-200, GELU).
        generator: the generator ``g_beta``: a class called as ``generator(latent_dim,
            data_shape)``, mapping (B, latent_dim) -> (B, *data_shape); None:
            :class:`lebm.nets.GeneratorMLP` with its defaults (128-128, GELU);
            :class:`lebm.nets.DCGANGenerator` for images.
        prior_sigma: ``sigma_0`` of the reference Gaussian; chains start from N(0, sigma_0^2 I).
        likelihood_sigma: ``sigma_eps`` of the Gaussian likelihood.
        prior_sampler: sampler object for z- (:mod:`lebm.samplers`: Langevin, MALA, HMC, ...).
        posterior_sampler: sampler object for z+.
        energy_lr: Adam learning rate of the EBM.
        generator_lr: Adam learning rate of the generator.
        betas: Adam betas for both optimizers.
        lr_decay: ExponentialLR gamma applied once per epoch to both (1.0 = constant).
        grad_clip: clip each network's gradient norm to this value (None = no clipping).
        energy_l2: weight of the energy-magnitude penalty ``energy_l2 (f(z+)^2 + f(z-)^2)``
            added to the EBM loss (not in Pang et al.; 0 = none). It bounds f when the prior
            chains fall behind a sharpening energy (as :class:`~lebm.models.EBM`'s).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] = (2,),
        latent_dim: int = 2,
        energy: EnergyFactory | None = None,
        generator: GeneratorFactory | None = None,
        prior_sigma: float = 1.0,
        likelihood_sigma: float = 0.3,
        prior_sampler: Sampler = PANG_PRIOR_SAMPLER,
        posterior_sampler: Sampler = PANG_POSTERIOR_SAMPLER,
        energy_lr: float = 2e-5,
        generator_lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        lr_decay: float = 1.0,
        grad_clip: float | None = None,
        energy_l2: float = 0.0,
    ) -> None:
        super().__init__(data_shape)
        _validate(locals())
        self.automatic_optimization = False
        self.latent_dim = latent_dim
        self.energy = as_factory(energy or EnergyMLP, "energy")(latent_dim)
        self.generator = as_factory(generator or GeneratorMLP, "generator")(
            latent_dim, self.data_shape
        )
        self.prior_sampler = as_instance(prior_sampler, Sampler, "prior_sampler")
        self.posterior_sampler = as_instance(posterior_sampler, Sampler, "posterior_sampler")

    # ----------------------------------------------------------------- densities
    def log_prior(self, z: Tensor) -> Tensor:
        """Unnormalised ``log p_alpha(z) = f(z) - ||z||^2 / (2 sigma_0^2)``: (B, d) -> (B,)."""
        return self.energy(z) + gaussian_log_prior(z, self.hparams.prior_sigma)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x | z) = log N(x; g(z), sigma_eps^2 I)``: (B, *data), (B, d) -> (B,)."""
        return gaussian_log_likelihood(x, self.generator(z), self.hparams.likelihood_sigma)

    # ----------------------------------------------------------------- sampling
    def initial_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Chain starts ``z ~ N(0, sigma_0^2 I)``, shape (n, latent_dim)."""
        z = torch.randn(n, self.latent_dim, generator=generator, device=self.device)
        return z * self.hparams.prior_sigma

    def _analytic_reference(self) -> bool:
        """Whether ``log_prior`` is LatentEBM's ``f(z) - ||z||^2 / (2 sigma_0^2)``, whose
        Gaussian term the samplers can differentiate analytically (not when a subclass
        overrides it)."""
        return type(self).log_prior is LatentEBM.log_prior

    def prior_log_density(self) -> LogProb:
        """``log p_alpha`` as the samplers take it: a :class:`~lebm.samplers.GaussianReference`
        (``f`` plus the reference term, whose gradient ``-z / sigma_0^2`` is added
        analytically), or ``log_prior`` itself when a subclass overrides it."""
        if self._analytic_reference():
            return GaussianReference(self.energy, self.hparams.prior_sigma)
        return self.log_prior

    def posterior_log_density(self, x: Tensor) -> LogProb:
        """``log p_alpha(z) + log p(x | z)`` for chains given x (one row of x per chain), as
        the samplers take it (see :meth:`prior_log_density`)."""
        if self._analytic_reference():
            energy, log_likelihood = self.energy, self.log_likelihood
            if type(self).log_likelihood is LatentEBM.log_likelihood:
                # f(z) + log N(x; g(z), sigma^2 I) with the fewest operations (the same value
                # as log_prior + log_likelihood up to float rounding)
                generator, sigma = self.generator, self.hparams.likelihood_sigma
                x_flat = x.flatten(1)
                const = x_flat.shape[1] * (math.log(sigma) + 0.5 * math.log(2.0 * math.pi))
                scale = -0.5 / sigma**2

                def rest(z: Tensor) -> Tensor:
                    d = x_flat - generator(z).flatten(1)
                    return torch.add(energy(z), torch.linalg.vecdot(d, d), alpha=scale).sub_(const)

            else:

                def rest(z: Tensor) -> Tensor:
                    return energy(z) + log_likelihood(x, z)

            return GaussianReference(rest, self.hparams.prior_sigma)

        def log_joint(z: Tensor) -> Tensor:
            return self.log_prior(z) + self.log_likelihood(x, z)

        return log_joint

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> SamplerResult:
        """Short-run chains on ``p_alpha(z)``; result.sample has shape (n, latent_dim)."""
        return self.prior_sampler(
            self.prior_log_density(), self.initial_latents(n, generator), generator=generator
        )

    def sample_posterior(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> SamplerResult:
        """Short-run chains on ``p(z | x)``, one per row of x; sample has shape (B, latent_dim)."""
        z0 = self.initial_latents(len(x), generator)
        return self.posterior_sampler(self.posterior_log_density(x), z0, generator=generator)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Data-space samples ``g(z)``, z from the prior chains: (num_samples, *data_shape)."""
        return self.generator(self.sample_prior(num_samples, generator).sample)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``g(z+)`` with z+ from the posterior chains given x: same shape as x."""
        return self.generator(self.sample_posterior(x, generator).sample)

    # ----------------------------------------------------------------- hooks
    def posterior(self, x: Tensor, generator: torch.Generator | None = None) -> Posterior:
        """Posterior latents of batch x for both losses (vanilla: one chain per data point)."""
        result = self.sample_posterior(x, generator)
        # log_prob_end comes from the loss's forward passes (_objectives), so the sampler's
        # final-state forward is never run
        diagnostics = result.diagnostics(log_prob_end=False)
        logs = {f"posterior_{k}": v for k, v in diagnostics.items()}
        return Posterior(result.sample, result.sample, logs)

    def negatives(
        self, posterior: Posterior, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Prior latents z- for the EBM loss, shape (B, latent_dim), and their diagnostics."""
        result = self.sample_prior(len(posterior.z), generator)
        diagnostics = result.diagnostics(log_prob_end=False)  # from _objectives instead
        return result.sample, {f"prior_{k}": v for k, v in diagnostics.items()}

    def generator_loss(self, x: Tensor, posterior: Posterior) -> tuple[Tensor, Tensor]:
        """Per-sample generator loss ``-log p(x | z+)`` (B,), and the batch's reconstruction
        MSE from the same forward pass (0-d, detached)."""
        z = posterior.state.detach()
        x_hat = self.generator(z)
        loss = -gaussian_log_likelihood(x, x_hat, self.hparams.likelihood_sigma)
        return loss, (x_hat.detach() - x).pow(2).mean()

    # ----------------------------------------------------------------- objectives
    def losses_from_latents(self, x: Tensor, z_pos: Tensor, z_neg: Tensor) -> dict[str, Tensor]:
        """Per-sample learning losses given posterior (z_pos) and prior (z_neg) latents.

        Returns:
            ``{"energy": f(z-) - f(z+) [+ energy_l2 (f(z+)^2 + f(z-)^2)], "generator":
            -log p(x | z+)}``, each of shape (B,).
            Their batch means are the two training losses.
        """
        return self._objectives(x, Posterior(z_pos, z_pos), z_neg)[0]

    def _objectives(
        self, x: Tensor, posterior: Posterior, z_neg: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Per-sample losses, and the energies, MSE and the chains' final log-densities from the
        same forward passes for logging.

        Positives and negatives go through the EBM in one batch (one forward and one backward
        instead of two; the EBM must treat rows independently, as an energy does)."""
        z_pos, z_neg = posterior.z.detach(), z_neg.detach()
        if z_pos.shape == z_neg.shape:
            f_pos, f_neg = self.energy(torch.cat([z_pos, z_neg])).chunk(2)
        else:
            f_pos, f_neg = self.energy(z_pos), self.energy(z_neg)
        loss_gen, mse = self.generator_loss(x, posterior)
        energy_loss = contrastive_energy_loss(f_pos, f_neg, self.hparams.energy_l2)
        losses = {"energy": energy_loss, "generator": loss_gen}
        f_pos, f_neg = f_pos.detach(), f_neg.detach()
        logs = {"mse": mse, "en_pos": -f_pos.mean(), "en_neg": -f_neg.mean()}
        # the chains' final log-densities, what the samplers would report (LatentEBM's own
        # log_prior: from f and the reference term; an overridden one is evaluated)
        if self._analytic_reference():
            sigma_0 = self.hparams.prior_sigma
            log_prior_neg = f_neg + gaussian_log_prior(z_neg, sigma_0)
            log_prior_pos = f_pos + gaussian_log_prior(z_pos, sigma_0)
        else:
            with torch.no_grad():
                log_prior_neg, log_prior_pos = self.log_prior(z_neg), self.log_prior(z_pos)
        logs["prior_log_prob_end"] = log_prior_neg.mean()
        vanilla = type(self).generator_loss is LatentEBM.generator_loss
        if vanilla and posterior.state is posterior.z:  # the generator loss is -log p(x | z+)
            logs["posterior_log_prob_end"] = (log_prior_pos - loss_gen.detach()).mean()
        return losses, logs

    def learning_losses(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Per-sample losses of one training iteration on batch x, drawing fresh chains."""
        return self._losses_and_logs(x, generator)[0]

    def gradient_groups(self) -> dict[str, torch.nn.Module]:
        return {"energy": self.energy, "generator": self.generator}

    def _losses_and_logs(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Draw posterior and prior chains; return per-sample losses and values to log."""
        posterior = self.posterior(x, generator)
        z_neg, neg_logs = self.negatives(posterior, generator)
        losses, logs = self._objectives(x, posterior, z_neg)
        return losses, logs | posterior.logs | neg_logs

    # ----------------------------------------------------------------- Lightning
    def training_step(self, batch, batch_idx: int) -> Tensor:
        losses, logs = self._losses_and_logs(batch_data(batch))
        loss_ebm, loss_gen = losses["energy"].mean(), losses["generator"].mean()

        opt_ebm, opt_gen = self.optimizers()
        opt_ebm.zero_grad()
        opt_gen.zero_grad()
        self.manual_backward(loss_ebm + loss_gen)
        if self.hparams.grad_clip is not None:
            for opt in (opt_ebm, opt_gen):
                self.clip_gradients(opt, self.hparams.grad_clip, "norm")
        opt_ebm.step()
        opt_gen.step()

        logs = {"loss_ebm": loss_ebm.detach(), "loss_gen": loss_gen.detach(), **logs}
        self.log_dict({f"train/{k}": v for k, v in logs.items()})
        self.log("train/loss", loss_ebm + loss_gen, prog_bar=True)
        return loss_ebm + loss_gen

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def evaluation_metrics(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Reconstruction MSE ``mean (g(z+) - x)^2`` with posterior chains."""
        return {"mse": (self.reconstruct(x, generator) - x).pow(2).mean()}

    def configure_optimizers(self):
        hp = self.hparams
        # foreach: one batched update over each network's parameters (the CUDA default; on the
        # CPU it saves about ten operations per parameter tensor and step)
        opt_ebm = torch.optim.Adam(
            self.energy.parameters(), lr=hp.energy_lr, betas=hp.betas, foreach=True
        )
        opt_gen = torch.optim.Adam(
            self.generator.parameters(), lr=hp.generator_lr, betas=hp.betas, foreach=True
        )
        schedulers = [
            torch.optim.lr_scheduler.ExponentialLR(o, hp.lr_decay) for o in (opt_ebm, opt_gen)
        ]
        return [opt_ebm, opt_gen], schedulers


def _validate(args: dict) -> None:
    """Check hyperparameters; each error names the argument, the value and what is allowed."""
    problems = []
    for name in ("latent_dim", "prior_sigma", "likelihood_sigma", "energy_lr", "generator_lr"):
        if not args[name] > 0:
            problems.append(f"{name} must be > 0, got {args[name]}")
    if not all(0.0 <= b < 1.0 for b in args["betas"]) or len(args["betas"]) != 2:
        problems.append(f"betas must be two numbers in [0, 1), got {args['betas']}")
    if not 0.0 < args["lr_decay"] <= 1.0:
        problems.append(f"lr_decay (ExponentialLR gamma) must be in (0, 1], got {args['lr_decay']}")
    if args["grad_clip"] is not None and not args["grad_clip"] > 0:
        problems.append(f"grad_clip must be > 0 or None, got {args['grad_clip']}")
    if not args["energy_l2"] >= 0:
        problems.append(f"energy_l2 must be >= 0, got {args['energy_l2']}")
    if problems:
        raise ValueError("LatentEBM: " + "; ".join(problems))
