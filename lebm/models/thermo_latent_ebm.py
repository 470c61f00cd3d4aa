"""Latent EBM whose generator learns through thermodynamic integration (TI).

Same model, prior sampler, optimizers and logging as :class:`~lebm.models.LatentEBM`; only
the posterior part differs, through LatentEBM's hooks (``posterior``, ``negatives``,
``generator_loss``). Each iteration samples the power posteriors
``p_t(z | x) ∝ p(x | z)^t p_alpha(z)`` on a temperature ladder, all temperatures in one
batched tensor, and

- generator (``generator_objective="tempered"``, the seed study's estimator): minimise minus
  the trapezoid TI estimate of ``log p(x)`` with latents detached. Its gradient is
  ``sum_i w_i E_{t_i}[grad log p(x|z)]``, a *tempered* learning gradient that drops the
  covariance terms ``t Cov_t(log p(x|z), grad log p(x|z))``;
- generator (``"exact"``): adds those covariance terms with a leave-one-out baseline over
  ``num_chains >= 2`` chains per (temperature, data point), so the estimator's expectation is
  the exact gradient ``E_{p_1}[grad log p(x|z)]`` (up to the ladder's discretisation);
- generator (``"posterior"``): the t = 1 chains alone, ``E_{p_1}[grad log p(x|z)]`` by
  Fisher's identity -- the same expectation as ``"exact"`` without its covariance terms'
  variance. TI then serves as a population sampler (the lower temperatures feed the t = 1
  chains through replica exchange) and as the ``log p(x)`` estimate that is logged, not as the
  learning signal; the control that isolates what the tempering does to the generator;
- EBM: the vanilla loss ``mean f(z-) - mean f(z+)`` with the t = 1 chains as positives and,
  as negatives, prior samples: by default the same prior chains as LatentEBM
  (``negatives="prior"``: prior_steps of prior_step_size, so vanilla and TI differ only in
  the posterior part), or the ladder's own t = 0 chains (``negatives="ladder"``), whose target
  is also the prior but which run the posterior sampler's (shorter) schedule.

The EBM is trained in every mode (the earlier JAX implementation froze it; see
``tests/test_thermo.py``).

After the seed (REFERENCE §12): ``ladder="adaptive"`` re-places the interior temperatures every
``adapt_every`` training iterations so adjacent power posteriors are equally far apart in
symmetrised KL (:func:`lebm.thermo.adapt_temperatures`); the ladder is the buffer
``ladder_t`` (checkpointed, so a resumed run continues with it) and is logged as
``train/temperature/tNN``. ``swap_every`` turns on replica exchange between adjacent
temperatures (:func:`lebm.thermo.replica_exchange`), logged as ``train/swap_rate/pNN`` (pair
``(t_NN, t_NN+1)``). ``chunk_size`` caps the chains per network evaluation (sampling) and per
generator forward pass (the loss, through activation checkpointing) without changing the result.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from lebm.losses import gaussian_log_likelihood
from lebm.models.latent_ebm import LatentEBM, Posterior
from lebm.thermo import (
    ChainInit,
    PowerPosteriorSamples,
    TemperatureLadder,
    adapt_temperatures,
    expected_log_likelihoods,
    sample_power_posteriors,
)


class ThermoLatentEBM(LatentEBM):
    """LatentEBM with a TI (power-posterior) learning signal for the generator.

    Args:
        num_temperatures: ladder size N_t (>= 2) for ``t_i = (i / (N_t - 1))^temperature_power``.
        temperature_power: p > 0 (1 uniform; > 1 packs temperatures near 0).
        temperatures: explicit ladder instead (strictly increasing, from 0 to 1).
        chain_init: ``"independent"`` (every temperature from N(0, sigma_0^2 I), one batched
            call) or ``"annealed"`` (temperature i warm-starts from i - 1).
        steps_per_temperature: sampler steps per temperature when annealed (default: the
            posterior sampler's ``n_steps``, which independent chains always run).
        num_chains: chains per (temperature, data point); ``"exact"`` needs >= 2.
        generator_objective: ``"tempered"``, ``"exact"`` or ``"posterior"`` (see the module
            docstring).
        negatives: ``"prior"`` or ``"ladder"`` (see the module docstring).
        ladder: ``"fixed"`` (the schedule above throughout) or ``"adaptive"`` (start from it,
            then equalise the symmetrised KL between neighbours every ``adapt_every``
            iterations; see :func:`lebm.thermo.adapt_temperatures`).
        adapt_every: training iterations between ladder updates (adaptive only).
        adapt_rate: fraction of the way to the equal-distance ladder taken per update, in
            (0, 1] (smooths the noise of one batch's estimate).
        swap_every: replica exchange between adjacent temperatures after every
            ``swap_every`` sampler steps (None: independent chains); needs
            ``chain_init="independent"``.
        chunk_size: chains per network evaluation in the sampler and the generator loss
            (None: all at once); caps peak memory, same result up to float rounding.
        **kwargs: every LatentEBM argument (``posterior_sampler`` runs the power-posterior
            chains, every temperature in one call).
    """

    def __init__(
        self,
        *args,
        num_temperatures: int = 10,
        temperature_power: float = 1.0,
        temperatures: list[float] | None = None,
        chain_init: ChainInit = "independent",
        steps_per_temperature: int | None = None,
        num_chains: int = 1,
        generator_objective: Literal["tempered", "exact", "posterior"] = "tempered",
        negatives: Literal["prior", "ladder"] = "prior",
        ladder: Literal["fixed", "adaptive"] = "fixed",
        adapt_every: int = 1,
        adapt_rate: float = 0.5,
        swap_every: int | None = None,
        chunk_size: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        initial = TemperatureLadder(num_temperatures, temperature_power, temperatures)
        # the ladder in use: a buffer, so checkpoints carry the adapted temperatures
        self.register_buffer("ladder_t", initial.t.clone())
        self.register_buffer("ladder_updates", torch.zeros((), dtype=torch.long))
        self._train_expected: Tensor | None = None
        self._collect = False
        problems = []
        if ladder not in ("fixed", "adaptive"):
            problems.append(f"ladder must be 'fixed' or 'adaptive', got {ladder!r}")
        if int(adapt_every) != adapt_every or adapt_every < 1:
            problems.append(f"adapt_every must be an int >= 1, got {adapt_every}")
        if not 0 < adapt_rate <= 1:
            problems.append(f"adapt_rate must be in (0, 1], got {adapt_rate}")
        if swap_every is not None and (int(swap_every) != swap_every or swap_every < 1):
            problems.append(f"swap_every must be an int >= 1 or None, got {swap_every}")
        if swap_every is not None and chain_init != "independent":
            problems.append(
                "swap_every (replica exchange) needs chain_init='independent' (every "
                f"temperature in one population), got chain_init={chain_init!r}"
            )
        if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
            problems.append(f"chunk_size must be an int >= 1 or None, got {chunk_size}")
        if chain_init not in ("independent", "annealed"):
            problems.append(f"chain_init must be 'independent' or 'annealed', got {chain_init!r}")
        if steps_per_temperature is not None and steps_per_temperature < 1:
            problems.append(f"steps_per_temperature must be >= 1, got {steps_per_temperature}")
        if generator_objective not in ("tempered", "exact", "posterior"):
            problems.append(
                "generator_objective must be 'tempered', 'exact' or 'posterior', got "
                f"{generator_objective!r}"
            )
        if num_chains < 1 or (generator_objective == "exact" and num_chains < 2):
            problems.append(
                f"num_chains must be >= 1 (>= 2 for generator_objective='exact', whose "
                f"covariance correction needs a leave-one-out baseline), got {num_chains}"
            )
        if negatives not in ("prior", "ladder"):
            problems.append(f"negatives must be 'prior' or 'ladder', got {negatives!r}")
        if problems:
            raise ValueError("ThermoLatentEBM: " + "; ".join(problems))

    @property
    def ladder(self) -> TemperatureLadder:
        """The temperatures in use (the ``ladder_t`` buffer)."""
        return TemperatureLadder(temperatures=self.ladder_t)

    def sample_power_posteriors(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> PowerPosteriorSamples:
        """Chains for every temperature and data point: z of shape (N_t, K, B, latent_dim).

        They run the ``posterior_sampler`` (its steps and step size; ``steps_per_temperature``
        replaces the steps when annealed)."""
        hp = self.hparams
        annealed = hp.chain_init == "annealed"
        steps = hp.steps_per_temperature if annealed and hp.steps_per_temperature else None
        # LatentEBM's own prior: f alone, its Gaussian reference term's gradient analytic
        analytic = self._analytic_reference()
        return sample_power_posteriors(
            self.energy if analytic else self.log_prior,
            self.log_likelihood,
            x,
            (self.latent_dim,),
            self.ladder,
            self.posterior_sampler,
            n_steps=steps,
            init=hp.chain_init,
            num_chains=hp.num_chains,
            init_scale=hp.prior_sigma,
            swap_every=hp.swap_every,
            chunk_size=hp.chunk_size,
            reference_sigma=hp.prior_sigma if analytic else None,
            generator=generator,
        )

    def log_evidence(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """TI estimate of ``log p(x_b)``, shape (B,).

        No ``log Z_alpha`` is needed: the ratio of the power posteriors' normalisers at t = 1
        and t = 0 is ``Z_alpha p(x) / Z_alpha``, so TI gives the model's log-evidence itself
        (up to the bias of the short-run chains and the ladder's discretisation).
        """
        return self.ladder.integrate(
            expected_log_likelihoods(self.sample_power_posteriors(x, generator))
        )

    # ----------------------------------------------------------------- LatentEBM hooks
    def posterior(self, x: Tensor, generator: torch.Generator | None = None) -> Posterior:
        """The whole ladder; the t = 1 chains (first of K) are the EBM's positives."""
        ladder = self.sample_power_posteriors(x, generator)
        expected = expected_log_likelihoods(ladder).detach()  # (N_t, B)
        logs = {"log_px_ti": self.ladder.integrate(expected).mean()}
        logs |= {f"expected_loglik/t{i:02d}": e for i, e in enumerate(expected.mean(1))}
        logs["posterior_grad_norm"] = ladder.grad_norm
        if ladder.acceptance_rate is not None:
            logs["posterior_acceptance_rate"] = ladder.acceptance_rate
        logs |= {f"temperature/t{i:02d}": t for i, t in enumerate(self.ladder_t.float())}
        if ladder.swap_rate is not None:
            logs |= {f"swap_rate/p{i:02d}": r for i, r in enumerate(ladder.swap_rate)}
        if self._collect:  # the training step's own chains feed the ladder adaptation
            self._train_expected = expected
        return Posterior(ladder.z[-1, 0], ladder, logs)

    def training_step(self, batch, batch_idx: int) -> Tensor:
        """LatentEBM's iteration; then, with ``ladder="adaptive"``, every ``adapt_every``
        iterations the ladder moves towards equal symmetrised KL between neighbours, from the
        expected log-likelihoods of this iteration's chains."""
        self._collect, self._train_expected = True, None
        try:
            loss = super().training_step(batch, batch_idx)
        finally:
            self._collect = False
        hp = self.hparams
        if hp.ladder == "adaptive" and self._train_expected is not None:
            self.ladder_updates += 1
            if int(self.ladder_updates) % hp.adapt_every == 0:
                expected = self._train_expected  # (N_t, B)
                if (
                    self._trainer is not None and self.trainer.world_size > 1
                ):  # same ladder on every rank
                    expected = self.all_gather(expected).transpose(0, 1).flatten(1)
                self.ladder_t.copy_(adapt_temperatures(self.ladder_t, expected, hp.adapt_rate))
        self._train_expected = None
        return loss

    def negatives(
        self, posterior: Posterior, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``negatives="prior"``: LatentEBM's prior chains; ``"ladder"``: the t = 0 chains."""
        if self.hparams.negatives == "ladder":
            return posterior.state.z[0, 0], {}
        return super().negatives(posterior, generator)

    def generator_loss(self, x: Tensor, posterior: Posterior) -> tuple[Tensor, Tensor]:
        """Minus the TI estimate of ``log p(x)`` per sample (B,), latents detached; with
        ``generator_objective="exact"`` plus the covariance terms, with ``"posterior"`` minus
        the t = 1 chains' mean log-likelihood (module docstring). The MSE is that of the t = 1
        chains, from the same forward pass."""
        z = posterior.state.z.detach()
        if self.hparams.generator_objective == "posterior":
            z = z[-1:]  # only the t = 1 chains go through the generator
        n_t, k, b = z.shape[:3]
        x_hat = self._generate(z.flatten(0, 2))
        x_all = x.repeat(n_t * k, *([1] * (x.ndim - 1)))
        sigma = self.hparams.likelihood_sigma
        loglik = gaussian_log_likelihood(x_all, x_hat, sigma).view(n_t, k, b)
        if self.hparams.generator_objective == "exact":
            held = loglik.detach()
            baseline = (held.sum(1, keepdim=True) - held) / (k - 1)  # leave-one-out
            t = self.ladder.t.to(loglik).view(-1, 1, 1)
            loglik = loglik + t * (held - baseline) * loglik
        mse = (x_hat.detach()[-k * b : -(k - 1) * b or None] - x).pow(2).mean()
        if self.hparams.generator_objective == "posterior":
            return -loglik[0].mean(0), mse
        return -self.ladder.integrate(loglik.mean(1)), mse

    def _generate(self, z: Tensor) -> Tensor:
        """``g(z)``; with ``chunk_size``, chunk by chunk under activation checkpointing (the
        backward pass recomputes one chunk at a time, so only one chunk's activations live)."""
        size = self.hparams.chunk_size
        if size is None or len(z) <= size or not torch.is_grad_enabled():
            return self.generator(z)
        return torch.cat(
            [checkpoint(self.generator, zc, use_reentrant=False) for zc in z.split(size)]
        )
