"""Classifier-free guidance (Ho & Salimans, 2022): label dropout in training, and the mix of
conditional and unconditional predictions at sampling.

A class-conditional network takes labels 0 … K−1 and one more id, K, that stands for "no
label"; training replaces a share of the labels by K, so one network learns both the
conditional and the unconditional model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from zoo.errors import ConfigError

# A denoising network: inputs (B, C, H, W), timesteps (B,), labels (B,) or None → (B, C, H, W).
Network = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def drop_labels(
    labels: torch.Tensor,
    probability: float,
    null_label: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return ``labels`` (B,) with each one replaced by ``null_label`` with ``probability``."""
    drop = torch.rand(labels.shape, device=labels.device, generator=generator) < probability  # (B,)
    return torch.where(drop, torch.full_like(labels, null_label), labels)


def guidance_mix(
    conditional: torch.Tensor, unconditional: torch.Tensor, scale: float
) -> torch.Tensor:
    """Return u + w·(c − u): w = 1 is the conditional prediction, w = 0 the unconditional,
    w > 1 pushes past the conditional one (Ho & Salimans, eq. 6, with w = 1 + their w)."""
    return unconditional + scale * (conditional - unconditional)


def guidance_scale(guidance: float | None, labels: torch.Tensor | None) -> float:
    """Return the guidance scale w of a sampling call (1, the plain model, when None).

    ``labels`` are the classes drawn (None for an unconditional model). Guidance mixes a
    class-conditional model's two halves, so a scale other than 1 needs one: raises
    ConfigError for an unconditional model."""
    if guidance is None:
        return 1.0
    if guidance != 1.0 and labels is None:
        raise ConfigError(
            f"guidance={guidance} mixes the conditional and unconditional halves of a "
            "class-conditional model (trained with model.conditional=true); this one is "
            "unconditional: leave guidance out"
        )
    return float(guidance)


def null_labels(count: int, num_classes: int, device=None) -> torch.Tensor | None:
    """Return the "no label" id num_classes for each of ``count`` samples (count,): what a
    class-conditional network draws from when no class is asked; None for an unconditional
    network (``num_classes`` 0)."""
    if not num_classes:
        return None
    return torch.full((count,), num_classes, dtype=torch.long, device=device)


def guided_prediction(
    network: Network,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    labels: torch.Tensor | None,
    scale: float,
    null_label: int,
) -> torch.Tensor:
    """Return the network's prediction at (x, timesteps) guided towards ``labels`` with
    ``scale``, in ONE network call: with guidance the conditional and unconditional halves
    go through together as a batch of 2B. Without labels, or at scale 1, it is the plain
    prediction; at scale 0 the unconditional one, in a batch of B."""
    if labels is None or scale == 1.0:
        return network(x, timesteps, labels)
    unconditional = torch.full_like(labels, null_label)
    if scale == 0.0:  # the unconditional model alone
        return network(x, timesteps, unconditional)
    both = network(
        torch.cat([x, x]), torch.cat([timesteps, timesteps]), torch.cat([labels, unconditional])
    )  # (2B, C, H, W)
    conditional, free = both.chunk(2)
    return guidance_mix(conditional, free, scale)
