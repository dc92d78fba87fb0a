"""Which items each process reads, and in which order: a function of (seed, epoch, rank) only.

Every training sampler here draws an epoch's *global* order from ``(seed, epoch)`` with
its own generator, never the global one; process ``rank`` of ``num_replicas`` reads every
``num_replicas``-th item of that order, starting at its rank (as torch's
DistributedSampler does). At each step the processes together read the next
``num_replicas × batch_size`` items of the order: what one process with the global batch
would read, split without overlap.

The samplers subclass torch's DistributedSampler, so that Lightning takes them as they
are under DDP. (With ``use_distributed_sampler``, its default, Lightning wraps any other
sampler in a DistributedSamplerWrapper, which shards it a second time and, before
Lightning 2.6.1, never passed it the epoch.) They know their epoch from ``set_epoch``,
which Lightning calls on them before every training epoch, and from the checkpoint on
resume (see :class:`ResumableLoader`).

A resumed run thus reads each epoch's batches in the order the interrupted run would
have, from the very batch it stopped at, and the global generator (restored from the
checkpoint) draws the same noise: the resumed curves continue the interrupted ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from zoo.errors import ConfigError

log = logging.getLogger("zoo")


def data_parallel_share(trainer: Any = None) -> tuple[int, int]:
    """Return ``(num_replicas, rank)``: how many processes share the data, and which one this is.

    From the Lightning trainer's strategy where one is attached (its
    ``distributed_sampler_kwargs``), else from ``torch.distributed`` once initialised,
    else ``(1, 0)``.
    """
    kwargs = getattr(trainer, "distributed_sampler_kwargs", None) if trainer is not None else None
    if kwargs:
        return int(kwargs["num_replicas"]), int(kwargs["rank"])
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ShardedSampler(DistributedSampler):
    """A training sampler: each epoch a global order of items, drawn from ``(seed, epoch)``,
    dealt out to the processes in turn; resumable from any position in the epoch.

    Subclasses implement :meth:`epoch_order`, :meth:`order_length` and :meth:`drawn_over`.
    Each process reads ``order_length() // num_replicas`` items an epoch (the at most
    ``num_replicas - 1`` items left over are skipped, so that every process runs the same
    number of steps, as DDP requires). ``consumed`` counts the items of the epoch's global
    order already served to all processes; :class:`ResumableLoader` advances it batch by
    batch.
    ``seed`` defaults to torch's initial seed, the one ``seed_everything`` set for the run.
    """

    def __init__(self, *, num_replicas: int = 1, rank: int = 0, seed: int | None = None):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must lie in [0, {num_replicas}), got {rank}")
        # Not DistributedSampler.__init__: it needs a dataset and sizes the shares its own way.
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = torch.initial_seed() if seed is None else seed
        self.epoch = 0
        self.consumed = 0

    def order_length(self) -> int:
        """Return the number of items in an epoch's global order."""
        raise NotImplementedError

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """Return the epoch's global order of item indices, (order_length(),) int64."""
        raise NotImplementedError

    def drawn_over(self) -> dict[str, int]:
        """Return the sizes the order is drawn from: another value, another order."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.order_length() // self.num_replicas

    def __iter__(self) -> Iterator[int]:
        end = len(self) * self.num_replicas
        if self.consumed >= end:
            self.consumed = 0  # a pass started at the end of an epoch reads the epoch again
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
        order = self.epoch_order(generator)
        return iter(order[self.consumed + self.rank : end : self.num_replicas].tolist())

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.consumed = 0
        self.epoch = epoch

    def advance(self, num_items: int) -> None:
        """Counts ``num_items`` more items of this process (and as many of every other) served."""
        self.consumed = min(
            self.consumed + num_items * self.num_replicas, len(self) * self.num_replicas
        )

    def state_dict(self) -> dict[str, int]:
        """Return where the sampler stands: seed, epoch and items of the epoch already served."""
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "consumed": self.consumed,
            "num_replicas": self.num_replicas,
            "drawn_over": self.drawn_over(),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continues from :meth:`state_dict`'s position; logs one line where the continuation
        cannot be exact (another number of processes, or another epoch length)."""
        self.seed, self.epoch, self.consumed = state["seed"], state["epoch"], state["consumed"]
        if state["drawn_over"] != self.drawn_over():
            log.warning(
                "the checkpoint's data order was drawn over %s, this run's over %s: epoch %d "
                "starts afresh, so the resumed run will not repeat the interrupted one",
                state["drawn_over"],
                self.drawn_over(),
                self.epoch,
            )
            self.consumed = 0
        elif state["num_replicas"] != self.num_replicas:
            log.warning(
                "the checkpoint was written by %d processes, this run has %d: the data order "
                "continues, but the batches group its items differently",
                state["num_replicas"],
                self.num_replicas,
            )


class EpochShuffle(ShardedSampler):
    """A random permutation of ``range(num_items)`` per epoch, drawn from ``(seed, epoch)``
    and shared among the processes without overlap."""

    def __init__(self, num_items: int, **share: Any):
        super().__init__(**share)
        self.num_items = num_items

    def order_length(self) -> int:
        return self.num_items

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(self.num_items, generator=generator)

    def drawn_over(self) -> dict[str, int]:
        return {"num_items": self.num_items}


class RandomStarts(ShardedSampler):
    """``num_samples`` indices drawn uniformly from ``range(num_items)`` per epoch, with
    replacement (nanoGPT's random windows), from ``(seed, epoch)``.

    The draw is rounded up to a multiple of the number of processes, so that none of
    them misses an item; the first ``num_samples`` draws are the same on any number of
    processes.
    """

    def __init__(self, num_items: int, num_samples: int, **share: Any):
        super().__init__(**share)
        if num_items < 1 or num_samples < 1:
            raise ConfigError(f"need items and samples to draw, got {num_items} and {num_samples}")
        self.num_items = num_items
        self.num_samples = num_samples

    def order_length(self) -> int:
        return math.ceil(self.num_samples / self.num_replicas) * self.num_replicas

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(self.num_items, (self.order_length(),), generator=generator)

    def drawn_over(self) -> dict[str, int]:
        return {"num_items": self.num_items, "num_samples": self.num_samples}


class FixedOrder(DistributedSampler):
    """The given items in their order, dealt out to the processes in turn: for validation
    and test, where every item is scored once.

    Unlike torch's DistributedSampler, no process repeats an item to even out the shares.
    Every process gets an equal share instead: with ``N`` items on ``P`` processes, the
    last ``N mod P`` items are left out (one line in the log says so), because Lightning's
    epoch-end average over processes is exact only for equal shares. The figure is then
    the one a single process computes over the same items: choose ``N`` a multiple of the
    number of processes (the presets' 240 and 256 suit 1, 2, 4, 8 and 16) to compare runs
    on any number of devices.
    """

    def __init__(self, items: list[int], *, num_replicas: int = 1, rank: int = 0):
        usable = len(items) - len(items) % num_replicas
        if usable == 0:
            raise ConfigError(
                f"{len(items)} evaluation items cannot be shared by {num_replicas} processes "
                "without one getting none; evaluate on more items or on fewer devices"
            )
        if usable < len(items) and rank == 0:
            log.warning(
                "evaluating %d of %d items: an equal share for each of %d processes; a number "
                "of items divisible by the processes scores them all",
                usable,
                len(items),
                num_replicas,
            )
        self.items = list(items[:usable])
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def __iter__(self) -> Iterator[int]:
        return iter(self.items[self.rank :: self.num_replicas])

    def __len__(self) -> int:
        return len(self.items) // self.num_replicas


class ResumableLoader(DataLoader):
    """A DataLoader whose place in the epoch a checkpoint keeps, for a :class:`ShardedSampler`.

    Lightning's fit loop stores ``state_dict()`` of a training loader that has one in each
    checkpoint and hands it back to ``load_state_dict()`` on resume, before the epoch's
    first batch is drawn. The loader counts the batches it has *served* (not those its
    workers fetched ahead), so the position is exact with ``num_workers > 0`` too: the
    sampler runs in the main process and restarts the epoch at the first batch the
    interrupted run did not train on.
    """

    def __iter__(self):
        sampler = self.sampler
        if not isinstance(sampler, ShardedSampler):  # e.g. Lightning's overfit_batches sampler
            yield from super().__iter__()
            return
        for batch in super().__iter__():
            sampler.advance(self.batch_size)  # before the yield: a checkpoint now counts it
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict() if isinstance(self.sampler, ShardedSampler) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and isinstance(self.sampler, ShardedSampler):
            self.sampler.load_state_dict(state)


def loader_generator(seed: int | None = None) -> torch.Generator:
    """Return a generator for a DataLoader's own draws (its workers' base seed), so that
    building an iterator never advances the global generator."""
    return torch.Generator().manual_seed(torch.initial_seed() if seed is None else seed)


def item_loader(
    dataset: Dataset, batch_size: int, trainer: Any, shuffle: bool, **options: Any
) -> DataLoader:
    """Return the loader of a map-style ``dataset`` as every zoo data module reads one: each
    process its own share; training (``shuffle``) a disjoint part of the epoch's permutation,
    resumable mid-epoch (:class:`ResumableLoader`); evaluation every item once over all
    processes. ``options`` go to the DataLoader (workers, pinned memory)."""
    num_replicas, rank = data_parallel_share(trainer)
    share = {"num_replicas": num_replicas, "rank": rank}
    if shuffle:
        sampler, loader = EpochShuffle(len(dataset), **share), ResumableLoader
    else:
        sampler, loader = FixedOrder(list(range(len(dataset))), **share), DataLoader
    return loader(
        dataset, batch_size=batch_size, sampler=sampler, generator=loader_generator(), **options
    )
