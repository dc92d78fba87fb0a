"""Shuffling that depends on the run's seed and the epoch only, never on the global RNG.

A resumed run then sees each epoch's batches in the order the interrupted run would have,
and the global generator (restored from the checkpoint) draws the same noise and
augmentations: the resumed curves continue the interrupted ones exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """A random permutation of ``range(num_items)`` per epoch, drawn from ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every training epoch. ``seed`` defaults to
    torch's initial seed, the one ``seed_everything`` set for the run.
    """

    def __init__(self, num_items: int, seed: int | None = None):
        self.num_items = num_items
        self.seed = torch.initial_seed() if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        return iter(torch.randperm(self.num_items, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_items


def loader_generator(seed: int | None = None) -> torch.Generator:
    """Return a generator for a DataLoader's own draws (its workers' base seed), so that
    building an iterator never advances the global generator."""
    return torch.Generator().manual_seed(torch.initial_seed() if seed is None else seed)
