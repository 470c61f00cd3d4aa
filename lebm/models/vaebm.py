"""VAEBM (Xiao, Kreis, Kautz, Vahdat; ICLR 2021): a VAE reweighted by a data-space energy.

Model::

    h(x, z) ∝ p_theta(x, z) exp(-E_psi(x))          (energy_input "x", the paper's)
    h(x, z) ∝ p_theta(x, z) exp(-E_psi(x, z))       (energy_input "xz", the seed's extension)

Two stages, one run (manual optimization, two Adam optimizers, one stepped per stage):

1. epochs ``0 .. vae_epochs - 1``: the VAE's own ``-ELBO`` (skipped when ``vae_checkpoint``
   gives a trained VAE);
2. afterwards the VAE is frozen (``requires_grad`` off, eval mode, its optimizer never
   stepped) and the energy is trained by contrastive divergence::

       loss = mean E(x+) - mean E(x-) + alpha_s sum_layers sigma_max(W) + energy_l2 (E(x+)^2 + E(x-)^2)

   ``sigma_max`` is each linear / conv weight's largest singular value by one power
   iteration per step (the paper's spectral regularisation; u, v persist as buffers).

Negatives come from MCMC in the VAE's reparameterised noise space ``eps = (eps_z, eps_x)``,
``x = T(eps)``, on the log-density::

    log pi(eps) = -E_psi(T(eps)) - ||eps||^2 / 2

whose push-forward through ``T`` is ``h(x)``. ``T`` per likelihood:

* gaussian, ``use_mean: false``: ``z = eps_z``, ``x = decoder(z) + sigma eps_x``; the chain
  state is ``(eps_z, eps_x)`` flattened, shape (B, latent_dim + D);
* ``use_mean: true`` (required for bernoulli and logistic, whose noise is not
  reparameterisable; the paper's CelebA runs use it with a Gaussian decoder too):
  ``x = observation.mean(decoder(eps_z))`` and the state is ``eps_z`` alone (eps_x would be
  an independent N(0, I) that never reaches x).

Any :mod:`lebm.samplers` object drives the chains (Langevin by default; MALA, HMC). Step sizes
are lebm's ``eps + s grad log pi + sqrt(2 s) N(0, I)``; the paper's
``eps - (eta / 2) grad E + sqrt(eta) N(0, I)`` has ``s = eta / 2`` (CIFAR-10: eta 8e-5 ->
s = 4e-5). Chains start from N(0, I) or from a persistent buffer of eps (``buffer_size`` > 0,
a fraction ``reinit_fraction`` restarted from N(0, I) each time).

Training VAEBM is known to diverge eventually: ``train/energy_gap`` logs ``E(x+) - E(x-)``;
a non-finite loss or chain raises :class:`VAEBMDivergenceError` /
:class:`~lebm.samplers.SamplerDivergenceError` naming the config keys to change before any
optimizer step, and ``callbacks.DivergenceGuard`` (on under ``lebm fit``) refuses to write a
non-finite checkpoint, so ``last.ckpt`` stays the last good state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from jsonargparse import lazy_instance
from torch import Tensor, nn

from lebm.components import as_factory, as_instance, to_config
from lebm.data import batch_data
from lebm.losses import contrastive_energy_loss
from lebm.metrics import SampleQuality, mode_components
from lebm.models.base import GenerativeModel
from lebm.models.vae import VAE
from lebm.nets import ConvEnergy, EnergyMLP
from lebm.samplers import Langevin, Sampler, SamplerDivergenceError, SamplerResult

EnergyInput = Literal["x", "xz"]
ENERGY_INPUTS = ("x", "xz")

VAEFactory = Callable[[tuple[int, ...]], VAE]
"""``vae(data_shape=...) -> VAE`` (config: ``class_path: lebm.models.VAE`` + ``init_args``)."""

DataEnergyFactory = Callable[[int | tuple[int, ...]], nn.Module]
"""``energy(d)`` for vector input of size d, ``energy(data_shape)`` for images; -> (B,)."""

# Toy-data chains in eps space (lebm convention s). Samples use the same short-run chains the
# energy was trained against: on eight Gaussians 100-step samples of an energy trained with 20
# steps overshoot (MMD^2 0.038 vs 0.027).
DEFAULT_TRAIN_SAMPLER = lazy_instance(Langevin, n_steps=20, step_size=0.01)
DEFAULT_SAMPLER = lazy_instance(Langevin, n_steps=20, step_size=0.01)

_HINT = (
    "lower model.init_args.lr or model.init_args.{key}.init_args.step_size, raise "
    "model.init_args.spectral_penalty or model.init_args.energy_l2, and resume from the last "
    "good checkpoint (VAEBM training is known to diverge eventually)"
)


class VAEBMDivergenceError(FloatingPointError):
    """The energy loss or the energies stopped being finite."""


class SpectralPenalty(nn.Module):
    """``sum_l sigma_max(W_l)`` over the linear / conv layers of a network, each estimated by
    power iteration with persistent vectors (Miyato et al. 2018; NVAE / VAEBM's
    spectral regularisation). Gradients flow through ``sigma = u^T W v`` only.

    Args:
        net: the network whose weights are penalised (not owned: only referenced).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self._layers = [
            m for m in net.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d)
        ]
        generator = torch.Generator().manual_seed(0)
        for i, layer in enumerate(self._layers):
            rows, cols = layer.weight.shape[0], layer.weight[0].numel()
            u = nn.functional.normalize(torch.randn(rows, generator=generator), dim=0)
            v = nn.functional.normalize(torch.randn(cols, generator=generator), dim=0)
            self.register_buffer(f"u{i}", u)
            self.register_buffer(f"v{i}", v)

    def forward(self, power_iterations: int = 1) -> Tensor:
        """The penalty (0-d); ``power_iterations`` updates of u, v first (0: use them as they are)."""
        total = 0.0
        for i, layer in enumerate(self._layers):
            weight = layer.weight.flatten(1)
            u, v = getattr(self, f"u{i}"), getattr(self, f"v{i}")
            with torch.no_grad():
                for _ in range(power_iterations):
                    v.copy_(nn.functional.normalize(weight.t() @ u, dim=0, eps=1e-12))
                    u.copy_(nn.functional.normalize(weight @ v, dim=0, eps=1e-12))
            total = total + u @ weight @ v
        return torch.as_tensor(total)


class VAEBM(GenerativeModel):
    """VAE (stage 1) times a data-space energy (stage 2); see the module docstring.

    Defaults suit standardised 2-D toy data: the VAE of ``vae`` (default :class:`VAE` with its
    toy defaults), an MLP energy 2-128-128-1 (SiLU), negatives and samples by 20 Langevin
    steps of s = 0.01 in eps space from N(0, I), spectral penalty 0.2, Adam lr 1e-3 with betas
    (0.99, 0.999) (the paper's). On eight Gaussians the paper's penalty and betas left the
    energy flat (the penalty shrank the weights faster than contrastive divergence grew them);
    ``configs/vaebm/eight_gaussians.yaml`` (no penalty, Adam 3e-3 betas (0.9, 0.999)) is the
    measured toy setting.

    Args:
        data_shape: shape of one data point; linked from the datamodule by the CLI.
        vae: the stage-1 model, a factory called as ``vae(data_shape=data_shape)`` (config:
            ``class_path: lebm.models.VAE`` with ``init_args``); ignored when
            ``vae_checkpoint`` is given. None: :class:`VAE` with its defaults.
        vae_checkpoint: path of a trained :class:`VAE` checkpoint (stage 1 done elsewhere);
            the VAE is rebuilt from it alone, and its weights are then part of this model's
            checkpoints (the file must still exist when a VAEBM checkpoint is reloaded).
        vae_epochs: epochs of stage 1 in this run before stage 2 begins (0 with no checkpoint:
            stage 2 starts from the VAE as built, e.g. a hand-set one in a test).
        vae_lr: Adam learning rate of stage 1.
        energy: the network E_psi, a class built as ``energy(d)`` for vector input (d = D, or
            D + latent_dim for ``"xz"``) and ``energy(data_shape)`` for images ("x" only);
            (B, ...) -> (B,). None: :class:`lebm.nets.EnergyMLP` (SiLU) or
            :class:`lebm.nets.ConvEnergy`.
        energy_input: ``"x"`` (the paper) or ``"xz"`` (energy on ``[x, z]`` jointly; vector
            data only).
        use_mean: decode ``x = mean(decoder(eps_z))``, without eps_x (see the module
            docstring); required for the bernoulli and logistic likelihoods.
        train_sampler: sampler object drawing the negatives in eps space.
        sampler: sampler object used by :meth:`sample` (evaluation, plots, predict).
        buffer_size: persistent eps chains for the negatives (0: every chain from N(0, I)).
        reinit_fraction: probability that a buffer chain restarts from N(0, I).
        spectral_penalty: ``alpha_s``, weight of the spectral penalty (paper ~0.2).
        energy_l2: weight of ``E(x+)^2 + E(x-)^2`` (0 = off).
        lr: Adam learning rate of the energy.
        betas: Adam betas of the energy (paper (0.99, 0.999)).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] = (2,),
        vae: VAEFactory | None = None,
        vae_checkpoint: str | None = None,
        vae_epochs: int = 0,
        vae_lr: float = 1e-3,
        energy: DataEnergyFactory | None = None,
        energy_input: EnergyInput = "x",
        use_mean: bool = False,
        train_sampler: Sampler = DEFAULT_TRAIN_SAMPLER,
        sampler: Sampler = DEFAULT_SAMPLER,
        buffer_size: int = 0,
        reinit_fraction: float = 0.05,
        spectral_penalty: float = 0.2,
        energy_l2: float = 0.0,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.99, 0.999),
    ) -> None:
        vae = _vae_config(vae)  # stored as plain data, its own components included
        super().__init__(data_shape)
        _validate(locals())
        self.automatic_optimization = False
        self.vae = _build_vae(vae, vae_checkpoint, self.data_shape)
        likelihood = self.vae.observation.likelihood
        if likelihood != "gaussian" and not use_mean:
            raise ValueError(
                f"VAEBM: the {likelihood} likelihood's noise cannot be reparameterised; set "
                "model.init_args.use_mean: true (x = the decoded mean, as the paper's CelebA runs)"
            )
        self.latent_dim = self.vae.latent_dim
        self.data_dim = math.prod(self.data_shape)
        self.state_dim = self.latent_dim + (0 if use_mean else self.data_dim)
        vector = len(self.data_shape) == 1
        if energy_input == "xz" and not vector:
            raise ValueError(
                "VAEBM: energy_input 'xz' needs vector data (an MLP on [x, z]); images take 'x'"
            )
        default = EnergyMLP if vector else ConvEnergy
        size = self.data_dim + (self.latent_dim if energy_input == "xz" else 0)
        if energy is None and vector:
            energy = {"class_path": "lebm.nets.EnergyMLP", "init_args": {"activation": "silu"}}
        self.energy = as_factory(energy or default, "energy")(size if vector else self.data_shape)
        self.spectral = SpectralPenalty(self.energy)
        self.train_sampler = as_instance(train_sampler, Sampler, "train_sampler")
        self.sampler = as_instance(sampler, Sampler, "sampler")
        if buffer_size > 0:
            self.register_buffer("replay_buffer", torch.randn(buffer_size, self.state_dim))
        else:
            self.replay_buffer = None
        self.val_vae_quality = SampleQuality()
        self.test_vae_quality = SampleQuality()
        if vae_checkpoint is not None or vae_epochs == 0:
            self.freeze_vae()

    # ----------------------------------------------------------------- stages
    @property
    def vae_frozen(self) -> bool:
        """Whether stage 2 has begun (the VAE no longer trains)."""
        return not any(p.requires_grad for p in self.vae.parameters())

    def freeze_vae(self) -> None:
        """Stage 2: the VAE's parameters stop requiring gradients and it stays in eval mode."""
        self.vae.requires_grad_(False)
        self.vae.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.vae_frozen:
            self.vae.eval()
        return self

    def in_vae_stage(self) -> bool:
        """Whether a trainer is attached and still in stage 1 (``epoch < vae_epochs``)."""
        epochs = self.hparams.vae_epochs
        return self._trainer is not None and epochs > 0 and self.current_epoch < epochs

    # ----------------------------------------------------------------- eps space
    def decode(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """``T(eps)``: (B, state_dim) -> x (B, *data_shape) and z = eps_z (B, latent_dim)."""
        z = eps[:, : self.latent_dim]
        x = self.vae.observation.mean(self.vae.decoder(z))
        if not self.hparams.use_mean:
            observation = self.vae.observation
            sigma = (
                observation.sigma if observation.log_scale is None else observation.log_scale.exp()
            )
            x = x + sigma * eps[:, self.latent_dim :].view(-1, *self.data_shape)
        return x, z

    def energy_of(self, x: Tensor, z: Tensor | None = None) -> Tensor:
        """``E_psi(x)`` or ``E_psi([x, z])``: (B, *data_shape)[, (B, latent_dim)] -> (B,)."""
        if self.hparams.energy_input == "xz":
            x = torch.cat([x.flatten(1), z], dim=1)
        e = self.energy(x)
        if e.shape != x.shape[:1]:
            raise ValueError(
                f"energy must return one value per data point, shape ({len(x)},); got "
                f"{tuple(e.shape)} (model.init_args.energy)"
            )
        return e

    def log_target(self, eps: Tensor) -> Tensor:
        """``log pi(eps) = -E_psi(T(eps)) - ||eps||^2 / 2``: (B, state_dim) -> (B,)."""
        x, z = self.decode(eps)
        return -self.energy_of(x, z) - 0.5 * eps.pow(2).sum(1)

    def initial_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``eps ~ N(0, I)``, shape (n, state_dim)."""
        return torch.randn(n, self.state_dim, generator=generator, device=self.device)

    def run_chains(
        self, eps0: Tensor, generator: torch.Generator | None = None, key: str = "sampler"
    ) -> SamplerResult:
        """The sampler named ``key`` on :meth:`log_target` from ``eps0`` (eps-space result)."""
        try:
            return getattr(self, key)(self.log_target, eps0, generator=generator)
        except SamplerDivergenceError as err:
            raise SamplerDivergenceError(f"{err} [VAEBM: {_HINT.format(key=key)}]") from err

    @torch.no_grad()
    def sample_vae(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """The stage-1 VAE alone: ``T(eps)``, ``eps ~ N(0, I)`` (with the likelihood's noise
        unless ``use_mean``): (num_samples, *data_shape)."""
        return self.decode(self.initial_noise(num_samples, generator))[0]

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``sampler`` chains in eps space from N(0, I), decoded: (num_samples, *data_shape).
        While a trainer is in stage 1 the energy is untrained: the VAE's samples instead."""
        if self.in_vae_stage():
            return self.sample_vae(num_samples, generator)
        with torch.enable_grad():
            eps = self.run_chains(self.initial_noise(num_samples, generator), generator).sample
        return self.decode(eps)[0]

    def negatives(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """eps of the negatives (n, state_dim), detached; the buffer rows they came from (or
        None; the caller writes them back); sampler diagnostics."""
        hp = self.hparams
        eps0, rows = self.initial_noise(n, generator), None
        if self.replay_buffer is not None:
            if n > hp.buffer_size:
                raise ValueError(
                    f"VAEBM: the batch ({n}) is larger than buffer_size={hp.buffer_size}; raise "
                    "model.init_args.buffer_size"
                )
            rows = torch.randperm(hp.buffer_size, generator=generator, device=self.device)[:n]
            fresh = torch.rand(n, 1, generator=generator, device=self.device) < hp.reinit_fraction
            eps0 = torch.where(fresh, eps0, self.replay_buffer[rows])
        result = self.run_chains(eps0, generator, "train_sampler")
        logs = {f"train_sampler_{k}": v for k, v in result.diagnostics().items()}
        return result.sample, rows, logs

    # ----------------------------------------------------------------- objectives
    def energy_losses(
        self, x: Tensor, generator: torch.Generator | None = None, power_iterations: int = 1
    ) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor | None, Tensor]]:
        """Stage 2's per-sample loss (B,) on batch x (the spectral penalty added to every
        sample, so the mean is the training loss), values to log, and (rows, eps-) for the
        buffer."""
        hp = self.hparams
        eps_neg, rows, logs = self.negatives(len(x), generator)
        with torch.no_grad():
            x_neg, z_neg = self.decode(eps_neg)
            z_pos = self.vae.encode(x)[0] if hp.energy_input == "xz" else None
        if hp.energy_input == "xz":
            e = self.energy_of(torch.cat([x, x_neg]), torch.cat([z_pos, z_neg]))
        else:
            e = self.energy_of(torch.cat([x, x_neg]))
        e_pos, e_neg = e[: len(x)], e[len(x) :]
        # contrastive_energy_loss(f+, f-) = f- - f+ with f = -E: E(x+) - E(x-)
        loss = contrastive_energy_loss(-e_pos, -e_neg, hp.energy_l2)
        if hp.spectral_penalty > 0:
            penalty = self.spectral(power_iterations)
            loss = loss + hp.spectral_penalty * penalty
            logs["spectral_penalty"] = penalty.detach()
        logs |= {
            "energy_pos": e_pos.detach().mean(),
            "energy_neg": e_neg.detach().mean(),
            "energy_gap": (e_pos - e_neg).detach().mean(),
        }
        return loss, logs, (rows, eps_neg)

    def learning_losses(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``{"energy": per-sample stage-2 loss (B,)}``; the buffer and power-iteration
        vectors are read, never written."""
        return {"energy": self.energy_losses(x, generator, power_iterations=0)[0]}

    def gradient_groups(self) -> dict[str, nn.Module]:
        return {"energy": self.energy}

    # ----------------------------------------------------------------- Lightning
    def on_train_epoch_start(self) -> None:
        if not self.in_vae_stage() and not self.vae_frozen:
            self.freeze_vae()

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x = batch_data(batch)
        opt_vae, opt_energy = self.optimizers()
        if self.in_vae_stage():
            step = self.trainer.fit_loop.epoch_loop._batches_that_stepped
            loss = self.vae.negative_elbo(x, None, self.vae.kl_weight(step)).mean()
            opt_vae.zero_grad()
            self.manual_backward(loss)
            opt_vae.step()
            self.log("train/loss_vae", loss.detach(), prog_bar=True)
            return loss
        loss_per_sample, logs, (rows, eps_neg) = self.energy_losses(x)
        loss = loss_per_sample.mean()
        if not torch.isfinite(loss):
            raise VAEBMDivergenceError(
                f"VAEBM: the energy loss is {loss.item()} at step {self.global_step} (energy "
                f"gap {logs['energy_gap'].item():.4g}); {_HINT.format(key='train_sampler')}"
            )
        opt_energy.zero_grad()
        self.manual_backward(loss)
        opt_energy.step()
        if rows is not None:
            self.replay_buffer[rows] = eps_neg
        self.log_dict({f"train/{k}": v for k, v in logs.items()})
        self.log("train/loss", loss.detach(), prog_bar=True)
        return loss

    @torch.no_grad()
    def evaluation_metrics(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """``energy_data`` (mean energy of the batch; after stage 1) and, for the epoch's
        comparison, the stage-1 VAE's own samples (logged as ``vae_mmd``, ``vae_swd``,
        ``vae_mode_weight_error``, ...) from a separate stream of the same seed."""
        stage = "test" if self._trainer is not None and self.trainer.testing else "val"
        quality = self.val_vae_quality if stage == "val" else self.test_vae_quality
        vae_generator = torch.Generator(self.device).manual_seed(generator.initial_seed() + 10**6)
        quality.update(x, self.sample_vae(len(x), vae_generator))
        if self.in_vae_stage():
            return {}
        z = self.vae.encode(x)[0] if self.hparams.energy_input == "xz" else None
        e = self.energy_of(x, z)
        if not bool(torch.isfinite(e).all()):
            raise VAEBMDivergenceError(
                f"VAEBM: non-finite energy on held-out data; {_HINT.format(key='train_sampler')}"
            )
        return {"energy_data": e.mean()}

    def _eval_epoch_end(self, stage: str) -> None:
        quality = self.val_vae_quality if stage == "val" else self.test_vae_quality
        values = quality.compute()
        self.log_dict({f"{stage}/vae_{k}": v for k, v in values.items()})
        quality.reset()
        super()._eval_epoch_end(stage)

    def configure_optimizers(self):
        hp = self.hparams
        opt_vae = torch.optim.Adam(self.vae.parameters(), lr=hp.vae_lr)
        opt_energy = torch.optim.Adam(self.energy.parameters(), lr=hp.lr, betas=hp.betas)
        return [opt_vae, opt_energy]


def _vae_config(vae: VAEFactory | dict | None) -> dict | None:
    """``vae`` as ``{"class_path", "init_args"}`` with its own components (encoder, decoder) in
    that form too, so checkpoints load with ``weights_only=True``; ``data_shape`` left out
    (the model supplies it)."""
    if vae is None:
        return None
    spec = to_config(vae)
    if not isinstance(spec, dict) or "class_path" not in spec:
        return vae  # some other callable: kept as given (not storable in a checkpoint)
    init_args = {k: to_config(v) for k, v in (spec.get("init_args") or {}).items()}
    init_args.pop("data_shape", None)
    return {"class_path": spec["class_path"], "init_args": init_args}


def _build_vae(vae: VAEFactory | None, checkpoint: str | None, data_shape: tuple[int, ...]) -> VAE:
    """The stage-1 VAE, from its checkpoint or its factory. Built here, outside
    ``VAEBM.__init__``, so that the VAE's own hyperparameters hold its arguments alone
    (Lightning collects ``__init__`` arguments up the call stack)."""
    if checkpoint is None:
        return as_factory(vae or VAE, "vae")(data_shape=data_shape)
    model = VAE.load_from_checkpoint(checkpoint, map_location="cpu")
    if tuple(model.data_shape) != tuple(data_shape):
        raise ValueError(
            f"VAEBM: the VAE of {checkpoint} models data of shape {tuple(model.data_shape)}, "
            f"not {tuple(data_shape)}"
        )
    return model


# --------------------------------------------------------------------------- mode coverage
@torch.no_grad()
def mode_coverage(
    real: Tensor, fake: Tensor, min_share: float = 0.2, max_points: int = 2000
) -> dict[str, Tensor] | None:
    """Modes covered and per-mode weights of ``fake`` against the modes of ``real``.

    Modes are :func:`lebm.metrics.mode_components` of ``real[:max_points]``; each generated
    point goes to the mode of its nearest real point. A mode is *covered* when it holds at
    least ``min_share`` times its real weight.

    Returns:
        ``{"modes": K, "covered": number covered, "real_weights": (K,), "fake_weights": (K,),
        "weight_error": sum |v - w| / 2}``, or None when ``real`` forms fewer than two modes.
    """
    real = real[:max_points].flatten(1).double().cpu()
    labels = mode_components(real)
    if labels is None:
        return None
    keep = labels >= 0
    anchors, anchor_labels = real[keep], labels[keep]
    k = int(anchor_labels.max()) + 1
    nearest = torch.cdist(fake.flatten(1).double().cpu(), anchors).argmin(1)
    fake_w = torch.bincount(anchor_labels[nearest], minlength=k) / len(fake)
    real_w = torch.bincount(anchor_labels, minlength=k) / len(anchor_labels)
    return {
        "modes": torch.tensor(k),
        "covered": (fake_w >= min_share * real_w).sum(),
        "real_weights": real_w,
        "fake_weights": fake_w,
        "weight_error": (fake_w - real_w).abs().sum() / 2,
    }


def _validate(args: dict) -> None:
    """Check hyperparameters; each error names the argument, the value and what is allowed."""
    problems = []
    if args["energy_input"] not in ENERGY_INPUTS:
        problems.append(
            f"energy_input must be one of {ENERGY_INPUTS}, got {args['energy_input']!r}"
        )
    for name in ("vae_epochs", "buffer_size"):
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append(f"{name} must be an int >= 0, got {value!r}")
    if args["vae_checkpoint"] is not None and args["vae_epochs"]:
        problems.append(
            "give either vae_checkpoint (a trained VAE) or vae_epochs > 0 (train it here), not both"
        )
    for name in ("vae_lr", "lr"):
        if not args[name] > 0:
            problems.append(f"{name} must be > 0, got {args[name]}")
    for name in ("spectral_penalty", "energy_l2"):
        if not args[name] >= 0:
            problems.append(f"{name} must be >= 0, got {args[name]}")
    if not 0.0 <= args["reinit_fraction"] <= 1.0:
        problems.append(f"reinit_fraction must be in [0, 1], got {args['reinit_fraction']}")
    if len(args["betas"]) != 2 or not all(0.0 <= b < 1.0 for b in args["betas"]):
        problems.append(f"betas must be two numbers in [0, 1), got {args['betas']}")
    if problems:
        raise ValueError("VAEBM: " + "; ".join(problems))
