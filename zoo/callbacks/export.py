"""Publishes a classifier run as the judge of its data set (judges/<data>.ckpt)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only

from zoo import checkpoint_format as keys
from zoo.checkpoints import load_checkpoint, model_from_checkpoint
from zoo.errors import ConfigError, ZooError
from zoo.evaluation import judge_path
from zoo.outputs import save_tensor

log = logging.getLogger("zoo")

REPLACE = ("if_better", "always", "never")


def judge_accuracy(path: Path, datamodule: L.LightningDataModule) -> float | None:
    """Return an exported judge's test accuracy: the one recorded in it, else measured on
    ``datamodule``'s test split; None when the file cannot be read as a judge."""
    try:
        checkpoint = load_checkpoint(path)
    except ZooError:
        return None
    recorded = checkpoint[keys.ZOO].get("judge", {}).get("test_accuracy")
    if recorded is not None:
        return float(recorded)
    try:
        judge = model_from_checkpoint(checkpoint)
        correct = total = 0
        with torch.no_grad():
            for images, labels in datamodule.test_dataloader():
                correct += int((judge(images).argmax(dim=1) == labels).sum())
                total += len(labels)
        return correct / total
    except Exception as error:  # another data set's judge, another shape: not comparable
        log.warning("could not measure the test accuracy of the judge %s: %s", path, error)
        return None


class ExportJudge(L.Callback):
    """After testing, copies the tested checkpoint (the run's best) to the judge path of its
    data set, ``<judges_dir>/<data_name>.ckpt``, with its test accuracy recorded in it.

    ``replace``: ``if_better`` (default) keeps an existing judge whose recorded test
    accuracy is higher, so a short or debug run never replaces a good judge; ``always``
    replaces it; ``never`` writes only where no judge exists. Says what it did either way.
    The copy is written to a temporary file and renamed: a reader never sees half a file.
    """

    def __init__(self, judges_dir: str, data_name: str, replace: str = "if_better"):
        if replace not in REPLACE:
            raise ConfigError(
                f"export_judge.replace must be one of {', '.join(REPLACE)}, got {replace!r}"
            )
        self.path = judge_path(judges_dir, data_name)
        self.replace = replace

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        accuracy = trainer.callback_metrics.get("test/accuracy")
        source = trainer.ckpt_path or getattr(trainer.checkpoint_callback, "best_model_path", "")
        if accuracy is None or not source:
            log.warning("the judge was not exported: no tested checkpoint with a test accuracy")
            return
        accuracy = float(accuracy)
        if not math.isfinite(accuracy):
            log.warning("the judge was not exported: its test accuracy is %s", accuracy)
            return
        exists = self.path.is_file()
        existing = judge_accuracy(self.path, trainer.datamodule) if exists else None
        better = existing is not None and existing >= accuracy
        if exists and (self.replace == "never" or (self.replace == "if_better" and better)):
            log.warning(
                "kept the judge %s (test accuracy %s); this run's is %.4f. To replace it, "
                "pass callbacks.export_judge.replace=always",
                self.path,
                "unknown" if existing is None else f"{existing:.4f}",
                accuracy,
            )
            return
        checkpoint: dict[str, Any] = torch.load(source, map_location="cpu", weights_only=True)
        checkpoint[keys.ZOO]["judge"] = {"test_accuracy": accuracy, "source": str(source)}
        save_tensor(checkpoint, self.path)
        replaced = "" if existing is None else f", replacing one of test accuracy {existing:.4f}"
        log.info(
            "exported the judge %s (test accuracy %.4f)%s from %s",
            self.path,
            accuracy,
            replaced,
            source,
        )
