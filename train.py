"""Train a model: ``python train.py experiment=NAME [overrides]`` (see README.md)."""

import sys

import hydra
from omegaconf import DictConfig

from zoo.errors import ZooError
from zoo.runner import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except ZooError as error:
        sys.exit(f"train.py: {error}")


if __name__ == "__main__":
    main()
