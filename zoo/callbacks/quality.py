"""Sample quality during training: mode collapse and drift show up in the curves."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("zoo")


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
        evaluation: dict[str, Any] | DictConfig,
        every_n_epochs: int = 10,
        num_samples: int = 500,
        metrics: tuple[str, ...] | list[str] = ("fid", "labels"),
    ):
        if OmegaConf.is_config(evaluation):
            evaluation = OmegaConf.to_container(evaluation, resolve=True)
        self.evaluation = {**evaluation, "metrics": list(metrics)}
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self._judge = None
        self._real = None
        self._disabled = False

    def _due(self, trainer: L.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return epoch % self.every_n_epochs == 0 or last

    def _prepare(self, trainer: L.Trainer, pl_module) -> bool:
        """Load the judge and the real features once; False when there is no judge."""
        from zoo.evaluation import Judge, JudgeMissingError, find_judge, real_features

        if self._judge is not None or self._disabled:
            return not self._disabled
        record = pl_module.data_record or {}
        try:
            path = find_judge(self.evaluation, record.get("name", ""))
        except JudgeMissingError as error:
            log.warning("sample quality is not tracked during training: %s", error)
            self._disabled = True
            return False
        self._judge = Judge(path, device=pl_module.device)
        self._real = real_features(
            self._judge,
            trainer.datamodule,
            record,
            self.evaluation["reference_split"],
            self.evaluation["cache_dir"],
        )
        return True

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not pl_module.generates or not self._due(trainer):
            return
        if pl_module.spec.modality != "image":
            return
        from zoo.evaluation import generate, sample_metrics

        # Judging must not move the run's random generators (building the judge initialises
        # its layers at random): a resumed run would otherwise draw other noise from here on.
        device = pl_module.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            if not self._prepare(trainer, pl_module):
                return
            images, _ = generate(
                pl_module, self.num_samples, self.evaluation["batch_size"], self.evaluation["seed"]
            )
            metrics = sample_metrics(images, self._real, self._judge, self.evaluation)
        for name, value in metrics.items():
            pl_module.log(f"val/{name}", float(value), on_epoch=True)
