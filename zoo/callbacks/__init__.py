"""Callbacks shared by every family."""

from zoo.callbacks.checkpoint_io import AtomicCheckpointIO
from zoo.callbacks.ema import EMA
from zoo.callbacks.export import ExportBest
from zoo.callbacks.plot import CurvePlotter
from zoo.callbacks.pruning import OptunaPruning
from zoo.callbacks.quality import SampleQuality
from zoo.callbacks.samples import SampleWriter

__all__ = [
    "AtomicCheckpointIO",
    "EMA",
    "ExportBest",
    "CurvePlotter",
    "OptunaPruning",
    "SampleQuality",
    "SampleWriter",
]
