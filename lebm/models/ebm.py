"""Data-space energy-based model ``p(x) = exp(f(x)) / Z`` (the lecture seed), three trainers.

``objective`` picks how ``f`` is learned (one branch, in :meth:`EBM.objective_losses`):

* ``"cd"``: contrastive divergence (maximum likelihood with short-run MCMC negatives)::

      loss(x+, x-) = f(x-) - f(x+) + energy_l2 (f(x+)^2 + f(x-)^2)

  x- from ``train_sampler`` (any :mod:`lebm.samplers` object: Langevin, MALA, HMC,
  RandomWalkMetropolis), started from noise or from a persistent replay buffer (IGEBM /
  JEM: ``buffer_size`` chains, a fraction ``reinit_fraction`` restarted from noise each
  time); optional spectral norm on the energy's layers and Gaussian ``data_noise`` on x+.
* ``"nce"``: noise-contrastive estimation (Gutmann and Hyvarinen 2010) with a learned
  ``log Z`` and ``nu = noise_ratio`` noise points per data point::

      h(u) = f(u) - log Z - log nu - log p_n(u)
      loss(x, y_1..y_nu) = softplus(-h(x)) + sum_j softplus(h(y_j))

  whose expectation is ``E_data softplus(-h) + nu E_noise softplus(h)``; at its minimum
  ``exp(f - log Z) = p_data``, so the learned ``log Z`` is the true normaliser. ``p_n`` is a
  Gaussian fitted to the training data (:class:`lebm.density.GaussianNoise`) or any given
  distribution by class path.
* ``"score_matching"``: :mod:`lebm.score_matching` on the score ``grad_x f``: ``exact``
  (Hyvarinen), ``sliced`` (SSM-VR) or ``denoising`` (one noise level ``dsm_sigma``; the model
  then learns the data blurred by ``N(0, dsm_sigma^2 I)``). No sampling while training.

``sample(n)`` runs ``sampler`` (set apart from ``train_sampler``) from noise. For data of one
or two dimensions evaluation is exact up to the grid: ``log Z`` is summed on a grid over the
box ``grid_bounds^D`` (:func:`lebm.density.grid_log_normalizer`) and ``val/nll``,
``test/nll`` are nats per held-out point (``callbacks.DensityMap`` adds the KDE baseline and
the heat map).

Non-finite losses or energies raise :class:`EnergyDivergenceError` naming the config keys to
change; chains that diverge raise :class:`~lebm.samplers.SamplerDivergenceError` likewise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from jsonargparse import lazy_instance
from torch import Tensor, nn

from lebm.components import as_factory, as_instance
from lebm.data import batch_data
from lebm.density import GaussianNoise, check_grid, grid_log_normalizer
from lebm.losses import contrastive_energy_loss
from lebm.models.base import GenerativeModel
from lebm.nets import ConvEnergy, EnergyMLP
from lebm.samplers import Langevin, Sampler, SamplerDivergenceError, SamplerResult
from lebm.score_matching import ScoreObjective, score_from_energy, score_matching_loss

Objective = Literal["cd", "nce", "score_matching"]
OBJECTIVES = ("cd", "nce", "score_matching")
ChainInit = Literal["noise", "buffer"]
InitDistribution = Literal["uniform", "gaussian"]

DataEnergyFactory = Callable[[int | tuple[int, ...]], nn.Module]
"""``energy(d)`` for vector data of shape (d,) (e.g. :class:`lebm.nets.EnergyMLP`),
``energy(data_shape)`` otherwise (e.g. :class:`lebm.nets.ConvEnergy`); ``f``: (B, *data_shape)
-> (B,)."""

NoiseFactory = Callable[[tuple[int, ...]], nn.Module]
"""``noise(data_shape)`` -> a module with ``log_prob(x)`` (B,) and ``sample(n, generator)``."""

# Toy-data chains in lebm's step convention x + s grad f + sqrt(2 s) eps (ebm-anatomy's toy
# Langevin eps = 0.125 is s = eps^2 / 2 = 0.0078). Signature defaults are lazy instances.
DEFAULT_TRAIN_SAMPLER = lazy_instance(Langevin, n_steps=20, step_size=0.01)
DEFAULT_SAMPLER = lazy_instance(Langevin, n_steps=500, step_size=0.005)

_HINTS = {
    "cd": "lower model.init_args.lr or model.init_args.train_sampler.init_args.step_size, raise "
    "model.init_args.energy_l2 (e.g. 0.1), or set model.init_args.spectral_norm: true",
    "nce": "lower model.init_args.lr, or widen the noise so that it covers the data "
    "(model.init_args.noise.init_args.scale, e.g. 1.5)",
    "score_matching": "lower model.init_args.lr, or use model.init_args.score_objective: "
    "denoising (no second derivatives)",
}


class EnergyDivergenceError(FloatingPointError):
    """Raised when the EBM's loss, energies or grid normaliser stop being finite."""


class LogNormalizer(nn.Module):
    """The learned ``log Z`` of noise-contrastive estimation: a parameter of shape (1,)."""

    def __init__(self) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.zeros(1))

    def forward(self) -> Tensor:
        return self.value


class EBM(GenerativeModel):
    """Data-space EBM ``p(x) ∝ exp(f(x))`` trained by ``objective`` (see the module docstring).

    Defaults suit standardised 2-D toy data: an MLP energy 2-200-200-1 (GELU); CD negatives by
    20 Langevin steps of s = 0.01 from a 10,000-chain replay buffer with 5% restarts from
    uniform noise on ``[-3, 3]^D``; samples by 500 Langevin steps of s = 0.005 from the same
    noise; Adam lr 1e-3; ``log Z`` on a 400-per-axis grid over ``[-4, 4]^D``.

    Args:
        data_shape: shape of one data point; linked from the datamodule by the CLI.
        energy: the network ``f``, a class built as ``energy(d)`` for vector data (d,) and as
            ``energy(data_shape)`` otherwise, mapping (B, *data_shape) -> (B,). None:
            :class:`lebm.nets.EnergyMLP` (vector data) or :class:`lebm.nets.ConvEnergy`.
        objective: ``"cd"``, ``"nce"`` or ``"score_matching"``.
        train_sampler: (cd) sampler object drawing the negatives.
        chain_init: (cd) negatives start from ``"noise"`` or from the persistent ``"buffer"``.
        buffer_size: (cd, buffer) number of persistent chains (>= batch size).
        reinit_fraction: (cd, buffer) probability that a chain restarts from noise.
        energy_l2: (cd) weight of ``f(x+)^2 + f(x-)^2`` (IGEBM 1.0, TorchEBM 0.001).
        data_noise: (cd) std of Gaussian noise added to the data (ebm-anatomy 0.03 for images).
        noise: (nce) the noise distribution, a class built as ``noise(data_shape)``; None:
            :class:`lebm.density.GaussianNoise` fitted to the training data. A noise with a
            ``fit`` method and a false ``fitted`` flag is fitted on up to
            ``noise_fit_points`` training points when training starts.
        noise_ratio: (nce) ``nu``, noise points per data point (an int >= 1).
        noise_fit_points: (nce) training points used to fit the noise.
        score_objective: (score_matching) ``"exact"``, ``"sliced"`` or ``"denoising"``.
        num_projections: (score_matching, sliced) random directions per data point.
        dsm_sigma: (score_matching, denoising) the noise level.
        spectral_norm: spectral normalisation of every linear and conv layer of ``f``.
        init_distribution: chain starts (negatives, samples): ``"uniform"`` on
            ``[-init_scale, init_scale]^D`` or ``"gaussian"`` ``N(0, init_scale^2 I)``.
        init_scale: the size of that noise.
        sampler: sampler object used by :meth:`sample` (evaluation, plots, predict).
        grid_bounds: ``(low, high)`` of the box over which ``log Z`` is summed (1-D, 2-D data).
        grid_size: grid cells per axis.
        lr: Adam learning rate.
        betas: Adam betas.
        weight_decay: Adam (decoupled) weight decay.
        lr_decay: ExponentialLR gamma applied once per epoch (1.0 = constant rate).
    """

    def __init__(
        self,
        data_shape: tuple[int, ...] = (2,),
        energy: DataEnergyFactory | None = None,
        objective: Objective = "cd",
        train_sampler: Sampler = DEFAULT_TRAIN_SAMPLER,
        chain_init: ChainInit = "buffer",
        buffer_size: int = 10_000,
        reinit_fraction: float = 0.05,
        energy_l2: float = 0.0,
        data_noise: float = 0.0,
        noise: NoiseFactory | None = None,
        noise_ratio: int = 1,
        noise_fit_points: int = 100_000,
        score_objective: ScoreObjective = "sliced",
        num_projections: int = 1,
        dsm_sigma: float = 0.1,
        spectral_norm: bool = False,
        init_distribution: InitDistribution = "uniform",
        init_scale: float = 3.0,
        sampler: Sampler = DEFAULT_SAMPLER,
        grid_bounds: tuple[float, float] = (-4.0, 4.0),
        grid_size: int = 400,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        lr_decay: float = 1.0,
    ) -> None:
        super().__init__(data_shape)
        _validate(locals())
        vector = len(self.data_shape) == 1
        default = EnergyMLP if vector else ConvEnergy
        size = self.data_shape[0] if vector else self.data_shape
        self.energy = as_factory(energy or default, "energy")(size)
        if spectral_norm:
            for module in list(self.energy.modules()):
                if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.ConvTranspose2d):
                    nn.utils.parametrizations.spectral_norm(module)
        self.train_sampler = as_instance(train_sampler, Sampler, "train_sampler")
        self.sampler = as_instance(sampler, Sampler, "sampler")
        self.noise = self.log_normalizer = None
        if objective == "nce":
            self.noise = as_factory(noise or GaussianNoise, "noise")(self.data_shape)
            self.log_normalizer = LogNormalizer()
        if objective == "cd" and chain_init == "buffer":
            self.register_buffer("replay_buffer", self.initial_states(buffer_size))
        else:
            self.replay_buffer = None
        self._grid_log_z: Tensor | None = None

    # ----------------------------------------------------------------- densities
    def log_density(self, x: Tensor) -> Tensor:
        """The unnormalised ``log p(x) = f(x)``: (B, *data_shape) -> (B,)."""
        f = self.energy(x)
        if f.shape != x.shape[:1]:
            raise ValueError(
                f"energy must return one value per data point, shape ({len(x)},); got "
                f"{tuple(f.shape)} (model.init_args.energy)"
            )
        return f

    @property
    def gridded(self) -> bool:
        """Whether ``log Z`` can be computed on a grid (data of shape (1,) or (2,))."""
        return len(self.data_shape) == 1 and self.data_shape[0] <= 2

    def grid_log_normalizer(self) -> Tensor:
        """``log Z`` over the box ``grid_bounds^D`` (1-D and 2-D data), 0-d.

        Raises:
            EnergyDivergenceError: ``f`` is not finite somewhere on the grid.
        """
        if not self.gridded:
            raise ValueError(
                f"grid normalisers need data of shape (1,) or (2,), not {self.data_shape}"
            )
        hp = self.hparams
        log_z = grid_log_normalizer(
            self.log_density, self.data_shape[0], hp.grid_bounds, hp.grid_size, self.device
        )
        if not torch.isfinite(log_z):
            raise EnergyDivergenceError(
                f"EBM: log Z on the grid over {tuple(hp.grid_bounds)} is {log_z.item()}: the "
                f"energy is not finite there; {_HINTS[hp.objective]}"
            )
        return log_z

    def normalized_log_density(self, x: Tensor) -> Tensor:
        """``f(x) - log Z`` with the grid's ``log Z`` (1-D, 2-D data): (B, D) -> (B,)."""
        return self.log_density(x) - self.grid_log_normalizer()

    # ----------------------------------------------------------------- sampling
    def initial_states(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Chain starts: uniform on ``[-c, c]^D`` or ``N(0, c^2 I)``, c = ``init_scale``;
        shape (n, *data_shape)."""
        hp = self.hparams
        shape, device = (n, *self.data_shape), self.device
        if hp.init_distribution == "uniform":
            return (2 * torch.rand(shape, generator=generator, device=device) - 1) * hp.init_scale
        return torch.randn(shape, generator=generator, device=device) * hp.init_scale

    def _run(self, sampler: Sampler, x0: Tensor, generator, key: str) -> SamplerResult:
        try:
            return sampler(self.log_density, x0, generator=generator)
        except SamplerDivergenceError as err:
            raise SamplerDivergenceError(
                f"{err} [EBM: lower model.init_args.{key}.init_args.step_size, or raise "
                "model.init_args.energy_l2]"
            ) from err

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
        """``sampler`` chains from noise: (num_samples, *data_shape)."""
        x0 = self.initial_states(num_samples, generator)
        return self._run(self.sampler, x0, generator, "sampler").sample

    def negatives(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """(cd) Negatives for one batch: ``train_sampler`` chains from noise or the buffer.

        Returns:
            samples (n, *data_shape), detached; the buffer rows they came from (n,) or None
            (the caller writes them back, see :meth:`training_step`); sampler diagnostics.
        """
        hp = self.hparams
        rows = None
        x0 = self.initial_states(n, generator)
        if self.replay_buffer is not None:
            if n > hp.buffer_size:
                raise ValueError(
                    f"EBM: the batch ({n}) is larger than buffer_size={hp.buffer_size}; raise "
                    "model.init_args.buffer_size"
                )
            device = self.replay_buffer.device
            rows = torch.randperm(hp.buffer_size, generator=generator, device=device)[:n]
            fresh = torch.rand(n, generator=generator, device=self.device) < hp.reinit_fraction
            fresh = fresh.view(-1, *([1] * len(self.data_shape)))
            x0 = torch.where(fresh, x0, self.replay_buffer[rows])
        result = self._run(self.train_sampler, x0, generator, "train_sampler")
        logs = {f"train_sampler_{k}": v for k, v in result.diagnostics().items()}
        return result.sample, rows, logs

    # ----------------------------------------------------------------- objectives
    def objective_losses(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor], tuple[Tensor, Tensor] | None]:
        """Per-sample loss of ``objective`` on batch x (the one place it is branched on).

        Returns:
            the loss per data point (B,); values to log (0-d, detached); for cd with a
            buffer, ``(rows, negatives)`` to write back into it, else None.
        """
        hp = self.hparams
        if hp.objective == "cd":
            if hp.data_noise > 0:
                x = x + hp.data_noise * torch.randn(
                    x.shape, generator=generator, device=x.device, dtype=x.dtype
                )
            x_neg, rows, logs = self.negatives(len(x), generator)
            f = self.log_density(torch.cat([x, x_neg]))
            f_pos, f_neg = f[: len(x)], f[len(x) :]
            loss = contrastive_energy_loss(f_pos, f_neg, hp.energy_l2)
            logs |= {"f_pos": f_pos.detach().mean(), "f_neg": f_neg.detach().mean()}
            return loss, logs, None if rows is None else (rows, x_neg)
        if hp.objective == "nce":
            nu = hp.noise_ratio
            y = self.noise.sample(nu * len(x), generator).to(x)
            u = torch.cat([x, y])
            h = (
                self.log_density(u)
                - self.log_normalizer()
                - math.log(nu)
                - self.noise.log_prob(u).detach()
            )
            h_data, h_noise = h[: len(x)], h[len(x) :].view(nu, len(x))
            loss = F.softplus(-h_data) + F.softplus(h_noise).sum(0)
            accuracy = torch.cat([h_data > 0, (h_noise < 0).flatten()]).float().mean()
            logs = {"log_z": self.log_normalizer().detach()[0], "nce_accuracy": accuracy}
            return loss, logs, None
        score = score_from_energy(lambda u, *_: -self.log_density(u))
        loss = score_matching_loss(
            hp.score_objective,
            score,
            x,
            sigmas=hp.dsm_sigma if hp.score_objective == "denoising" else None,
            num_projections=hp.num_projections if hp.score_objective == "sliced" else 1,
            generator=generator,
        )
        return loss, {}, None

    def learning_losses(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``{"energy": per-sample loss (B,)}``; the replay buffer is read, never written."""
        return {"energy": self.objective_losses(x, generator)[0]}

    def gradient_groups(self) -> dict[str, nn.Module]:
        if self.log_normalizer is None:
            return {"energy": self.energy}
        return {"energy": nn.ModuleList([self.energy, self.log_normalizer])}

    # ----------------------------------------------------------------- Lightning
    def on_train_start(self) -> None:
        """(nce) Fit the noise to up to ``noise_fit_points`` training points, once."""
        noise = self.noise
        if noise is None or not hasattr(noise, "fit") or bool(getattr(noise, "fitted", True)):
            return
        parts, count = [], 0
        for batch in self.trainer.train_dataloader:
            parts.append(batch_data(batch).to(self.device))
            count += len(parts[-1])
            if count >= self.hparams.noise_fit_points:
                break
        noise.fit(torch.cat(parts)[: self.hparams.noise_fit_points])

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss_per_sample, logs, write_back = self.objective_losses(batch_data(batch))
        loss = loss_per_sample.mean()
        if not torch.isfinite(loss):
            raise EnergyDivergenceError(
                f"EBM ({self.hparams.objective}): the training loss is {loss.item()} at step "
                f"{self.global_step}; {_HINTS[self.hparams.objective]}"
            )
        if write_back is not None:
            rows, x_neg = write_back
            self.replay_buffer[rows] = x_neg
        self.log_dict({f"train/{k}": v for k, v in logs.items()})
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._grid_log_z = None

    def on_test_epoch_start(self) -> None:
        self._grid_log_z = None

    @torch.no_grad()
    def evaluation_metrics(self, x: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """``f_data`` (mean energy of the batch); for 1-D / 2-D data ``nll`` (nats per point,
        ``log Z`` on the grid, computed once per epoch); for nce also the learned ``log_z``
        and the grid's ``log_z_grid``."""
        f = self.log_density(x)
        if not bool(torch.isfinite(f).all()):
            raise EnergyDivergenceError(
                f"EBM: non-finite energy on held-out data; {_HINTS[self.hparams.objective]}"
            )
        metrics = {"f_data": f.mean()}
        if self.gridded:
            if self._grid_log_z is None:
                self._grid_log_z = self.grid_log_normalizer()
            metrics["nll"] = (self._grid_log_z - f).mean()
            if self.log_normalizer is not None:
                metrics |= {"log_z": self.log_normalizer()[0], "log_z_grid": self._grid_log_z}
        return metrics

    def configure_optimizers(self):
        hp = self.hparams
        params = list(self.energy.parameters())
        if self.log_normalizer is not None:
            params += list(self.log_normalizer.parameters())
        optimizer = torch.optim.AdamW(
            params, lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay
        )
        if hp.lr_decay == 1.0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, hp.lr_decay)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }


def _validate(args: dict) -> None:
    """Check hyperparameters; each error names the argument, the value and what is allowed."""
    problems = []
    choices = {
        "objective": OBJECTIVES,
        "chain_init": ("noise", "buffer"),
        "score_objective": ("exact", "sliced", "denoising"),
        "init_distribution": ("uniform", "gaussian"),
    }
    for name, allowed in choices.items():
        if args[name] not in allowed:
            problems.append(f"{name} must be one of {allowed}, got {args[name]!r}")
    for name in ("buffer_size", "noise_ratio", "noise_fit_points", "num_projections"):
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"{name} must be an int >= 1, got {value!r}")
    for name in ("dsm_sigma", "init_scale", "lr"):
        if not args[name] > 0:
            problems.append(f"{name} must be > 0, got {args[name]}")
    for name in ("energy_l2", "data_noise", "weight_decay"):
        if not args[name] >= 0:
            problems.append(f"{name} must be >= 0, got {args[name]}")
    if not 0.0 < args["lr_decay"] <= 1.0:
        problems.append(f"lr_decay (ExponentialLR gamma) must be in (0, 1], got {args['lr_decay']}")
    if not 0.0 <= args["reinit_fraction"] <= 1.0:
        problems.append(f"reinit_fraction must be in [0, 1], got {args['reinit_fraction']}")
    if len(args["betas"]) != 2 or not all(0.0 <= b < 1.0 for b in args["betas"]):
        problems.append(f"betas must be two numbers in [0, 1), got {args['betas']}")
    try:
        check_grid(args["grid_bounds"], args["grid_size"])
    except (TypeError, ValueError) as err:
        problems.append(str(err))
    if problems:
        raise ValueError("EBM: " + "; ".join(problems))
