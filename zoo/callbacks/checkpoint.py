"""Checkpoints of a run: the best by the monitored metric, last.ckpt at every epoch's end, and
interrupted.ckpt when SIGTERM stops the run."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


class LastEpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, except that ``last.ckpt`` is the end of every epoch and a
    SIGTERM leaves ``interrupted.ckpt``.

    Lightning writes ``last.ckpt`` only at a step where it also saved a top-k checkpoint,
    so with a monitored metric that stops improving, ``last`` stays at the best epoch
    and a resume from it repeats every epoch since. Here, after Lightning's own saving,
    ``last.ckpt`` is written at the end of each training epoch where it was not already
    (validation has run by then), whatever the monitored metric does. When the process
    receives SIGTERM (a scheduler's preemption), the state of the step reached is saved to
    ``interrupted.ckpt`` beside it (``interrupted_path``); ``last.ckpt`` stays the last
    whole epoch. ``resume: auto`` considers both.
    """

    INTERRUPTED = "interrupted.ckpt"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.interrupted_path: str | None = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        if isinstance(exception, SIGTERMException) and not trainer.sanity_checking:
            path = Path(self.dirpath) / self.INTERRUPTED
            trainer.save_checkpoint(path)
            self.interrupted_path = str(path)
