"""The config of the zoo_optuna sweeper, registered as ``hydra/sweeper=zoo_optuna``."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional  # noqa: UP035 (OmegaConf reads these annotations)

from hydra.core.config_store import ConfigStore


@dataclass
class ZooOptunaSweeperConf:
    """Every option of the sweeper; conf/hparams_search/*.yaml set them per family."""

    _target_: str = "hydra_plugins.zoo_optuna_sweeper.optuna_sweeper.ZooOptunaSweeper"
    # The sweeper builds the sampler and pruner itself, so that a wrong one is one line.
    _recursive_: bool = False

    # The study: a stable name and a database outside the timestamped sweep folder, so that
    # the same command resumes it and several workers (machines) can share it. Any
    # SQLAlchemy URL works: postgresql://user@host/db, mysql+pymysql://..., sqlite:///path.
    study_name: str = "${name}"
    storage: str = "sqlite:///multirun/${name}/optuna.db"

    # minimize or maximize (min and max work too) the value train() returns: `monitor`.
    direction: str = "${monitor_mode}"

    # Trials in the whole study, counting those of earlier runs and of other workers
    # (complete, pruned, failed and running ones). Rerunning with a larger number adds more.
    n_trials: int = 20

    # Trials asked for and launched together; the launcher decides whether they run in
    # parallel (hydra/launcher=slurm or submitit_local) or one after another (basic).
    n_jobs: int = 1

    # An Optuna sampler and pruner, as Hydra targets. The seed stays null so that several
    # workers on one study do not draw the same parameters.
    sampler: Dict[str, Any] = field(  # noqa: UP006
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": None}
    )
    # null: no pruning. A pruner (e.g. optuna.pruners.MedianPruner) makes every trial report
    # `monitor` after each validation and stop early when the pruner says so.
    pruner: Any = None  # (Any: OmegaConf cannot merge a dict into an Optional[Dict] null)

    # The search space, one Hydra override per parameter:
    #   choice(8, 16, 32)               categorical (lists too: choice([32,64],[64,128]))
    #   interval(0.5, 2.0)              uniform over floats
    #   tag(log, interval(1e-4, 1e-2))  log-uniform
    #   tag(int, interval(1, 4))        uniform over ints (tag(log, int, ...): log-uniform)
    #   range(16, 129, 16)              16, 32, ..., 128: start to stop (excluded) by step
    #   a plain value                   fixed for every trial
    params: Dict[str, str] = field(default_factory=dict)  # noqa: UP006

    # Seconds between the heartbeats of running trials. A trial whose worker died (killed,
    # out of memory) stops beating and is marked failed once `grace_period` seconds pass
    # (default: twice the interval). null turns heartbeats off.
    heartbeat_interval: Optional[int] = 60  # noqa: UP045
    grace_period: Optional[int] = None  # noqa: UP045


ConfigStore.instance().store(
    group="hydra/sweeper", name="zoo_optuna", node=ZooOptunaSweeperConf, provider="zoo"
)
