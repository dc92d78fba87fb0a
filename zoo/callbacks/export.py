"""Copies a run's best checkpoint to a fixed path when fitting ends (e.g. judges/digits.ckpt)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only


class ExportBest(L.Callback):
    """After fitting, copies the best checkpoint (or the last, when none is ranked) to ``path``.

    The copy goes to a temporary file beside ``path`` and is renamed, so a reader
    never sees half a file. The classifier presets use it to publish the judge
    that later runs on the same data set evaluate their samples with.
    """

    def __init__(self, path: str):
        self.path = Path(path)

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module):
        checkpoint = trainer.checkpoint_callback
        source = getattr(checkpoint, "best_model_path", "") or getattr(
            checkpoint, "last_model_path", ""
        )
        if not source:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        shutil.copyfile(source, temporary)
        os.replace(temporary, self.path)
        rank_zero_info(f"exported {source} to {self.path}")
