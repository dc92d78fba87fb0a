"""Train a model: ``python train.py experiment=NAME [overrides]`` (see README.md)."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from zoo.errors import RunInterrupted, ZooError
from zoo.resolvers import register_resolvers

register_resolvers()  # before Hydra composes: run folders use ${run_id:} and ${choice:...}


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    # Imported here, in the job: a sweep that sends its jobs to SLURM (or to submitit's
    # local processes) never loads torch itself.
    from zoo.runner import train

    try:
        return train(cfg)
    except ZooError as error:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the job fails; the sweeper records it (Optuna goes on, a grid stops)
        print(f"train.py: {error}", file=sys.stderr)
        sys.exit(143 if isinstance(error, RunInterrupted) else 1)  # 143: 128 + SIGTERM


if __name__ == "__main__":
    main()
