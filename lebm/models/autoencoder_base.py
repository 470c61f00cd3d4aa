"""What the VAE and the Langevin autoencoder share: a decoder under a N(0, I) prior, the
likelihood, and evaluation through a Gaussian q(z | x).

Model::

    p(z) = N(0, I),   p(x | z) = likelihood(x; decoder(z))

A subclass says how it infers z by implementing :meth:`AutoencoderBase.encode`, which returns
the mean and log-variance of the Gaussian ``q(z | x)`` its evaluation bounds use: the VAE's own
amortised posterior, or for the Langevin autoencoder the fixed-variance Gaussian around its
encoder output that the LAE paper's numbers use. Every bound below is then computed the same
way for both models, so their numbers compare:

* ``elbo``: ``E_q[log p(x | z)] - KL(q || p)``, one reparameterised z (nats per data point);
* ``elbo_fixed_q``: the same with ``q = N(mean(x), fixed_q_sigma^2 I)`` (the LAE paper's
  reported bound, sigma 0.05), for both models;
* ``nll`` (test stage only): minus the importance-weighted bound (Burda et al. 2016)
  ``log (1/K) sum_k p(x, z_k) / q(z_k | x)``, ``z_k ~ q``; ``bpd = nll / (D ln 2)``;
* ``mse``: reconstruction error from the decoded mean of q.

Samples decode ``z ~ N(0, I)``, the model's prior (``sample_from="prior"``), or, with
``sample_from="code_gaussian"``, z from a Gaussian fitted to the training codes (the means of q
seen in training): ex-post density estimation (Ghosh et al. 2020, "From variational to
deterministic autoencoders"), for models whose codes drift away from N(0, I). The fit is kept
either way (a running mean and second moment of the codes, in the checkpoint), so a trained
model can be sampled both ways.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from lebm.components import GeneratorFactory, as_factory
from lebm.losses import (
    bernoulli_log_likelihood,
    diagonal_gaussian_log_density,
    discretized_logistic_log_likelihood,
    gaussian_kl_to_standard_normal,
    gaussian_log_likelihood,
)
from lebm.models.base import GenerativeModel
from lebm.nets import GeneratorMLP

Likelihood = Literal["gaussian", "bernoulli", "logistic"]
LIKELIHOODS = ("gaussian", "bernoulli", "logistic")
SampleFrom = Literal["prior", "code_gaussian"]
SAMPLE_FROM = ("prior", "code_gaussian")


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


class AutoencoderBase(GenerativeModel):
    """Decoder, N(0, I) prior, likelihood and the bounds of the module docstring.

    Args:
        data_shape: shape of one data point; linked from the datamodule by the CLI.
        latent_dim: size of z.
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
        fixed_q_sigma: sigma of the fixed-variance q of ``elbo_fixed_q``.
        iwae_samples: K of the importance-weighted bound (test stage).
        iwae_chunk: importance samples decoded at a time (memory: iwae_chunk x batch).
        sample_from: where :meth:`sample` draws z: ``"prior"`` (N(0, I), the model) or
            ``"code_gaussian"`` (N(m, C) fitted to the training codes; not the model's prior).
        code_momentum: rate of the running code moments: each training batch moves them by
            ``max(code_momentum, 1 / n)`` towards its own (n: batches seen), so the first
            ``1 / code_momentum`` batches are averaged exactly and later ones exponentially.

    Attributes:
        code_mean, code_second: running mean (d,) and second moment E[z z^T] (d, d) of the
            training codes (buffers; N(0, I)'s until the first training batch). Under DDP
            buffers are broadcast from rank 0 at every forward, so rank 0's fit is the one kept.
        code_count: training batches seen (a buffer).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...],
        latent_dim: int,
        decoder: GeneratorFactory | None,
        likelihood: Likelihood,
        likelihood_sigma: float | None,
        initial_scale: float,
        fixed_q_sigma: float,
        iwae_samples: int,
        iwae_chunk: int,
        sample_from: SampleFrom = "prior",
        code_momentum: float = 0.01,
    ) -> None:
        super().__init__(data_shape)
        _validate_common(type(self).__name__, locals())
        self.latent_dim = latent_dim
        self.decoder = as_factory(decoder or GeneratorMLP, "decoder")(latent_dim, self.data_shape)
        self.observation = Observation(likelihood, likelihood_sigma, initial_scale)
        self.sample_from = sample_from
        self.code_momentum = code_momentum
        self.register_buffer("code_mean", torch.zeros(latent_dim))
        self.register_buffer("code_second", torch.eye(latent_dim))
        self.register_buffer("code_count", torch.zeros((), dtype=torch.long))

    # ----------------------------------------------------------------- to implement
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, log-variance)`` of the Gaussian q(z | x) the bounds use, each (B, latent_dim)."""
        raise NotImplementedError(f"{type(self).__name__} must implement encode()")

    # ----------------------------------------------------------------- generation
    @torch.no_grad()
    def track_codes(self, codes: Tensor) -> None:
        """Move the running code moments towards a training batch's codes (B, latent_dim)."""
        dtype = self.code_mean.dtype
        with torch.autocast(codes.device.type, enabled=False):  # moments in the buffers' dtype
            codes = codes.detach().to(dtype)
            second = codes.T @ codes / len(codes)
        self.code_count += 1
        rate = self.code_count.reciprocal().clamp(min=self.code_momentum).to(dtype)  # no sync
        self.code_mean.lerp_(codes.mean(0), rate)
        self.code_second.lerp_(second, rate)

    def code_covariance(self) -> Tensor:
        """``E[z z^T] - m m^T`` of the running code moments, (d, d)."""
        return self.code_second - torch.outer(self.code_mean, self.code_mean)

    @torch.no_grad()
    def sample_latents(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """z for :meth:`sample`, (num_samples, latent_dim): N(0, I) or, with
        ``sample_from="code_gaussian"``, N(m, C) of the running code moments (C's square root
        from its eigendecomposition, negative round-off eigenvalues clamped to 0)."""
        eps = torch.randn(num_samples, self.latent_dim, generator=generator, device=self.device)
        if self.sample_from == "prior":
            return eps
        eigenvalues, vectors = torch.linalg.eigh(self.code_covariance())
        root = vectors * eigenvalues.clamp(min=0.0).sqrt()
        return self.code_mean + eps @ root.T

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``mean(decoder(z))``, z from :meth:`sample_latents`: (num_samples, *data_shape)."""
        return self.observation.mean(self.decoder(self.sample_latents(num_samples, generator)))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before the code moments existed load with N(0, I)'s."""
        state = checkpoint.get("state_dict", {})
        defaults = {
            "code_mean": torch.zeros(self.latent_dim),
            "code_second": torch.eye(self.latent_dim),
            "code_count": torch.zeros((), dtype=torch.long),
        }
        for name, value in defaults.items():
            state.setdefault(name, value)
        super().on_load_checkpoint(checkpoint)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoded mean of q(z | x): same shape as x."""
        return self.observation.mean(self.decoder(self.encode(x)[0]))

    @torch.no_grad()
    def interpolate(self, x_a: Tensor, x_b: Tensor, num_points: int = 8) -> Tensor:
        """Decoded straight lines between the latent means of ``x_a`` and ``x_b`` (each (B,
        *data_shape)): shape (B, num_points, *data_shape), ends included."""
        z_a, z_b = self.encode(x_a)[0], self.encode(x_b)[0]
        w = torch.linspace(0.0, 1.0, num_points, device=z_a.device, dtype=z_a.dtype)
        z = z_a[:, None] + w[None, :, None] * (z_b - z_a)[:, None]  # (B, P, d)
        decoded = self.observation.mean(self.decoder(z.flatten(0, 1)))
        return decoded.view(len(x_a), num_points, *self.data_shape)

    # ----------------------------------------------------------------- bounds
    def _posterior_draws(
        self, mu: Tensor, logvar: Tensor, num: int | None, generator: torch.Generator | None
    ) -> Tensor:
        """``z = mu + sigma eps``: shape (B, d), or (num, B, d) when ``num`` is given."""
        shape = mu.shape if num is None else (num, *mu.shape)
        eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def elbo_terms(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        q: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One reparameterised draw per data point from q (default: :meth:`encode`).

        Returns:
            ``log p(x | z)`` (B,), ``KL(q(z | x) || p(z))`` (B,), and the decoder output
            (B, *data_shape).
        """
        mu, logvar = self.encode(x) if q is None else q
        output = self.decoder(self._posterior_draws(mu, logvar, None, generator))
        return (
            self.observation.log_prob(x, output),
            gaussian_kl_to_standard_normal(mu, logvar),
            output,
        )

    def negative_elbo(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        kl_weight: float = 1.0,
        q: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        """``-log p(x | z) + kl_weight KL`` per data point (B,); kl_weight 1 is the -ELBO."""
        log_lik, kl, _ = self.elbo_terms(x, generator, q)
        return -log_lik + kl_weight * kl

    def fixed_q(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``q = N(mean(x), fixed_q_sigma^2 I)`` around the mean of :meth:`encode`."""
        mu = self.encode(x)[0]
        return mu, torch.full_like(mu, 2.0 * math.log(self.hparams.fixed_q_sigma))

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

    @torch.no_grad()
    def evaluation_metrics(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """``mse`` of the reconstruction, ``elbo`` and ``elbo_fixed_q`` (nats per data point);
        in the test stage also ``nll`` (minus the K-sample importance-weighted bound) and
        ``bpd`` = nll / (D ln 2), D the number of data dimensions."""
        metrics = {
            "mse": (self.reconstruct(x) - x).pow(2).mean(),
            "elbo": -self.negative_elbo(x, generator).mean(),
            "elbo_fixed_q": -self.negative_elbo(x, generator, q=self.fixed_q(x)).mean(),
        }
        if self._trainer is not None and self.trainer.testing:
            nll = -self.importance_weighted_bound(x, generator=generator).mean()
            metrics |= {"nll": nll, "bpd": nll / (math.prod(self.data_shape) * math.log(2.0))}
        return metrics

    def _log_likelihood_scale(self, logs: dict[str, Tensor]) -> dict[str, Tensor]:
        """``logs`` plus the learned likelihood scale, when there is one."""
        if self.observation.log_scale is not None:
            logs["likelihood_scale"] = self.observation.log_scale.detach().exp().squeeze()
        return logs


def _validate_common(model: str, args: dict) -> None:
    """Check the shared hyperparameters; the error names the argument, value and range."""
    problems = []
    if args["likelihood"] not in LIKELIHOODS:
        problems.append(f"likelihood must be one of {LIKELIHOODS}, got {args['likelihood']!r}")
    if args["likelihood_sigma"] is not None and not args["likelihood_sigma"] > 0:
        problems.append(f"likelihood_sigma must be > 0 or None, got {args['likelihood_sigma']}")
    for name in ("latent_dim", "initial_scale", "fixed_q_sigma", "iwae_samples", "iwae_chunk"):
        if not args[name] > 0:
            problems.append(f"{name} must be > 0, got {args[name]}")
    if args["sample_from"] not in SAMPLE_FROM:
        problems.append(f"sample_from must be one of {SAMPLE_FROM}, got {args['sample_from']!r}")
    if not 0 < args["code_momentum"] <= 1:
        problems.append(f"code_momentum must be in (0, 1], got {args['code_momentum']}")
    if problems:
        raise ValueError(f"{model}: " + "; ".join(problems))
