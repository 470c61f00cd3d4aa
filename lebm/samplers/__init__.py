"""MCMC samplers shared by every model: pure functions of a log-density (or score) and a start
tensor, and the sampler objects (settings only) that models take by class path."""

from lebm.samplers.base import (
    GaussianReference,
    LogProb,
    SamplerDivergenceError,
    SamplerResult,
)
from lebm.samplers.hmc import hmc
from lebm.samplers.langevin import langevin, mala
from lebm.samplers.objects import HMC, MALA, Langevin, RandomWalkMetropolis, Sampler
from lebm.samplers.rwm import RandomWalkResult, random_walk_metropolis
from lebm.samplers.score_based import (
    DDPMVariance,
    EpsModel,
    NoiseConditionalScore,
    ScoreSamplerResult,
    annealed_langevin,
    ddpm_ancestral,
)

__all__ = [
    "HMC",
    "MALA",
    "Langevin",
    "RandomWalkMetropolis",
    "RandomWalkResult",
    "Sampler",
    "DDPMVariance",
    "GaussianReference",
    "EpsModel",
    "LogProb",
    "NoiseConditionalScore",
    "SamplerDivergenceError",
    "SamplerResult",
    "ScoreSamplerResult",
    "annealed_langevin",
    "ddpm_ancestral",
    "hmc",
    "langevin",
    "mala",
    "random_walk_metropolis",
]
