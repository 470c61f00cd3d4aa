"""Training observers: sample plots, metric curves, prediction writers."""

from callbacks.curves import MetricCurves
from callbacks.prediction_writer import SampleWriter
from callbacks.samples import SamplePlotter

__all__ = ["MetricCurves", "SamplePlotter", "SampleWriter"]
