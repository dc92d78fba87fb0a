"""train(cfg) and sample(cfg): the logic behind train.py and sample.py, usable without a CLI.

``zoo.runner.train`` composes a run from a config (data → spec → model, callbacks, loggers,
trainer), fits, tests, evaluates and records it; ``zoo.runner.sample`` rebuilds a model
from a checkpoint alone and writes its samples. ``zoo.runner.build`` holds what both share.
"""

from zoo.runner.build import build_model, resolve_device
from zoo.runner.resume import checkpoint_to_resume
from zoo.runner.sample import sample, sample_options
from zoo.runner.train import train

__all__ = [
    "build_model",
    "checkpoint_to_resume",
    "resolve_device",
    "sample",
    "sample_options",
    "train",
]
