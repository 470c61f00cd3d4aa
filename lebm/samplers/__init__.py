"""MCMC samplers shared by every model: pure functions of a log-density and a start tensor."""

from lebm.samplers.base import LogProb, SamplerDivergenceError, SamplerResult
from lebm.samplers.langevin import langevin, mala

__all__ = ["LogProb", "SamplerDivergenceError", "SamplerResult", "langevin", "mala"]
