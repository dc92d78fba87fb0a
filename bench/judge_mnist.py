"""Judge 28×28 digit samples with an independent classifier (scikit-learn, trained on real digits).

    python bench/judge_mnist.py path/to/samples.pt [more.pt ...]

The judges are scikit-learn's, fitted on raw pixels of the 4,000 training digits of
data=mnist5k: an SVM (RBF kernel, probabilities by pairwise Platt scaling) that labels, and an
MLP (one hidden layer of 256 ReLU units) whose hidden layer is a feature space; their
accuracies on the 500 test digits are printed first. Per file of samples
(N, 1, 28, 28) in [-1, 1] it reports the SVM's mean confidence, how many of the ten
classes it sees (a class counts when it holds at least 1% of the samples), the share of
the most common class, and two Fréchet distances to the 500 real test digits: in the
MLP's hidden layer (fd_mlp) and in the first 50 principal components of the training
pixels (fd_pca). Reference rows come first: the real validation digits and 1,000 real
training digits (what a perfect model would get) and a per-pixel Gaussian fitted to the
training digits (a model that learned only each pixel's mean and spread).

Only the digits come from zoo (its fixed split, so the test digits are ones no preset
trained on); the classifier, its features and the distances are scikit-learn's, NumPy's
and SciPy's: nothing of zoo's judges zoo's samples.
"""

import sys
import warnings

import numpy as np
import scipy.linalg
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from sklearn.svm import SVC

from zoo.data import MNIST5kDataModule


def pixels(images: torch.Tensor) -> np.ndarray:
    """Return images (N, 1, 28, 28) in [-1, 1] as rows of 784 values in [0, 1]."""
    return ((images.reshape(len(images), -1).double().numpy() + 1) / 2).clip(0, 1)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Return the Fréchet distance of Gaussians fitted to two sets of features (rows).

    A small ridge keeps the covariances invertible: hidden units that never fire have
    zero variance.
    """
    mean_a, mean_b = a.mean(0), b.mean(0)
    ridge = 1e-6 * np.eye(a.shape[1])
    cov_a, cov_b = np.cov(a, rowvar=False) + ridge, np.cov(b, rowvar=False) + ridge
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


class IndependentJudge:
    """An SVM and an MLP on pixels and a PCA of the pixels, fitted on the training digits."""

    def __init__(self, train: np.ndarray, labels: np.ndarray, test: np.ndarray):
        with warnings.catch_warnings():
            # SVC(probability=True) is deprecated in favour of CalibratedClassifierCV, whose
            # one-vs-rest calibration gives the per-pixel Gaussian's noise a higher confidence
            # (0.92) than real digits (0.90): pairwise coupling keeps confidence meaningful.
            warnings.simplefilter("ignore", FutureWarning)
            self.svm = SVC(C=10, probability=True, random_state=0).fit(train, labels)
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.mlp = MLPClassifier(
                hidden_layer_sizes=(256,), alpha=1e-3, max_iter=100, random_state=0
            ).fit(train, labels)
        self.pca = PCA(n_components=50, random_state=0).fit(train)
        self.test_hidden = self.hidden(test)
        self.test_pca = self.pca.transform(test)

    def hidden(self, x: np.ndarray) -> np.ndarray:
        """Return the MLP's hidden-layer activations (N, 256)."""
        return np.maximum(x @ self.mlp.coefs_[0] + self.mlp.intercepts_[0], 0)

    def __call__(self, x: np.ndarray) -> dict[str, float]:
        probabilities = self.svm.predict_proba(x)
        shares = np.bincount(probabilities.argmax(1), minlength=10) / len(x)
        return {
            "confidence": float(probabilities.max(1).mean()),
            "classes": int((shares >= 0.01).sum()),
            "top_class_share": float(shares.max()),
            "fd_mlp": frechet_distance(self.hidden(x), self.test_hidden),
            "fd_pca": frechet_distance(self.pca.transform(x), self.test_pca),
        }


def main(paths: list[str]) -> None:
    data = MNIST5kDataModule()
    data.setup()
    (train, train_labels), (val, _), (test, test_labels) = (
        (pixels(d.tensors[0]), d.tensors[1].numpy())
        for d in (data.train_dataset, data.val_dataset, data.test_dataset)
    )
    judge = IndependentJudge(train, train_labels, test)
    for name, classifier in (("SVM", judge.svm), ("MLP", judge.mlp)):
        accuracy = (classifier.predict(test) == test_labels).mean()
        print(f"{name} test accuracy on the 500 test digits: {accuracy:.3f}")
    rng = np.random.default_rng(0)
    gaussian = rng.normal(train.mean(0), train.std(0), size=(1000, 784)).clip(0, 1)
    rows = {
        "real validation digits, 500": val,
        "real training digits, 1,000": train[rng.permutation(len(train))[:1000]],
        "per-pixel Gaussian fitted to the training digits, 1,000": gaussian,
    }
    for path in paths:
        rows[path] = pixels(torch.load(path, weights_only=True))
    names = ["confidence", "classes", "top_class_share", "fd_mlp", "fd_pca"]
    print("| images | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, x in rows.items():
        scores = judge(x)
        print(f"| {label} | " + " | ".join(f"{scores[n]:.4g}" for n in names) + " |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
