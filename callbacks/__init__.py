"""Training observers: sample plots, metric curves, progress lines, run reports, prediction
writers."""

from callbacks.curves import MetricCurves
from callbacks.density import DensityMap
from callbacks.fid import FIDCallback
from callbacks.grad_variance import GradientVariance
from callbacks.prediction_writer import SampleWriter
from callbacks.progress import EpochLines
from callbacks.report import RunReport
from callbacks.samples import SamplePlotter

__all__ = [
    "DensityMap",
    "EpochLines",
    "FIDCallback",
    "GradientVariance",
    "MetricCurves",
    "RunReport",
    "SamplePlotter",
    "SampleWriter",
]
