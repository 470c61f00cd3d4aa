"""Training observers: sample plots, metric curves, prediction writers."""

from callbacks.curves import MetricCurves
from callbacks.fid import FIDCallback
from callbacks.grad_variance import GradientVariance
from callbacks.prediction_writer import SampleWriter
from callbacks.samples import SamplePlotter

__all__ = ["FIDCallback", "GradientVariance", "MetricCurves", "SamplePlotter", "SampleWriter"]
