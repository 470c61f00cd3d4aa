"""Latent-space EBM prior model (Pang, Han, Nijkamp, Zhu, Wu; NeurIPS 2020).

Model::

    p_alpha(z) = exp(f_alpha(z)) N(z; 0, sigma_0^2 I) / Z_alpha
    x = g_beta(z) + eps,  eps ~ N(0, sigma_eps^2 I)

One training iteration (manual optimization, two Adam optimizers):

1. negatives z- ~ p_alpha(z): short-run Langevin from N(0, sigma_0^2 I);
2. positives z+ ~ p(z | x): short-run Langevin on log p_alpha(z) + log p(x | z), same start;
3. EBM loss ``mean f(z-) - mean f(z+)``; generator loss ``-mean log p(x | z+)`` (z detached);
4. one backward pass for both losses (their parameters are disjoint), then both optimizer steps.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor

from lebm.data import batch_data
from lebm.losses import contrastive_energy_loss, gaussian_log_likelihood, gaussian_log_prior
from lebm.metrics import SampleQuality
from lebm.nets import Activation, DCGANGenerator, EnergyMLP, GeneratorMLP
from lebm.samplers import SamplerResult, langevin

SamplerName = Literal["langevin", "mala"]


class LatentEBM(L.LightningModule):
    """Latent EBM prior + Gaussian generator, learned by short-run MCMC maximum likelihood.

    Defaults are Pang et al.'s SVHN settings mapped to lebm's step convention
    (``s = h^2 / 2``): prior 60 steps of s = 0.08 (h = 0.4), posterior 20 steps of s = 0.005
    (h = 0.1), Adam lr 2e-5 (EBM) and 1e-4 (generator), betas (0.5, 0.999).

    Args:
        data_shape: shape of one data point, e.g. ``(2,)``; linked from the datamodule by the CLI.
        latent_dim: size of z.
        energy_hidden: width of the EBM MLP ``f_alpha``.
        energy_depth: number of hidden layers of ``f_alpha``.
        energy_activation: nonlinearity of ``f_alpha``.
        generator_arch: ``"mlp"`` (any data shape; low-dimensional data) or ``"dcgan"``
            (images (C, S, S), S in 8, 16, 28, 32, 64: :class:`lebm.nets.DCGANGenerator`,
            Pang et al.'s SVHN/CIFAR-10 generator at S = 32 with base width 64 and leaky ReLU).
        generator_hidden: MLP: width of the hidden layers; DCGAN: base width ``w`` (the first
            transposed conv has 8 w channels, halving per block).
        generator_depth: number of hidden layers of the generator MLP (unused by DCGAN).
        generator_activation: nonlinearity of the generator.
        prior_sigma: ``sigma_0`` of the reference Gaussian; chains start from N(0, sigma_0^2 I).
        likelihood_sigma: ``sigma_eps`` of the Gaussian likelihood.
        sampler: ``"langevin"`` (unadjusted) or ``"mala"`` (Metropolis-adjusted) for both chains.
        prior_steps: Langevin steps for prior samples.
        prior_step_size: step size ``s`` of the prior chains.
        posterior_steps: Langevin steps for posterior samples.
        posterior_step_size: step size ``s`` of the posterior chains.
        energy_lr: Adam learning rate of the EBM.
        generator_lr: Adam learning rate of the generator.
        betas: Adam betas for both optimizers.
        lr_decay: ExponentialLR gamma applied once per epoch to both (1.0 = constant).
        grad_clip: clip each network's gradient norm to this value (None = no clipping).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] = (2,),
        latent_dim: int = 2,
        energy_hidden: int = 200,
        energy_depth: int = 2,
        energy_activation: Activation = "gelu",
        generator_arch: Literal["mlp", "dcgan"] = "mlp",
        generator_hidden: int = 128,
        generator_depth: int = 2,
        generator_activation: Activation = "gelu",
        prior_sigma: float = 1.0,
        likelihood_sigma: float = 0.3,
        sampler: SamplerName = "langevin",
        prior_steps: int = 60,
        prior_step_size: float = 0.08,
        posterior_steps: int = 20,
        posterior_step_size: float = 0.005,
        energy_lr: float = 2e-5,
        generator_lr: float = 1e-4,
        betas: tuple[float, float] = (0.5, 0.999),
        lr_decay: float = 1.0,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__()
        _validate(locals())
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.energy = EnergyMLP(latent_dim, energy_hidden, energy_depth, energy_activation)
        if generator_arch == "dcgan":
            channels, size, _ = data_shape
            self.generator = DCGANGenerator(
                latent_dim, channels, size, generator_hidden, generator_activation
            )
        else:
            self.generator = GeneratorMLP(
                latent_dim,
                tuple(data_shape),
                generator_hidden,
                generator_depth,
                generator_activation,
            )
        self.val_quality = SampleQuality()
        self.test_quality = SampleQuality()

    # ----------------------------------------------------------------- densities
    def log_prior(self, z: Tensor) -> Tensor:
        """Unnormalised ``log p_alpha(z) = f(z) - ||z||^2 / (2 sigma_0^2)``: (B, d) -> (B,)."""
        return self.energy(z) + gaussian_log_prior(z, self.hparams.prior_sigma)

    def log_likelihood(self, x: Tensor, z: Tensor) -> Tensor:
        """``log p(x | z) = log N(x; g(z), sigma_eps^2 I)``: (B, *data), (B, d) -> (B,)."""
        return gaussian_log_likelihood(x, self.generator(z), self.hparams.likelihood_sigma)

    # ----------------------------------------------------------------- sampling
    def _initial_latents(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.hparams.latent_dim, generator=generator, device=self.device)
        return z * self.hparams.prior_sigma

    def _run_chains(
        self, log_prob, n: int, steps: int, step_size: float, generator: torch.Generator | None
    ) -> SamplerResult:
        return langevin(
            log_prob,
            self._initial_latents(n, generator),
            steps,
            step_size,
            mh=self.hparams.sampler == "mala",
            generator=generator,
        )

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> SamplerResult:
        """Short-run chains on ``p_alpha(z)``; result.sample has shape (n, latent_dim)."""
        hp = self.hparams
        return self._run_chains(self.log_prior, n, hp.prior_steps, hp.prior_step_size, generator)

    def sample_posterior(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> SamplerResult:
        """Short-run chains on ``p(z | x)``, one per row of x; sample has shape (B, latent_dim)."""
        hp = self.hparams

        def log_joint(z: Tensor) -> Tensor:
            return self.log_prior(z) + self.log_likelihood(x, z)

        steps, step_size = hp.posterior_steps, hp.posterior_step_size
        return self._run_chains(log_joint, len(x), steps, step_size, generator)

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """Data-space samples ``g(z)``, z from prior Langevin: shape (num_samples, *data_shape)."""
        return self.generator(self.sample_prior(num_samples, generator).sample)

    @torch.no_grad()
    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``g(z+)`` with z+ from posterior Langevin given x: same shape as x."""
        return self.generator(self.sample_posterior(x, generator).sample)

    # ----------------------------------------------------------------- objectives
    def losses_from_latents(self, x: Tensor, z_pos: Tensor, z_neg: Tensor) -> dict[str, Tensor]:
        """Per-sample learning losses given posterior (z_pos) and prior (z_neg) latents.

        Returns:
            ``{"energy": f(z-) - f(z+), "generator": -log p(x | z+)}``, each of shape (B,).
            Their batch means are the two training losses.
        """
        return self._objectives(x, z_pos, z_neg)[0]

    def _objectives(
        self, x: Tensor, z_pos: Tensor, z_neg: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Per-sample losses, and the energies and MSE from the same forward passes for logging."""
        z_pos, z_neg = z_pos.detach(), z_neg.detach()
        f_pos, f_neg = self.energy(z_pos), self.energy(z_neg)
        x_hat = self.generator(z_pos)
        losses = {
            "energy": contrastive_energy_loss(f_pos, f_neg),
            "generator": -gaussian_log_likelihood(x, x_hat, self.hparams.likelihood_sigma),
        }
        logs = {
            "mse": (x_hat.detach() - x).pow(2).mean(),
            "en_pos": -f_pos.detach().mean(),
            "en_neg": -f_neg.detach().mean(),
        }
        return losses, logs

    def learning_losses(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """Per-sample losses of one training iteration on batch x, drawing fresh chains.

        This is the protocol the gradient-variance callback uses: each entry has shape (B,),
        its batch mean is a training loss, and :meth:`gradient_groups` names the network it
        trains.
        """
        return self._losses_and_logs(x, generator)[0]

    def gradient_groups(self) -> dict[str, torch.nn.Module]:
        """Loss name -> the network whose parameters that loss trains."""
        return {"energy": self.energy, "generator": self.generator}

    def _losses_and_logs(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Draw posterior and prior chains; return per-sample losses and values to log."""
        pos = self.sample_posterior(x, generator)
        neg = self.sample_prior(len(x), generator)
        losses, logs = self._objectives(x, pos.sample, neg.sample)
        logs |= {f"posterior_{k}": v for k, v in pos.diagnostics().items()}
        logs |= {f"prior_{k}": v for k, v in neg.diagnostics().items()}
        return losses, logs

    # ----------------------------------------------------------------- Lightning
    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
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

    def _eval_step(self, batch: Tensor, stage: str) -> None:
        batch = batch_data(batch)
        quality = self.val_quality if stage == "val" else self.test_quality
        quality.update(batch, self.sample(len(batch)))
        mse = (self.reconstruct(batch) - batch).pow(2).mean()
        self.log(f"{stage}/mse", mse, sync_dist=True)

    def _eval_epoch_end(self, stage: str) -> None:
        quality = self.val_quality if stage == "val" else self.test_quality
        values = quality.compute()
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, prog_bar=stage == "val")
        quality.reset()

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        """``batch`` holds sample indices (datamodules.SampleRequests); returns len(batch) samples."""
        return self.sample(len(batch))

    def configure_optimizers(self):
        hp = self.hparams
        opt_ebm = torch.optim.Adam(self.energy.parameters(), lr=hp.energy_lr, betas=hp.betas)
        opt_gen = torch.optim.Adam(self.generator.parameters(), lr=hp.generator_lr, betas=hp.betas)
        schedulers = [
            torch.optim.lr_scheduler.ExponentialLR(o, hp.lr_decay) for o in (opt_ebm, opt_gen)
        ]
        return [opt_ebm, opt_gen], schedulers


def _validate(args: dict) -> None:
    """Check hyperparameters; each error names the argument, the value and what is allowed."""
    problems = []
    shape = tuple(args["data_shape"])
    if len(shape) == 0 or any(int(d) < 1 for d in shape):
        problems.append(f"data_shape must be a non-empty tuple of positive sizes, got {shape}")
    positive_ints = ("latent_dim", "energy_hidden", "generator_hidden")
    positive_floats = (
        "prior_sigma",
        "likelihood_sigma",
        "prior_step_size",
        "posterior_step_size",
        "energy_lr",
        "generator_lr",
    )
    for name in positive_ints + positive_floats:
        if not args[name] > 0:
            problems.append(f"{name} must be > 0, got {args[name]}")
    for name in ("energy_depth", "generator_depth", "prior_steps", "posterior_steps"):
        if args[name] < 0:
            problems.append(f"{name} must be >= 0, got {args[name]}")
    if args["sampler"] not in ("langevin", "mala"):
        problems.append(f"sampler must be 'langevin' or 'mala', got {args['sampler']!r}")
    if args["generator_arch"] not in ("mlp", "dcgan"):
        problems.append(f"generator_arch must be 'mlp' or 'dcgan', got {args['generator_arch']!r}")
    elif args["generator_arch"] == "dcgan" and not (
        len(shape) == 3 and shape[1] == shape[2] and shape[0] in (1, 3)
    ):
        problems.append(
            f"generator_arch='dcgan' needs square images, data_shape (C, S, S) with C = 1 or 3, "
            f"got {shape}; use generator_arch='mlp' for other data"
        )
    if not all(0.0 <= b < 1.0 for b in args["betas"]) or len(args["betas"]) != 2:
        problems.append(f"betas must be two numbers in [0, 1), got {args['betas']}")
    if not 0.0 < args["lr_decay"] <= 1.0:
        problems.append(f"lr_decay (ExponentialLR gamma) must be in (0, 1], got {args['lr_decay']}")
    if args["grad_clip"] is not None and not args["grad_clip"] > 0:
        problems.append(f"grad_clip must be > 0 or None, got {args['grad_clip']}")
    if problems:
        raise ValueError("LatentEBM: " + "; ".join(problems))
