"""When a periodic callback acts: every n-th epoch, and at the run's last one."""

from __future__ import annotations

import lightning as L


def epoch_is_due(trainer: L.Trainer, every_n_epochs: int) -> bool:
    """Return whether the validation ending now falls on an every-``every_n_epochs`` epoch or
    ends the run (its last epoch, or the step that reaches ``max_steps``); never during the
    sanity check. ``max_epochs`` of -1 or None (a run bounded by steps only) has no last epoch."""
    if trainer.sanity_checking:
        return False
    epoch = trainer.current_epoch + 1
    last_epoch = trainer.max_epochs not in (None, -1) and epoch >= trainer.max_epochs
    last_step = trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps
    return epoch % every_n_epochs == 0 or last_epoch or last_step
