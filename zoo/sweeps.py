"""What sweeps share: the summary written at a sweep's root, and the Optuna study's storage
and report (used by the zoo_optuna sweeper in hydra_plugins/ and by the pruning callback).

Nothing here imports torch or Optuna at module level: Hydra builds the summary callback for
every run, sweep or not.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from zoo.errors import ZooError

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("zoo")

# How long a worker waits for another to release an SQLite database before giving up.
SQLITE_TIMEOUT_S = 60
# How often a worker tries to create a new database's tables while others do the same.
CREATE_ATTEMPTS = 8
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


class SweepSummary(Callback):
    """Writes the leaderboard of a sweep's jobs (leaderboard.md and figures) at the sweep root.

    A Hydra callback (conf/hydra/default.yaml): it runs once every job of a multirun has
    returned, and also as soon as a job fails, since Hydra's grid sweeper stops at a
    failed job without ending the multirun: the summary then ranks the jobs that ran.
    Jobs that failed left no results.json and are not in the table; a summary that
    cannot be written is a warning, never the sweep's failure.
    """

    def __init__(self, metric: str):
        self.metric = metric

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode == RunMode.MULTIRUN and job_return.status == JobStatus.FAILED:
            self._write(config)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._write(config)

    def _write(self, config: DictConfig) -> None:
        from zoo.leaderboard import write_leaderboard

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            written = write_leaderboard(sweep_dir, self.metric)
        except Exception as error:  # a summary must never turn a finished sweep into a failure
            log.warning("no sweep summary in %s: %s", sweep_dir, error)
            return
        log.info("sweep summary: %s", "  ".join(str(path) for path in written.values()))


# The Optuna study ------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path | None:
    """Return the file of an SQLite URL, or None for other databases, memory and file: URIs."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") in ("true", "1"):  # sqlite:///file:...?mode=ro&uri=true
        return None
    return Path(parsed.database)


def check_storage(url: str) -> None:
    """Raise ZooError naming what keeps ``url`` from holding an Optuna study, and the fix.

    Checks what can be known without opening it: the URL parses; an SQLite file is not a
    folder, is readable and writable, holds an SQLite database (or nothing yet), and its
    folder is writable (SQLite writes its journal there) or can be created. Nothing is
    created or written.
    """
    from sqlalchemy.exc import ArgumentError

    try:
        path = _sqlite_path(url)
    except ArgumentError:
        raise ZooError(
            f"{url!r} is not a database URL: use sqlite:///path/to/optuna.db for a file, or "
            "a server's SQLAlchemy URL such as postgresql://user@host/db"
        ) from None
    if path is None:
        return
    if path.is_dir():
        raise ZooError(
            f"{path} is a folder: name a file in it, e.g. sqlite:///{path / 'optuna.db'}"
        )
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise ZooError(
                f"{path} is read-only, and a study writes every trial to it: make it writable "
                "(chmod u+rw) or name another file"
            )
        with open(path, "rb") as file:
            header = file.read(len(SQLITE_HEADER))
        if header and header != SQLITE_HEADER:
            raise ZooError(
                f"{path} is not an SQLite database (it begins {header[:8]!r}): name a new file "
                "or an Optuna SQLite database"
            )
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ZooError(f"the folder of {path} cannot be created: {folder} is a file")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ZooError(
            f"{folder} is read-only: SQLite writes beside the database file; name a file "
            "in a writable folder"
        )


def _is_race(error: Exception) -> bool:
    """Return whether a database error is another process creating the same tables or rows."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    if isinstance(error, IntegrityError):  # a unique constraint: the other inserted it first
        return True
    text = str(getattr(error, "orig", error)).lower()
    return isinstance(error, OperationalError) and ("already exists" in text or "locked" in text)


def open_storage(url: str, **heartbeat: int | None) -> optuna.storages.RDBStorage:
    """Return Optuna's database storage at ``url`` (any SQLAlchemy URL).

    SQLite files get their folder created and a lock timeout, so that several worker
    processes can write to one file. Workers started together on a new database race
    to create its tables: the losers see "table already exists" or a unique constraint,
    and try again after a short random wait (up to CREATE_ATTEMPTS times), by which time
    the tables are there. ``heartbeat`` takes RDBStorage's ``heartbeat_interval`` and
    ``grace_period``. Raises ZooError (see :func:`check_storage`) on a storage that
    cannot work, naming the cause and the fix.
    """
    import optuna
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    check_storage(url)
    engine_kwargs: dict[str, Any] = {}
    if make_url(url).get_backend_name() == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    attempt = 0
    while True:
        try:
            with warnings.catch_warnings():  # heartbeats have been "experimental" since 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        except SQLAlchemyError as error:
            attempt += 1
            if not _is_race(error) or attempt == CREATE_ATTEMPTS:
                first_line = str(getattr(error, "orig", error)).splitlines()[0]
                raise ZooError(
                    f"the Optuna storage {displayed_url(url)} cannot be opened: {first_line}"
                ) from None
            time.sleep(random.uniform(0.05, 0.2) * 2**attempt)
        except ImportError as error:
            raise ZooError(
                f"the Optuna storage {displayed_url(url)} needs a database driver that is not "
                f"installed ({error.__cause__ or error}): pip install it, e.g. "
                "'psycopg[binary]' for postgresql+psycopg://"
            ) from None


def displayed_url(url: str) -> str:
    """Return ``url`` with its password masked, fit for logs and files (as it is when it
    does not parse as a URL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def write_study_report(study: optuna.Study, output_dir: Path, about: dict[str, Any]) -> dict:
    """Return the paths of best_params.yaml and optimization_history.png, written for ``study``.

    best_params.yaml holds the best trial (value, parameters as overrides to paste after
    ``python train.py``, its run folder) and how many trials ended in each state; ``about``
    (study name, storage, metric) is written first.
    """
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    states = {state.name: sum(t.state == state for t in trials) for state in TrialState}
    report: dict[str, Any] = {**about, "trials": {k: v for k, v in states.items() if v}}
    completed = [t for t in trials if t.state == TrialState.COMPLETE]
    if completed:
        best = study.best_trial
        report["best"] = {
            "trial": best.number,
            "value": best.value,
            "params": dict(best.params),
            "overrides": " ".join(best.user_attrs.get("overrides", [])),
            "run_dir": best.user_attrs.get("run_dir"),
        }
    else:
        report["best"] = None
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"best_params": output_dir / "best_params.yaml"}
    paths["best_params"].write_text(yaml.safe_dump(report, sort_keys=False))
    paths["history"] = plot_optimization_history(
        trials,
        about.get("metric", "objective"),
        output_dir / "optimization_history.png",
        maximize=study.direction == StudyDirection.MAXIMIZE,
    )
    return paths


def plot_optimization_history(trials: list, metric: str, path: Path, maximize: bool) -> Path:
    """Return ``path`` after plotting each trial's value and the best so far, by trial number.

    Pruned trials show at the last value they reported; failed ones as ticks on the x axis.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from optuna.trial import TrialState

    figure, ax = plt.subplots(figsize=(7, 4))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if complete:
        ax.plot([t.number for t in complete], [t.value for t in complete], "o", label="complete")
        better = max if maximize else min
        best, best_so_far = math.nan, []
        for trial in sorted(complete, key=lambda t: t.number):
            best = trial.value if math.isnan(best) else better(best, trial.value)
            best_so_far.append(best)
        ax.step(
            sorted(t.number for t in complete),
            best_so_far,
            where="post",
            color="tab:red",
            label="best so far",
        )
    if pruned:
        last_values = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
        ax.plot([t.number for t in pruned], last_values, "x", color="grey", label="pruned")
    if failed:
        ax.plot(
            [t.number for t in failed],
            [0] * len(failed),
            "|",
            color="black",
            markersize=14,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label="failed",
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{len(trials)} trials")
    ax.grid(alpha=0.3)
    if complete or pruned or failed:
        ax.legend(loc="best", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
