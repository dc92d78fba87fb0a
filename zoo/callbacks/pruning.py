"""Pruning of unpromising Optuna trials from their validation curves."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback


class OptunaPruning(Callback):
    """Reports ``monitor`` to an Optuna trial after each validation and raises
    ``optuna.TrialPruned`` when the study's pruner says the trial will not catch up.

    The zoo_optuna sweeper gives each job ``optuna.trial_number``; the runner then adds
    this callback (see :meth:`for_sweep_trial`). The k-th validation is reported as step
    k, so trials with different batch sizes still line up (one validation per epoch:
    the step is the epoch count). Under DDP, rank 0 talks to the study and tells the
    other ranks, so every process stops together. The sweeper records the raised
    TrialPruned as a PRUNED trial.
    """

    def __init__(self, storage: str, study_name: str, trial_number: int, pruner: Any, monitor: str):
        self.storage = storage
        self.study_name = study_name
        self.trial_number = trial_number
        self.pruner = pruner  # a Hydra config of an optuna.pruners class
        self.monitor = monitor
        self.trial = None  # the optuna.Trial, on rank 0 only
        self.validations = 0

    @classmethod
    def for_sweep_trial(cls, trial_number: int, monitor: str) -> OptunaPruning | None:
        """Return the callback for trial ``trial_number`` of the running zoo_optuna sweep, or
        None when the sweep has no pruner. The study's storage, name and pruner come from
        ``hydra.sweeper``, the sweeper's own config."""
        from hydra.core.hydra_config import HydraConfig

        sweeper = HydraConfig.get().sweeper
        if not sweeper.get("pruner"):
            return None
        return cls(sweeper.storage, sweeper.study_name, trial_number, sweeper.pruner, monitor)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero or self.trial is not None:
            return
        import optuna
        from hydra.utils import instantiate

        from zoo.sweeps import open_storage

        storage = open_storage(self.storage)
        study = optuna.load_study(
            study_name=self.study_name, storage=storage, pruner=instantiate(self.pruner)
        )
        study_id = storage.get_study_id_from_name(self.study_name)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.trial_number)
        self.trial = optuna.trial.Trial(study, trial_id)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        import optuna

        self.validations += 1
        value = trainer.callback_metrics.get(self.monitor)
        prune = False
        if trainer.is_global_zero and value is not None:
            self.trial.report(float(value), step=self.validations)
            prune = self.trial.should_prune()
        if trainer.strategy.broadcast(prune, src=0):
            raise optuna.TrialPruned(
                f"{self.monitor}={float(value):.6g} at validation {self.validations}"
            )
