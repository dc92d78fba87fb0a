"""Reference points for the sample-quality metrics on the digits, in the judge's feature space.

    python bench/sample_quality_digits.py [--judge judges/digits.ckpt] [samples.pt ...]

Scores, against the held-out test digits (what train.py's evaluation compares with):
the real training digits (the floor a perfect model reaches), samples of a
per-pixel Gaussian fitted to the training digits (a model that learned only each
pixel's mean and spread), and any samples.pt files given. Train the judge first:
python train.py experiment=classifier_digits.
"""

import argparse

import torch

from zoo.data import DigitsDataModule
from zoo.evaluation import Evaluation


def per_pixel_gaussian(train: torch.Tensor, num_samples: int, seed: int = 0) -> torch.Tensor:
    """Return samples of independent per-pixel Gaussians fitted to ``train``, on the 17 levels."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = train.mean(0), train.std(0)
    samples = mean + std * torch.randn(num_samples, *train.shape[1:], generator=generator)
    return (torch.round((samples.clamp(-1, 1) + 1) / 2 * 16) / 16 * 2 - 1).float()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("samples", nargs="*")
    parser.add_argument("--judge", default="judges/digits.ckpt")
    arguments = parser.parse_args()
    evaluation = Evaluation(classifier_ckpt=arguments.judge, cache_dir=".cache/zoo")
    datamodule = DigitsDataModule()
    datamodule.setup("fit")
    train = torch.cat([batch[0] for batch in datamodule.train_dataloader()])
    record = {"name": "digits", "config": {"_target_": "zoo.data.DigitsDataModule"}}
    candidates = {
        "real training digits (floor)": train,
        "per-pixel Gaussian, 1,000 samples": per_pixel_gaussian(train, 1000),
    }
    for path in arguments.samples:
        candidates[path] = torch.load(path, weights_only=True)
    names = ["fid", "kid", "precision", "recall", "coverage", "confidence", "classes"]
    print("| images | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, images in candidates.items():
        scores = evaluation.judge_images(images, datamodule, record)
        print(f"| {label} | " + " | ".join(f"{scores[n]:.4g}" for n in names) + " |")


if __name__ == "__main__":
    main()
