"""Loggers: Lightning's CSV logger, made to continue its metrics.csv when a run resumes."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from zoo.outputs import atomic_write


class _ContinuingWriter(ExperimentWriter):
    """Keeps the rows an earlier, interrupted run wrote to metrics.csv.

    Lightning's writer deletes an existing metrics.csv as soon as a run starts. This one
    leaves it on disk and reads it; at the first save it writes the rows from before the
    first step logged now, followed by the new rows, as one atomic replacement (rows the
    interrupted run logged after its checkpoint are replaced by the resumed run's). So a
    run that fails before its first save leaves the old file as it was. A change of
    header, which rewrites the whole file, is atomic too.
    """

    def _check_log_dir_exists(self) -> None:
        self._earlier_rows: list[dict[str, str]] = []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self._earlier_rows = list(csv.DictReader(file))

    def save(self) -> None:
        if not self.metrics:
            return
        if self._earlier_rows is None:
            super().save()
            return
        first_step = min(int(row["step"]) for row in self.metrics)
        kept = [
            {key: value for key, value in row.items() if value != ""}
            for row in self._earlier_rows
            if row.get("step") and int(float(row["step"])) < first_step
        ]
        self.metrics = kept + self.metrics
        self._record_new_keys()
        self._write_all(self.metrics)
        self.metrics = []
        self._earlier_rows = None  # from now on, rows are appended as Lightning does

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = list(csv.DictReader(file))
        self._write_all(rows, fieldnames)

    def _write_all(self, rows: list[dict], fieldnames: list[str] | None = None) -> None:
        with atomic_write(self.metrics_file_path, "w") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames or self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class ContinuingCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a run resumed in its own folder (``resume: auto``,
    a requeued cluster job) continues metrics.csv instead of starting it afresh, and never
    loses the old file on the way."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment
