"""Sample from a checkpoint.

python sample.py ckpt_path=PATH num_samples=N seed=S output_dir=DIR
"""

import sys

import hydra
from omegaconf import DictConfig

from zoo.errors import ZooError
from zoo.runner import sample


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
def main(cfg: DictConfig) -> None:
    try:
        result = sample(cfg)
    except ZooError as error:
        sys.exit(f"sample.py: {error}")
    width = max(20, *(len(name) + 2 for name in result))  # a column for the values
    for name, value in result.items():
        print(f"{name:<{width}}{value}")


if __name__ == "__main__":
    main()
