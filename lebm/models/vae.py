"""Variational autoencoder (Kingma and Welling 2014; Rezende et al. 2014): the zoo's baseline.

Model and objective::

    p(z) = N(0, I),  p(x | z) = likelihood(x; decoder(z)),  q(z | x) = N(mu(x), diag sigma^2(x))
    -ELBO(x) = -E_q[log p(x | z)] + beta_t KL(q(z | x) || p(z))      (one reparameterised z)

with ``(mu, log sigma^2) = encoder(x)`` split in halves and ``beta_t = beta min(1, t / T_warm)``
at optimizer step t (linear KL warm-up; ``T_warm = 0``: ``beta_t = beta``). One optimizer
(Adam) on every parameter; automatic optimization.

Evaluation (beyond the base's MMD / SWD of samples): reconstruction ``mse`` from the posterior
mean, ``elbo`` (nats per data point, beta = 1), and in the test stage only the importance-weighted
bound (Burda et al. 2016) ``log p(x) >= log (1/K) sum_k p(x, z_k) / q(z_k | x)``,
``z_k ~ q(z | x)``, logged as ``nll`` (its negative) and ``bpd = nll / (D ln 2)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from lebm.components import EncoderFactory, GeneratorFactory, as_factory
from lebm.data import batch_data
from lebm.losses import (
    bernoulli_log_likelihood,
    diagonal_gaussian_log_density,
    discretized_logistic_log_likelihood,
    gaussian_kl_to_standard_normal,
    gaussian_log_likelihood,
)
from lebm.models.base import GenerativeModel
from lebm.nets import EncoderMLP, GeneratorMLP

Likelihood = Literal["gaussian", "bernoulli", "logistic"]
LIKELIHOODS = ("gaussian", "bernoulli", "logistic")


class Observation(nn.Module):
    """``p(x | o)`` given the decoder output o, shape (B, *data_shape): the one place the
    likelihood is branched on.

    - ``"gaussian"``: ``N(x; o, sigma^2 I)``, sigma fixed (``sigma`` a float) or a learned scalar;
    - ``"bernoulli"``: o are logits, the target is ``(x + 1) / 2`` (data in [-1, 1]);
    - ``"logistic"``: discretised logistic with location o and a learned scalar scale
      (data in [-1, 1], 256 bins).

    Args:
        likelihood: one of ``"gaussian"``, ``"bernoulli"``, ``"logistic"``.
        sigma: gaussian's fixed sigma; None learns it. Unused by the other likelihoods.
        initial_scale: start value of a learned scale (gaussian sigma, logistic s).

    Attributes:
        log_scale: the learned ``log sigma`` / ``log s`` (a parameter of shape (1,)), or None.
    """

    def __init__(self, likelihood: Likelihood, sigma: float | None, initial_scale: float) -> None:
        super().__init__()
        self.likelihood = likelihood
        self.sigma = sigma
        learned = likelihood == "logistic" or (likelihood == "gaussian" and sigma is None)
        # shape (1,), not 0-d: lebm.grad_stats flattens each parameter's gradients from dim 1
        start = torch.full((1,), math.log(initial_scale))
        self.log_scale = nn.Parameter(start) if learned else None

    def log_prob(self, x: Tensor, output: Tensor) -> Tensor:
        """``log p(x | o)`` per sample: (B, *data), (B, *data) -> (B,)."""
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(x, output)
        if self.likelihood == "logistic":
            return discretized_logistic_log_likelihood(x, output, self.log_scale)
        sigma = self.sigma if self.log_scale is None else self.log_scale.exp()
        return gaussian_log_likelihood(x, output, sigma)

    def mean(self, output: Tensor) -> Tensor:
        """The decoded point in data space: gaussian o; bernoulli ``2 sigmoid(o) - 1``; logistic
        the location o clamped to [-1, 1] (the range its bins cover)."""
        if self.likelihood == "bernoulli":
            return 2.0 * torch.sigmoid(output) - 1.0
        if self.likelihood == "logistic":
            return output.clamp(-1.0, 1.0)
        return output


class VAE(GenerativeModel):
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
        iwae_samples: K of the importance-weighted bound (test stage).
        iwae_chunk: importance samples decoded at a time (memory: iwae_chunk x batch).
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
        iwae_samples: int = 100,
        iwae_chunk: int = 25,
    ) -> None:
        super().__init__(data_shape)
        _validate(locals())
        self.latent_dim = latent_dim
        self.encoder = as_factory(encoder or EncoderMLP, "encoder")(self.data_shape, 2 * latent_dim)
        self.decoder = as_factory(decoder or GeneratorMLP, "decoder")(latent_dim, self.data_shape)
        self.observation = Observation(likelihood, likelihood_sigma, initial_scale)

    # ----------------------------------------------------------------- encoder / decoder
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, log sigma^2)`` of q(z | x), each of shape (B, latent_dim)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def _posterior_draws(
        self, mu: Tensor, logvar: Tensor, num: int | None, generator: torch.Generator | None
    ) -> Tensor:
        """``z = mu + sigma eps``: shape (B, d), or (num, B, d) when ``num`` is given."""
        shape = mu.shape if num is None else (num, *mu.shape)
        eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``mean(decoder(z))``, ``z ~ N(0, I)``: (num_samples, *data_shape)."""
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device=self.device)
        return self.observation.mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoded posterior mean ``mean(decoder(mu(x)))``: same shape as x."""
        return self.observation.mean(self.decoder(self.encode(x)[0]))

    # ----------------------------------------------------------------- objectives
    def kl_weight(self, step: int) -> float:
        """``beta min(1, step / kl_warmup_steps)`` (``beta`` without warm-up)."""
        hp = self.hparams
        if hp.kl_warmup_steps == 0:
            return hp.beta
        return hp.beta * min(1.0, step / hp.kl_warmup_steps)

    def elbo_terms(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One reparameterised draw per data point.

        Returns:
            ``log p(x | z)`` (B,), ``KL(q(z | x) || p(z))`` (B,), and the decoder output
            (B, *data_shape).
        """
        mu, logvar = self.encode(x)
        output = self.decoder(self._posterior_draws(mu, logvar, None, generator))
        return (
            self.observation.log_prob(x, output),
            gaussian_kl_to_standard_normal(mu, logvar),
            output,
        )

    def negative_elbo(
        self, x: Tensor, generator: torch.Generator | None = None, kl_weight: float = 1.0
    ) -> Tensor:
        """``-log p(x | z) + kl_weight KL`` per data point (B,); kl_weight 1 is the -ELBO."""
        log_lik, kl, _ = self.elbo_terms(x, generator)
        return -log_lik + kl_weight * kl

    def importance_weighted_bound(
        self, x: Tensor, num_samples: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """``log (1/K) sum_k p(x | z_k) p(z_k) / q(z_k | x)``, ``z_k ~ q(z | x)``, per data point.

        A lower bound on log p(x) that rises with K towards it (K = 1: the ELBO in expectation).
        Importance samples are decoded ``iwae_chunk`` at a time.

        Args:
            x: data, shape (B, *data_shape).
            num_samples: K (default ``iwae_samples``).
            generator: seeds the draws.

        Returns:
            The bound, shape (B,), in nats.
        """
        k_total = num_samples or self.hparams.iwae_samples
        mu, logvar = self.encode(x)
        log_weights = []
        for start in range(0, k_total, self.hparams.iwae_chunk):
            k = min(self.hparams.iwae_chunk, k_total - start)
            z = self._posterior_draws(mu, logvar, k, generator)  # (k, B, d)
            output = self.decoder(z.flatten(0, 1))
            x_rep = x.expand(k, *x.shape).flatten(0, 1)
            log_lik = self.observation.log_prob(x_rep, output).view(k, len(x))
            zeros = torch.zeros_like(mu)
            log_prior = diagonal_gaussian_log_density(z, zeros, zeros)
            log_q = diagonal_gaussian_log_density(z, mu, logvar)
            log_weights.append(log_lik + log_prior - log_q)
        return torch.cat(log_weights).logsumexp(0) - math.log(k_total)

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
        log_lik, kl, output = self.elbo_terms(x)
        loss = (-log_lik + weight * kl).mean()
        logs = {
            "loss_recon": -log_lik.detach().mean(),
            "loss_kl": kl.detach().mean(),
            "kl_weight": torch.tensor(weight),
            "mse": (self.observation.mean(output.detach()) - x).pow(2).mean(),
        }
        if self.observation.log_scale is not None:
            logs["likelihood_scale"] = self.observation.log_scale.detach().exp().squeeze()
        self.log_dict({f"train/{k}": v for k, v in logs.items()})
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @torch.no_grad()
    def evaluation_metrics(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """``mse`` of the reconstruction from the posterior mean, ``elbo`` (nats per data point);
        in the test stage also ``nll`` (minus the K-sample importance-weighted bound) and
        ``bpd`` = nll / (D ln 2), D the number of data dimensions."""
        metrics = {
            "mse": (self.reconstruct(x) - x).pow(2).mean(),
            "elbo": -self.negative_elbo(x, generator).mean(),
        }
        if self._trainer is not None and self.trainer.testing:
            nll = -self.importance_weighted_bound(x, generator=generator).mean()
            metrics |= {"nll": nll, "bpd": nll / (math.prod(self.data_shape) * math.log(2.0))}
        return metrics

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _validate(args: dict) -> None:
    """Check hyperparameters; each error names the argument, the value and what is allowed."""
    problems = []
    if args["likelihood"] not in LIKELIHOODS:
        problems.append(f"likelihood must be one of {LIKELIHOODS}, got {args['likelihood']!r}")
    if args["likelihood_sigma"] is not None and not args["likelihood_sigma"] > 0:
        problems.append(f"likelihood_sigma must be > 0 or None, got {args['likelihood_sigma']}")
    for name in ("latent_dim", "initial_scale", "lr", "iwae_samples", "iwae_chunk"):
        if not args[name] > 0:
            problems.append(f"{name} must be > 0, got {args[name]}")
    for name in ("beta", "kl_warmup_steps"):
        if not args[name] >= 0:
            problems.append(f"{name} must be >= 0, got {args[name]}")
    if problems:
        raise ValueError("VAE: " + "; ".join(problems))
