"""Langevin autoencoder (Taniguchi, Iwasawa, Kumagai, Matsuo; NeurIPS 2022): amortised Langevin
dynamics (ALD) for a deep latent-variable model, written from the paper.

Model: ``p(z) = N(0, I)``, ``p(x | z) = likelihood(x; decoder_theta(z))`` (the VAE's decoders).
The encoder is ``z = Phi g_psi(x)``: a feature network ``g_psi`` (B, *data) -> (B, F) and a
last linear layer ``Phi`` (d x F, no bias). Only Phi is sampled. On a minibatch of n points the
potential is::

    V(Phi) = - sum_i log p(x_i, z_i = Phi g_psi(x_i))

and each training iteration runs ``burn_in + T`` MCMC transitions of Phi on ``exp(-V)`` (the
sampler of ``sampler``: Metropolis-adjusted Langevin by default, one MH decision for the whole
Phi), discards the first ``burn_in`` states, and takes one optimizer step on theta, psi (and a
learned likelihood scale) for the potential averaged over the T kept states,
``(1 / T) sum_t V(Phi_t) / n``. Phi persists across iterations: it is a Markov chain whose
stationary law is the posterior over latents when the feature width F is at least n (the
paper's theorem; a warning says when the batch is wider).

Step sizes are lebm's convention on the batch-sum potential: ``Phi' = Phi - s grad V +
sqrt(2 s) eps``. The paper's proposal ``N(Phi - eta grad V, 2 eta I)`` is ``s = eta``; the
official code differentiates the batch-mean potential with ``step`` and adds noise of std
``sqrt(2 step / n)``, i.e. ``s = step / n`` (its 1e-4 at n = 100 is s = 1e-6).

Cost per iteration: ``burn_in + T`` forward+backward passes of the decoder for the chain (on
features computed once, without a graph to psi) and one batched forward+backward over the T
kept states for the parameter update.

Evaluation (:mod:`lebm.models.autoencoder_base`): the LAE has no q(z | x) of its own, so its
``elbo`` and test ``nll`` (importance-weighted) use ``q = N(Phi g_psi(x), fixed_q_sigma^2 I)``
with sigma 0.05, the fixed-variance Gaussian of the paper's reported numbers; ``elbo`` and
``elbo_fixed_q`` are then the same bound.
"""

from __future__ import annotations

import math

import torch
from jsonargparse import lazy_instance
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from lebm.components import EncoderFactory, GeneratorFactory, as_factory, as_instance
from lebm.data import batch_data
from lebm.models.autoencoder_base import AutoencoderBase, Likelihood, SampleFrom
from lebm.nets import EncoderMLP
from lebm.samplers import MALA, Sampler, SamplerResult

DEFAULT_SAMPLER = lazy_instance(MALA, n_steps=2, step_size=1e-5)


class LangevinAutoencoder(AutoencoderBase):
    """Langevin autoencoder: MCMC on the encoder's last linear layer, gradient on the rest.

    Defaults suit 2-D toy data (standardised moons, batch 128): latent size 2, feature width
    256, MLP feature network and decoder 128-128 (GELU), Gaussian likelihood with sigma 0.1,
    MALA with T = 2 kept steps after 1 burn-in step, Adam lr 1e-3.

    Args:
        data_shape: shape of one data point; linked from the datamodule by the CLI.
        latent_dim: size of z (rows of Phi).
        features: F, the width of ``g_psi(x)`` (columns of Phi). The stationary law of Phi is
            the posterior over the batch's latents only when F >= batch size.
        encoder: the feature network ``g_psi``: a class called as ``encoder(data_shape,
            features)`` mapping (B, *data_shape) -> (B, features); None:
            :class:`lebm.nets.EncoderMLP`; :class:`lebm.nets.ConvEncoder` for images.
        decoder: as :class:`~lebm.models.VAE` (``decoder(latent_dim, data_shape)``).
        likelihood: ``"gaussian"``, ``"bernoulli"`` or ``"logistic"`` (see the VAE).
        likelihood_sigma: gaussian sigma; None learns it.
        initial_scale: start value of a learned likelihood scale.
        sampler: MCMC on Phi (one chain), by class path: :class:`lebm.samplers.MALA`
            (default; the paper's MH-corrected ALD), :class:`lebm.samplers.Langevin`
            (unadjusted, the official code's default) or :class:`lebm.samplers.HMC`. Its
            ``n_steps`` is T, the steps whose potential is averaged; its step size is ``s`` on
            the batch-sum potential (module docstring).
        burn_in: transitions run before the T kept ones each iteration (discarded).
        target_acceptance: None keeps the sampler's step size fixed. A value in (0, 1) adapts
            it after every training iteration, ``log s += adapt_rate (acceptance - target)``
            (Robbins-Monro on the MH acceptance; MH samplers only), so the chain keeps moving
            as the posterior sharpens during training; not in the paper. The current step size
            is the buffer ``step_size`` (checkpointed) and is logged as ``train/step_size``.
        adapt_rate: the adaptation's gain.
        phi_prior_std: None (the paper): Phi has a flat prior, so the ``features - rank``
            directions of Phi that the batch's features do not see feel no force and
            random-walk (``||Phi||`` grows like ``sqrt(t)``), and when the features later turn
            into them the codes jump. A value sigma adds a Gaussian prior ``N(0, sigma^2 I)``
            on Phi to the chain's target, ``V(Phi) + ||Phi||^2 / (2 sigma^2)``: those
            directions become an Ornstein-Uhlenbeck process with stationary std sigma, at the
            price of a pull of the codes towards 0 that is small when sigma is large against
            the spread of Phi the likelihood allows. Not in the paper.
        lr: Adam learning rate of theta, psi and a learned likelihood scale.
        fixed_q_sigma: sigma of the evaluation q around ``Phi g_psi(x)`` (paper: 0.05).
        iwae_samples: K of the importance-weighted bound (test stage).
        iwae_chunk: importance samples decoded at a time.
        sample_from: ``"prior"`` (z ~ N(0, I)) or ``"code_gaussian"`` (z from a Gaussian fitted
            to the training codes; :class:`~lebm.models.autoencoder_base.AutoencoderBase`).
        code_momentum: rate of the running code moments behind ``"code_gaussian"``.

    Attributes:
        phi: the sampled layer, a buffer of shape (latent_dim, features) (saved in
            checkpoints; no optimizer touches it).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] = (2,),
        latent_dim: int = 2,
        features: int = 256,
        encoder: EncoderFactory | None = None,
        decoder: GeneratorFactory | None = None,
        likelihood: Likelihood = "gaussian",
        likelihood_sigma: float | None = 0.1,
        initial_scale: float = 0.1,
        sampler: Sampler = DEFAULT_SAMPLER,
        burn_in: int = 1,
        target_acceptance: float | None = None,
        adapt_rate: float = 0.05,
        phi_prior_std: float | None = None,
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
        self.encoder = as_factory(encoder or EncoderMLP, "encoder")(self.data_shape, features)
        self.sampler = as_instance(sampler, Sampler, "sampler")
        if self.sampler.n_steps < 1:
            raise ValueError(
                "LangevinAutoencoder: sampler.n_steps is T, the number of ALD steps whose "
                f"potential is averaged; it must be >= 1, got {self.sampler.n_steps}"
            )
        # nn.Linear's initialisation of a (latent_dim x features) weight: U(-1/sqrt(F), 1/sqrt(F))
        if target_acceptance is not None and not getattr(self.sampler, "mh", True):
            raise ValueError(
                "LangevinAutoencoder: target_acceptance adapts the step size to an MH "
                f"acceptance rate, but {self.sampler!r} has no MH test; use lebm.samplers.MALA "
                "or HMC, or set target_acceptance: null"
            )
        self.register_buffer("step_size", torch.tensor(self.sampler.step_size))
        bound = 1.0 / math.sqrt(features)
        self.register_buffer("phi", torch.empty(latent_dim, features).uniform_(-bound, bound))
        self._warned_width = False

    # ----------------------------------------------------------------- encoder
    def features_of(self, x: Tensor) -> Tensor:
        """``g_psi(x)``: (B, *data_shape) -> (B, features)."""
        return self.encoder(x)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(Phi g_psi(x), log fixed_q_sigma^2)``: the mean and log-variance of the fixed q the
        evaluation bounds use, each (B, latent_dim)."""
        mu = self.features_of(x) @ self.phi.T
        return mu, torch.full_like(mu, 2.0 * math.log(self.hparams.fixed_q_sigma))

    # ----------------------------------------------------------------- ALD
    def log_joint(self, x: Tensor, features: Tensor, phi: Tensor) -> Tensor:
        """``log p(x_i, z_i = Phi_c g(x_i))`` for each of C layers: x (B, *data), features
        (B, F), phi (C, d, F) -> (C, B). One batched decoder call for all C."""
        # features may be bfloat16 under mixed precision; the chains (phi) stay float32
        z = torch.einsum("bf,cdf->cbd", features.to(phi.dtype), phi)
        num = len(phi)
        output = self.decoder(z.flatten(0, 1))
        x_rep = x.expand(num, *x.shape).flatten(0, 1)
        log_lik = self.observation.log_prob(x_rep, output).view(num, len(x))
        log_prior = -0.5 * z.pow(2).sum(-1) - 0.5 * self.latent_dim * math.log(2.0 * math.pi)
        return log_lik + log_prior

    def amortized_langevin(
        self,
        x: Tensor,
        features: Tensor,
        phi: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, SamplerResult]:
        """``burn_in + T`` transitions of Phi on ``exp(-V)``, V the batch-sum potential.

        Args:
            x: the minibatch, (B, *data_shape).
            features: ``g_psi(x)``, (B, F); used without a graph (only Phi moves).
            phi: start layer (d, F); default the current :attr:`phi`.
            generator: seeds the sampler's noise.

        Returns:
            The T kept states, shape (T, d, F), and the sampler's result (final state in
            ``sample[0]``, acceptance rate for MH samplers).
        """
        features = features.detach()
        start = self.phi if phi is None else phi

        prior_std = self.hparams.phi_prior_std

        def log_prob(layers: Tensor) -> Tensor:  # (1, d, F) -> (1,)
            log_p = self.log_joint(x, features, layers).sum(1)
            if prior_std is not None:
                log_p = log_p - layers.pow(2).sum((1, 2)) / (2.0 * prior_std**2)
            return log_p

        result = self.sampler(
            log_prob,
            start[None],
            generator=generator,
            step_size=self.step_size.item(),
            n_steps=self.hparams.burn_in + self.sampler.n_steps,
            return_trajectory=True,
        )
        return result.trajectory[self.hparams.burn_in + 1 :, 0], result

    def potential(self, x: Tensor, features: Tensor, states: Tensor) -> Tensor:
        """Per-sample potential averaged over the kept states: ``-(1/T) sum_t log p(x_i,
        Phi_t g(x_i))``, shape (B,); differentiable in theta and psi through ``features``."""
        return -self.log_joint(x, features, states.detach()).mean(0)

    def _check_width(self, batch_size: int) -> None:
        if batch_size > self.hparams.features and not self._warned_width:
            rank_zero_warn(
                f"LangevinAutoencoder: batch size {batch_size} exceeds features="
                f"{self.hparams.features}; ALD's stationary law is the exact posterior only "
                "when features >= batch size (raise model.init_args.features or lower "
                "data.init_args.batch_size)."
            )
            self._warned_width = True

    # ----------------------------------------------------------------- protocol
    def learning_losses(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The per-sample training loss (potential averaged over T fresh ALD states from the
        current Phi, which is left unchanged), once per group."""
        features = self.features_of(x)
        states, _ = self.amortized_langevin(x, features, generator=generator)
        loss = self.potential(x, features, states)
        return {"encoder": loss, "decoder": loss}

    def gradient_groups(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": nn.ModuleList([self.decoder, self.observation])}

    # ----------------------------------------------------------------- Lightning
    def training_step(self, batch, batch_idx: int) -> Tensor:
        x = batch_data(batch)
        self._check_width(len(x))
        features = self.features_of(x)
        states, result = self.amortized_langevin(x, features)
        self.phi.copy_(result.sample[0])
        per_sample = self.potential(x, features, states)
        loss = per_sample.mean()
        with torch.no_grad():
            codes = features @ self.phi.T
            self.track_codes(codes)
            output = self.decoder(codes)
            recon = self.observation.mean(output)
        logs = {
            "mse": (recon - x).pow(2).mean(),
            "phi_norm": self.phi.norm(),
            "grad_norm_phi": result.grad_norm.mean(),
            # diagnostics of the unstable phases (README, Langevin autoencoder): the feature
            # scale, the batch's code spread (the prior's is 1) and the decoder's output scale
            "feature_norm": features.detach().norm(dim=1).mean(),
            "code_std": codes.std(0).mean(),
            "decoder_output_scale": output.abs().mean(),
        }
        if result.acceptance_rate is not None:
            logs["acceptance"] = result.acceptance_rate.mean()
            if self.hparams.target_acceptance is not None:
                error = logs["acceptance"] - self.hparams.target_acceptance
                self.step_size.mul_(torch.exp(self.hparams.adapt_rate * error))
        logs["step_size"] = self.step_size.clone()
        self.log_dict({f"train/{k}": v for k, v in self._log_likelihood_scale(logs).items()})
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _validate(args: dict) -> None:
    """Check the LAE's own hyperparameters (the shared ones: :class:`AutoencoderBase`)."""
    problems = []
    for name in ("features", "lr"):
        if not args[name] > 0:
            problems.append(f"{name} must be > 0, got {args[name]}")
    target = args["target_acceptance"]
    if target is not None and not 0 < target < 1:
        problems.append(f"target_acceptance must be in (0, 1) or None, got {target}")
    prior_std = args["phi_prior_std"]
    if prior_std is not None and not prior_std > 0:
        problems.append(f"phi_prior_std must be > 0 or None, got {prior_std}")
    if not args["adapt_rate"] > 0:
        problems.append(f"adapt_rate must be > 0, got {args['adapt_rate']}")
    if int(args["burn_in"]) != args["burn_in"] or args["burn_in"] < 0:
        problems.append(f"burn_in must be an int >= 0, got {args['burn_in']}")
    if problems:
        raise ValueError("LangevinAutoencoder: " + "; ".join(problems))
