"""Training observers: sample plots, metric curves, progress lines, run reports, prediction
writers; exact resume (random states in checkpoints) and the divergence guard."""

from callbacks.curves import MetricCurves
from callbacks.density import DensityMap
from callbacks.divergence import DivergenceGuard
from callbacks.fid import FIDCallback
from callbacks.grad_variance import GradientVariance
from callbacks.prediction_writer import SampleWriter
from callbacks.progress import EpochLines
from callbacks.report import RunReport
from callbacks.resume import ExactResume
from callbacks.samples import SamplePlotter

__all__ = [
    "DensityMap",
    "DivergenceGuard",
    "EpochLines",
    "ExactResume",
    "FIDCallback",
    "GradientVariance",
    "MetricCurves",
    "RunReport",
    "SamplePlotter",
    "SampleWriter",
]
