"""Sampler objects: the settings of an MCMC sampler, chosen by class path in a config.

A model holds one object per chain it runs (LatentEBM: ``prior_sampler`` and
``posterior_sampler``) and calls it as ``sampler(log_prob, z0, generator=None)``. The object
keeps settings only (steps, step size, leapfrog count, mass); the work is done by the pure
functions :func:`~lebm.samplers.langevin` and :func:`~lebm.samplers.hmc`, so a call has no
hidden state and a new sampler needs no edit of any model::

    model:
      class_path: lebm.models.LatentEBM
      init_args:
        posterior_sampler:
          class_path: lebm.samplers.HMC
          init_args: {n_steps: 10, step_size: 0.05, n_leapfrog: 3}

A sampler of your own subclasses :class:`Sampler`, keeps every ``__init__`` argument as an
attribute of the same name (that is how it is written into checkpoints) and implements
:meth:`Sampler.__call__`.

Step sizes follow lebm's Langevin convention ``z + s grad log pi + sqrt(2 s) eps`` (a paper
writing ``z - (h^2/2) grad E + h eps`` has ``s = h^2 / 2``); HMC's step size is the leapfrog
step ``epsilon`` (see :func:`~lebm.samplers.hmc`); random-walk Metropolis proposes
``z + sqrt(2 s) eps`` (the Langevin step without its drift; see
:func:`~lebm.samplers.random_walk_metropolis`).
"""

from __future__ import annotations

import abc
from typing import Any

import torch
from torch import Tensor

from lebm.components import class_path, init_args_of
from lebm.samplers.base import GaussianReference, LogProb, SamplerResult
from lebm.samplers.hmc import hmc
from lebm.samplers.langevin import langevin
from lebm.samplers.rwm import JumpDistribution, check_jumps, random_walk_metropolis


class Sampler(abc.ABC):
    """An MCMC sampler over a log-density: ``n_steps`` transitions of step size ``step_size``.

    Args:
        n_steps: transitions per call (>= 0).
        step_size: step size (> 0); see the subclass for its meaning.
        compile: run the log-density through ``torch.compile`` (forward and backward graphs
            compiled by Inductor). Off by default: on a 2-core CPU it took about 100 s to
            compile LatentEBM's toy prior and its chains did not run faster
            (benchmarks/results.md); it pays where per-step kernel launches dominate (GPU).
    """

    def __init__(self, n_steps: int, step_size: float, compile: bool = False) -> None:
        if int(n_steps) != n_steps or n_steps < 0:
            raise ValueError(f"{type(self).__name__}: n_steps must be an int >= 0, got {n_steps}")
        if not step_size > 0:
            raise ValueError(f"{type(self).__name__}: step_size must be > 0, got {step_size}")
        self.n_steps = int(n_steps)
        self.step_size = float(step_size)
        self.compile = bool(compile)

    def _target(self, log_prob: LogProb) -> LogProb:
        """``log_prob``, compiled by ``torch.compile`` when ``compile`` is set (for a
        :class:`GaussianReference`, its ``rest``; the analytic term stays as it is). Dynamo
        caches by code object, so a fresh closure per call (LatentEBM's posterior) compiles
        once and is reused while its guards (shapes, modules) hold."""
        if not self.compile:
            return log_prob
        if isinstance(log_prob, GaussianReference):
            return GaussianReference(torch.compile(log_prob.rest), log_prob.sigma)
        return torch.compile(log_prob)

    @abc.abstractmethod
    def __call__(
        self,
        log_prob: LogProb,
        z0: Tensor,
        *,
        generator: torch.Generator | None = None,
        step_size: float | Tensor | None = None,
        n_steps: int | None = None,
        return_trajectory: bool = False,
    ) -> SamplerResult:
        """Run one chain per row of ``z0`` (B, *event) on ``log_prob`` ((B, *event) -> (B,)).

        ``step_size`` and ``n_steps`` override the object's settings for this call; a tensor
        step size of shape (B,) gives each chain its own (a temperature ladder in one call).
        ``return_trajectory`` also returns every state, shape (n_steps + 1, B, *event) (the
        Langevin autoencoder averages its loss over them).
        """

    def _settings(
        self, step_size: float | Tensor | None, n_steps: int | None
    ) -> tuple[float | Tensor, int]:
        return (self.step_size if step_size is None else step_size), (
            self.n_steps if n_steps is None else n_steps
        )

    def config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}``: the plain-data form stored in checkpoints."""
        return {"class_path": class_path(type(self)), "init_args": init_args_of(self)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sampler) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in init_args_of(self).items())
        return f"{type(self).__name__}({args})"


class Langevin(Sampler):
    """Unadjusted Langevin (ULA): ``z' = z + s grad log pi(z) + sqrt(2 s) eps``.

    One forward and backward pass of ``log_prob`` per step. Args as :class:`Sampler`
    (including ``compile``); ``step_size`` is ``s``.
    """

    def __init__(self, n_steps: int = 20, step_size: float = 0.005, compile: bool = False) -> None:
        super().__init__(n_steps, step_size, compile)

    mh: bool = False

    def __call__(
        self, log_prob, z0, *, generator=None, step_size=None, n_steps=None, return_trajectory=False
    ):
        step_size, n_steps = self._settings(step_size, n_steps)
        return langevin(
            self._target(log_prob),
            z0,
            n_steps,
            step_size,
            mh=self.mh,
            generator=generator,
            return_trajectory=return_trajectory,
        )


class MALA(Langevin):
    """Metropolis-adjusted Langevin: the Langevin proposal, accepted per chain by
    Metropolis-Hastings (exact stationary law at any step size; acceptance in the result)."""

    mh = True


class HMC(Sampler):
    """Hamiltonian Monte Carlo: ``n_leapfrog`` leapfrog steps of size ``step_size`` per
    proposal, momentum ~ N(0, mass), one Metropolis-Hastings decision per chain.

    With ``n_leapfrog=1`` and unit mass one HMC transition is MALA with ``s = step_size^2 / 2``.

    Args:
        n_steps: proposals per call.
        step_size: leapfrog step ``epsilon``.
        n_leapfrog: leapfrog steps per proposal (L); a proposal costs L gradient evaluations.
        mass: scalar mass (diagonal mass matrices: call :func:`~lebm.samplers.hmc` directly
            with a tensor).
        compile: as :class:`Sampler`.
    """

    def __init__(
        self,
        n_steps: int = 10,
        step_size: float = 0.1,
        n_leapfrog: int = 5,
        mass: float = 1.0,
        compile: bool = False,
    ) -> None:
        super().__init__(n_steps, step_size, compile)
        if int(n_leapfrog) != n_leapfrog or n_leapfrog < 1:
            raise ValueError(f"HMC: n_leapfrog must be an int >= 1, got {n_leapfrog}")
        if not mass > 0:
            raise ValueError(f"HMC: mass must be > 0, got {mass}")
        self.n_leapfrog = int(n_leapfrog)
        self.mass = float(mass)

    def __call__(
        self, log_prob, z0, *, generator=None, step_size=None, n_steps=None, return_trajectory=False
    ):
        step_size, n_steps = self._settings(step_size, n_steps)
        return hmc(
            self._target(log_prob),
            z0,
            n_steps,
            step_size,
            n_leapfrog=self.n_leapfrog,
            mass=self.mass,
            generator=generator,
            return_trajectory=return_trajectory,
        )


class RandomWalkMetropolis(Sampler):
    """Random-walk Metropolis: propose ``z' = z + sqrt(2 s) eps``, accept with probability
    ``min(1, exp(log pi(z') - log pi(z)))``; no gradient, one forward pass per proposal.

    Args as :class:`Sampler`; ``step_size`` is ``s`` (proposal std ``sqrt(2 s)``: a reference
    writing ``N(z, sigma^2 I)`` has ``s = sigma^2 / 2``). ``jump_prob``, ``jump_distribution``
    and ``jump_scale`` add global independence proposals that let chains cross between
    separated modes (see :func:`~lebm.samplers.random_walk_metropolis`; off by default;
    keyword-only, so ``RandomWalkMetropolis(n, s, compile)`` keeps its meaning).
    """

    def __init__(
        self,
        n_steps: int = 100,
        step_size: float = 0.01,
        compile: bool = False,
        *,
        jump_prob: float = 0.0,
        jump_distribution: JumpDistribution = "gaussian",
        jump_scale: float = 1.0,
    ) -> None:
        super().__init__(n_steps, step_size, compile)
        check_jumps(jump_prob, jump_distribution, jump_scale)
        self.jump_prob = float(jump_prob)
        self.jump_distribution = jump_distribution
        self.jump_scale = float(jump_scale)

    def __call__(
        self, log_prob, z0, *, generator=None, step_size=None, n_steps=None, return_trajectory=False
    ):
        step_size, n_steps = self._settings(step_size, n_steps)
        return random_walk_metropolis(
            self._target(log_prob),
            z0,
            n_steps,
            step_size,
            jump_prob=self.jump_prob,
            jump_distribution=self.jump_distribution,
            jump_scale=self.jump_scale,
            generator=generator,
            return_trajectory=return_trajectory,
        )
