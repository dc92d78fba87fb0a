"""Checkpoints of a run: the best by the monitored metric, and last.ckpt at every epoch's end."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint


class LastEpochCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, except that ``last.ckpt`` is the end of every epoch.

    Lightning writes ``last.ckpt`` only at a step where it also saved a top-k checkpoint,
    so with a monitored metric that stops improving, ``last`` stays at the best epoch
    and a resume from it repeats every epoch since. Here, after Lightning's own saving,
    ``last.ckpt`` is written at the end of each training epoch where it was not already
    (validation has run by then), whatever the monitored metric does.
    """

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
