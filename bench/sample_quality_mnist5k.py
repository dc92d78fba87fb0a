"""Reference points for the sample-quality metrics on data=mnist5k, in the judge's feature space.

    python bench/sample_quality_mnist5k.py [--judge judges/mnist5k.ckpt] [samples.pt ...]

Scores, against the 500 held-out test digits (what train.py's evaluation compares with):
the 500 real validation digits and the real training digits (the floor a perfect model
reaches, at 1,000 images, the number evaluation draws, and at all 4,000), samples of a
per-pixel Gaussian fitted to the training digits (a model that learned only each pixel's
mean and spread), 1,000 training digits with Gaussian noise of standard deviation 0.1 and
0.3 (in the [-1, 1] units of the data), and any samples.pt files given. Train the judge
first: python train.py experiment=classifier_mnist5k.
"""

import argparse

import torch

from zoo.data import MNIST5kDataModule
from zoo.evaluation import Evaluation

LEVELS = 256


def on_levels(images: torch.Tensor) -> torch.Tensor:
    """Return images clamped to [-1, 1] and rounded to the nearest of the 256 levels."""
    return (
        torch.round((images.clamp(-1, 1) + 1) / 2 * (LEVELS - 1)) / (LEVELS - 1) * 2 - 1
    ).float()


def per_pixel_gaussian(train: torch.Tensor, num_samples: int, seed: int = 0) -> torch.Tensor:
    """Return samples of independent per-pixel Gaussians fitted to ``train``, on the levels."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = train.mean(0), train.std(0)
    return on_levels(mean + std * torch.randn(num_samples, *train.shape[1:], generator=generator))


def with_noise(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Return ``images`` plus Gaussian noise of standard deviation ``sigma``, on the levels."""
    generator = torch.Generator().manual_seed(seed)
    return on_levels(images + sigma * torch.randn(images.shape, generator=generator))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("samples", nargs="*")
    parser.add_argument("--judge", default="judges/mnist5k.ckpt")
    arguments = parser.parse_args()
    evaluation = Evaluation(classifier_ckpt=arguments.judge, cache_dir=".cache/zoo")
    datamodule = MNIST5kDataModule()
    datamodule.setup("fit")
    train = datamodule.train_dataset.tensors[0]  # (4000, 1, 28, 28), stratified
    val = datamodule.val_dataset.tensors[0]  # (500, 1, 28, 28)
    first_thousand = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))][
        :1000
    ]
    record = {"name": "mnist5k", "config": {"_target_": "zoo.data.MNIST5kDataModule"}}
    candidates = {
        "real validation digits, 500": val,
        "real training digits, 1,000 (the floor)": first_thousand,
        "real training digits, all 4,000": train,
        "training digits + noise σ=0.1, 1,000": with_noise(first_thousand, 0.1),
        "training digits + noise σ=0.3, 1,000": with_noise(first_thousand, 0.3),
        "per-pixel Gaussian fitted to the training digits, 1,000": per_pixel_gaussian(train, 1000),
    }
    for path in arguments.samples:
        candidates[path] = torch.load(path, weights_only=True)
    names = ["fid", "kid", "precision", "recall", "coverage", "confidence", "classes"]
    names.append("top_class_share")
    print("| images | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, images in candidates.items():
        scores = evaluation.judge_images(images, datamodule, record)
        print(f"| {label} | " + " | ".join(f"{scores[n]:.4g}" for n in names) + " |", flush=True)


if __name__ == "__main__":
    main()
