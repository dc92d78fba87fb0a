"""Judge digit samples with an independent classifier (scikit-learn, trained on the real digits).

    python bench/judge_digits.py path/to/samples.pt [more.pt ...]

Prints, per file: the classifier's mean confidence on the samples, how many of
the ten classes appear, and the share of the most common class. Two references
come first: held-out real digits (what a perfect model would get) and samples
of a per-pixel Gaussian fitted to the training digits (what a model that
learned only each pixel's mean and spread gets). The classifier is an SVM
on raw pixels — nothing of zoo's is used to judge zoo's samples.
"""

import sys
import warnings
from collections import Counter

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.svm import SVC


def fit_judge() -> tuple[SVC, np.ndarray, np.ndarray]:
    """Return an SVM fitted on 80% of the digits, its training pixels and the held-out 20%."""
    digits = load_digits()
    x_train, x_test, y_train, _ = train_test_split(
        digits.data, digits.target, test_size=0.2, random_state=0
    )
    return SVC(probability=True, random_state=0).fit(x_train, y_train), x_train, x_test


def judge(classifier: SVC, pixels: np.ndarray) -> dict[str, float]:
    """Return confidence, class coverage and the top class's share of images.

    ``pixels`` holds one image per row: 64 values in [0, 16].
    """
    probabilities = classifier.predict_proba(pixels)
    predicted = probabilities.argmax(1)
    counts = Counter(predicted.tolist())
    return {
        "confidence": float(probabilities.max(1).mean()),
        "classes": len(counts),
        "top_class_share": max(counts.values()) / len(predicted),
    }


def main(paths: list[str]) -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)  # SVC(probability=True)
    classifier, train, held_out = fit_judge()
    print(f"{'real held-out digits':<60} {judge(classifier, held_out)}")
    rng = np.random.default_rng(0)
    gaussian = rng.normal(train.mean(0), train.std(0), size=(1000, 64)).clip(0, 16)
    print(f"{'per-pixel Gaussian fitted to the digits':<60} {judge(classifier, gaussian)}")
    for path in paths:
        samples = torch.load(path, weights_only=True)  # (N, 1, 8, 8) in [-1, 1]
        pixels = ((samples.reshape(len(samples), -1).numpy() + 1) / 2 * 16).clip(0, 16)
        print(f"{path:<60} {judge(classifier, pixels)}")


if __name__ == "__main__":
    main(sys.argv[1:])
