"""MCMC samplers shared by every model: pure functions of a log-density (or score) and a start
tensor."""

from lebm.samplers.base import LogProb, SamplerDivergenceError, SamplerResult
from lebm.samplers.langevin import langevin, mala
from lebm.samplers.score_based import (
    DDPMVariance,
    EpsModel,
    NoiseConditionalScore,
    ScoreSamplerResult,
    annealed_langevin,
    ddpm_ancestral,
)

__all__ = [
    "DDPMVariance",
    "EpsModel",
    "LogProb",
    "NoiseConditionalScore",
    "SamplerDivergenceError",
    "SamplerResult",
    "ScoreSamplerResult",
    "annealed_langevin",
    "ddpm_ancestral",
    "langevin",
    "mala",
]
