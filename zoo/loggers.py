"""Loggers: Lightning's CSV logger, made to continue its metrics.csv when a run resumes."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _ContinuingWriter(ExperimentWriter):
    """Keeps the rows an earlier, interrupted run wrote to metrics.csv.

    Lightning's writer deletes an existing metrics.csv. This one reads it first and, at
    the first save, writes back the rows from before the first step logged now: rows the
    interrupted run logged after its checkpoint are replaced by the resumed run's.
    """

    def _check_log_dir_exists(self) -> None:
        self._earlier_rows: list[dict[str, str]] = []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self._earlier_rows = list(csv.DictReader(file))
            self._fs.rm_file(self.metrics_file_path)

    def save(self) -> None:
        if self._earlier_rows and self.metrics:
            first_step = min(int(row["step"]) for row in self.metrics)
            kept = [
                {key: value for key, value in row.items() if value != ""}
                for row in self._earlier_rows
                if row.get("step") and int(float(row["step"])) < first_step
            ]
            self.metrics = kept + self.metrics
            self._earlier_rows = []
        super().save()


class ContinuingCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a run resumed in its own folder (``resume: auto``,
    a requeued cluster job) continues metrics.csv instead of starting it afresh."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
