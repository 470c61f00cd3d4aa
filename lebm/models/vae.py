"""Variational autoencoder (Kingma and Welling 2014; Rezende et al. 2014): the zoo's baseline.

Model and objective::

    p(z) = N(0, I),  p(x | z) = likelihood(x; decoder(z)),  q(z | x) = N(mu(x), diag sigma^2(x))
    -ELBO(x) = -E_q[log p(x | z)] + beta_t KL(q(z | x) || p(z))      (one reparameterised z)

with ``(mu, log sigma^2) = encoder(x)`` split in halves and ``beta_t = beta min(1, t / T_warm)``
at optimizer step t (linear KL warm-up; ``T_warm = 0``: ``beta_t = beta``). One optimizer
(Adam) on every parameter; automatic optimization.

Evaluation (beyond the base's MMD / SWD of samples; :mod:`lebm.models.autoencoder_base`, shared
with the Langevin autoencoder): reconstruction ``mse`` from the posterior mean, ``elbo`` (nats
per data point, beta = 1, the learned q), ``elbo_fixed_q`` (q = N(mu(x), 0.05^2 I), the LAE
paper's bound) and in the test stage the importance-weighted bound with the learned q,
logged as ``nll`` (its negative) and ``bpd = nll / (D ln 2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lebm.components import EncoderFactory, GeneratorFactory, as_factory
from lebm.data import batch_data
from lebm.models.autoencoder_base import AutoencoderBase, Likelihood, SampleFrom
from lebm.nets import EncoderMLP


class VAE(AutoencoderBase):
    """Gaussian-posterior VAE with a choice of likelihood, KL weight and KL warm-up.

    Defaults suit 2-D toy data (standardised moons): latent size 2, MLP encoder and decoder
    128-128 (GELU), Gaussian likelihood with sigma 0.1, Adam lr 1e-3.

    Args:
        data_shape: shape of one data point; linked from the datamodule by the CLI.
        latent_dim: size of z.
        encoder: ``q(z | x)``'s network: a class called as ``encoder(data_shape, 2 *
            latent_dim)`` mapping (B, *data_shape) -> (B, 2 latent_dim) (mean, then
            log-variance); None: :class:`lebm.nets.EncoderMLP`; :class:`lebm.nets.ConvEncoder`
            for images.
        decoder: a class called as ``decoder(latent_dim, data_shape)`` mapping (B, latent_dim)
            -> (B, *data_shape), the likelihood's parameter (gaussian mean, bernoulli logits,
            logistic location); None: :class:`lebm.nets.GeneratorMLP`;
            :class:`lebm.nets.DCGANGenerator` for images (``output_activation: none`` for
            bernoulli logits).
        likelihood: ``"gaussian"``, ``"bernoulli"`` (data in [-1, 1], target ``(x + 1) / 2``)
            or ``"logistic"`` (discretised, data in [-1, 1], 256 bins, learned scalar scale).
        likelihood_sigma: gaussian sigma; None learns a scalar ``log sigma``. Ignored by the
            other likelihoods.
        initial_scale: start value of a learned scale (gaussian sigma when
            ``likelihood_sigma`` is None; the logistic's s).
        beta: weight of the KL term once warmed up (1 = the ELBO).
        kl_warmup_steps: the KL weight rises linearly from 0 to ``beta`` over this many
            optimizer steps (0 = no warm-up).
        lr: Adam learning rate.
        fixed_q_sigma: sigma of the fixed-variance q around mu(x) of ``elbo_fixed_q`` (the LAE
            paper's bound, for comparison with :class:`~lebm.models.LangevinAutoencoder`).
        iwae_samples: K of the importance-weighted bound (test stage).
        iwae_chunk: importance samples decoded at a time (memory: iwae_chunk x batch).
        sample_from: ``"prior"`` (z ~ N(0, I)) or ``"code_gaussian"`` (z from a Gaussian fitted
            to the training codes; :class:`~lebm.models.autoencoder_base.AutoencoderBase`).
        code_momentum: rate of the running code moments behind ``"code_gaussian"``.
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] = (2,),
        latent_dim: int = 2,
        encoder: EncoderFactory | None = None,
        decoder: GeneratorFactory | None = None,
        likelihood: Likelihood = "gaussian",
        likelihood_sigma: float | None = 0.1,
        initial_scale: float = 0.1,
        beta: float = 1.0,
        kl_warmup_steps: int = 0,
        lr: float = 1e-3,
        fixed_q_sigma: float = 0.05,
        iwae_samples: int = 100,
        iwae_chunk: int = 25,
        sample_from: SampleFrom = "prior",
        code_momentum: float = 0.01,
    ) -> None:
        super().__init__(
            data_shape,
            latent_dim,
            decoder,
            likelihood,
            likelihood_sigma,
            initial_scale,
            fixed_q_sigma,
            iwae_samples,
            iwae_chunk,
            sample_from,
            code_momentum,
        )
        _validate(locals())
        self.encoder = as_factory(encoder or EncoderMLP, "encoder")(self.data_shape, 2 * latent_dim)

    # ----------------------------------------------------------------- encoder / decoder
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, log sigma^2)`` of q(z | x), each of shape (B, latent_dim)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    # ----------------------------------------------------------------- objectives
    def kl_weight(self, step: int) -> float:
        """``beta min(1, step / kl_warmup_steps)`` (``beta`` without warm-up)."""
        hp = self.hparams
        if hp.kl_warmup_steps == 0:
            return hp.beta
        return hp.beta * min(1.0, step / hp.kl_warmup_steps)

    def learning_losses(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The per-sample training loss (-ELBO at the current KL weight), once per group: both
        networks minimise the same objective."""
        loss = self.negative_elbo(x, generator, self.kl_weight(self.global_step))
        return {"encoder": loss, "decoder": loss}

    def gradient_groups(self) -> dict[str, nn.Module]:
        # a learned likelihood scale belongs to the decoder's side of the model
        return {"encoder": self.encoder, "decoder": nn.ModuleList([self.decoder, self.observation])}

    # ----------------------------------------------------------------- Lightning
    def training_step(self, batch, batch_idx: int) -> Tensor:
        x = batch_data(batch)
        weight = self.kl_weight(self.global_step)
        q = self.encode(x)
        self.track_codes(q[0])
        log_lik, kl, output = self.elbo_terms(x, q=q)
        loss = (-log_lik + weight * kl).mean()
        logs = {
            "loss_recon": -log_lik.detach().mean(),
            "loss_kl": kl.detach().mean(),
            "kl_weight": torch.tensor(weight),
            "mse": (self.observation.mean(output.detach()) - x).pow(2).mean(),
        }
        self.log_dict({f"train/{k}": v for k, v in self._log_likelihood_scale(logs).items()})
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _validate(args: dict) -> None:
    """Check the VAE's own hyperparameters (the shared ones: :class:`AutoencoderBase`)."""
    problems = [f"lr must be > 0, got {args['lr']}"] if not args["lr"] > 0 else []
    for name in ("beta", "kl_warmup_steps"):
        if not args[name] >= 0:
            problems.append(f"{name} must be >= 0, got {args[name]}")
    if problems:
        raise ValueError("VAE: " + "; ".join(problems))
