"""Sample quality during training: mode collapse and drift show up in the curves."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from zoo.callbacks.cadence import epoch_is_due
from zoo.evaluation import Evaluation, Judge, JudgeMissingError
from zoo.models.base import draw_samples

log = logging.getLogger("zoo")

# What each metric of the evaluation logs.
LOGGED = {
    "kid": ("kid", "kid_std"),
    "precision_recall": ("precision", "recall", "density", "coverage"),
    "labels": ("confidence", "classes", "top_class_share", "label_entropy_bits"),
}


class SampleQuality(L.Callback):
    """Every ``every_n_epochs`` validations, judges ``num_samples`` fresh samples of the model
    (its EMA weights when kept) against real images and logs the metrics under ``val/``:
    ``val/fid`` and the judge's label statistics (``val/classes``, ``val/top_class_share``,
    ``val/confidence``). A collapsing GAN shows as classes dropping and one class's share
    rising long before its losses say anything.

    ``evaluation`` is the run's evaluation config (judge, reference split, cache). Without
    a judge the callback says how to train one, once, and does nothing more.
    """

    def __init__(
        self,
        evaluation: dict[str, Any] | DictConfig | Evaluation,
        every_n_epochs: int = 10,
        num_samples: int = 500,
        metrics: tuple[str, ...] | list[str] = ("fid", "labels"),
    ):
        self.evaluation = Evaluation.from_config(evaluation).replace(
            metrics=list(metrics), num_samples=num_samples
        )
        self.every_n_epochs = every_n_epochs
        self.logged_metrics = tuple(
            f"val/{name}" for metric in metrics for name in LOGGED.get(metric, (metric,))
        )
        self._judge: Judge | None = None
        self._real: torch.Tensor | None = None
        self._disabled = False

    def _prepare(self, trainer: L.Trainer, pl_module) -> bool:
        """Load the judge and the real features once; False when there is no judge."""
        if self._judge is not None or self._disabled:
            return not self._disabled
        record = pl_module.data_record or {}
        try:
            self._judge = self.evaluation.load_judge(record.get("name", ""), pl_module.device)
        except JudgeMissingError as error:
            log.warning("sample quality is not tracked during training: %s", error)
            self._disabled = True
            return False
        self._real = self.evaluation.real_features(self._judge, trainer.datamodule, record)
        return True

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if not pl_module.generates or pl_module.spec.modality != "image":
            return
        if not epoch_is_due(trainer, self.every_n_epochs):
            return
        # Judging must not move the run's random generators (building the judge initialises
        # its layers at random): a resumed run would otherwise draw other noise from here on.
        device = pl_module.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if not self._prepare(trainer, pl_module):
                return
            images, _ = draw_samples(
                pl_module,
                self.evaluation.num_samples,
                seed=self.evaluation.seed,
                batch_size=self.evaluation.batch_size,
            )
            metrics = self.evaluation.score(images, self._judge, self._real)
        for name, value in metrics.items():
            pl_module.log(f"val/{name}", float(value), on_epoch=True)
