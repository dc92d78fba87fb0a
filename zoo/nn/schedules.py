"""Learning-rate schedules as pure functions of the step, and LambdaLR factories for Hydra.

Use as a partial; ``total_steps: null`` spans the whole run (the family's
``make_scheduler`` fills in the trainer's epochs, or its optimizer steps with
``scheduler_interval: step``)::

    scheduler:
      _target_: zoo.nn.schedules.warmup_cosine
      _partial_: true
      warmup_steps: 100
      total_steps: null
      min_lr_ratio: 0.1
    scheduler_interval: step

The LambdaLR keeps no horizon in its state_dict, so a run resumed with a larger
``trainer.max_epochs`` or ``max_steps`` follows the schedule planned for its new length.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from zoo.errors import ConfigError


def warmup_cosine_factor(
    step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float
) -> float:
    """Return the multiple of the base learning rate at optimizer step ``step`` (from 0).

    nanoGPT's schedule: a linear warm-up, ``(step + 1) / (warmup_steps + 1)``, for the
    first ``warmup_steps`` steps; then a cosine from 1 down to ``min_lr_ratio`` at
    ``total_steps``; ``min_lr_ratio`` after that.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step > total_steps:
        return min_lr_ratio
    progress = (step - warmup_steps) / (total_steps - warmup_steps)  # 0 → 1
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 → 0
    return min_lr_ratio + cosine * (1.0 - min_lr_ratio)


# A cosine from the learning rate down to 0 over the whole run, with no warm-up: the
# default of the families that schedule per epoch (torch's CosineAnnealingLR with
# T_max = the run's epochs and eta_min = 0, in closed form).
COSINE_OVER_THE_RUN = {
    "_target_": "zoo.nn.schedules.warmup_cosine",
    "_partial_": True,
    "warmup_steps": 0,
    "total_steps": None,
    "min_lr_ratio": 0.0,
}


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int = 0,
    total_steps: int | None = None,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Return a LambdaLR following :func:`warmup_cosine_factor`, stepped every epoch or every
    optimizer step; raises ConfigError for a warm-up that does not fit in ``total_steps``."""
    if total_steps is None:
        raise ConfigError(
            "warmup_cosine needs total_steps: the run's length, filled in by the family when "
            "its scheduler config says total_steps: null"
        )
    if not 0 <= warmup_steps < total_steps:
        raise ConfigError(
            f"the warm-up + cosine schedule needs 0 <= warmup_steps < total_steps, got "
            f"warmup_steps={warmup_steps}, total_steps={total_steps}; set the scheduler's "
            "total_steps to the run's length (e.g. trainer.max_steps)"
        )
    if not 0 <= min_lr_ratio <= 1:
        raise ConfigError(f"min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
    return LambdaLR(
        optimizer,
        lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_lr_ratio),
    )
