"""Callbacks shared by every family."""

from zoo.callbacks.checkpoint import LastEpochCheckpoint
from zoo.callbacks.ema import EMA
from zoo.callbacks.export import ExportJudge
from zoo.callbacks.plot import CurvePlotter
from zoo.callbacks.pruning import OptunaPruning
from zoo.callbacks.quality import SampleQuality
from zoo.callbacks.samples import SampleWriter

__all__ = [
    "EMA",
    "CurvePlotter",
    "ExportJudge",
    "LastEpochCheckpoint",
    "OptunaPruning",
    "SampleQuality",
    "SampleWriter",
]
