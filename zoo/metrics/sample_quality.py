"""Sample-quality metrics in a feature space: FID, KID, precision/recall, density/coverage.

Pure functions of feature matrices (N, D), so they can be checked against closed
forms and an independent implementation. The features come from the zoo's own
CNN classifier (zoo/metrics/judge.py); the formulas are those of the papers:
FID (Heusel et al., 2017), KID (Bińkowski et al., 2018), improved precision and
recall (Kynkäänniemi et al., 2019), density and coverage (Naeem et al., 2020).
"""

from __future__ import annotations

import torch


def mean_and_covariance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    features = features.double()
    mean = features.mean(dim=0)
    centered = features - mean
    return mean, centered.T @ centered / (len(features) - 1)


def _psd_factor(matrix: torch.Tensor) -> torch.Tensor:
    """Return L (D, D) with L Lᵀ = ``matrix``, a symmetric positive semi-definite (D, D).

    Eigenvalues within rounding of zero (below D·ε times the largest) are set to zero,
    so a singular matrix keeps its exact rank instead of noise of size √ε.
    """
    eigenvalues, eigenvectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    floor = eigenvalues.abs().max() * len(eigenvalues) * torch.finfo(eigenvalues.dtype).eps
    eigenvalues = torch.where(eigenvalues > floor, eigenvalues, torch.zeros_like(eigenvalues))
    return eigenvectors * eigenvalues.sqrt()


def frechet_distance(
    mean_1: torch.Tensor,
    covariance_1: torch.Tensor,
    mean_2: torch.Tensor,
    covariance_2: torch.Tensor,
) -> float:
    """Return ‖μ1−μ2‖² + tr(Σ1 + Σ2 − 2(Σ1Σ2)^½) ≥ 0: the Fréchet distance of two Gaussians.

    With Σ1 = L1 L1ᵀ and Σ2 = L2 L2ᵀ, tr((Σ1Σ2)^½) is the sum of the singular values of
    L1ᵀ L2 (the eigenvalues of Σ1Σ2 are those of (L1ᵀL2)(L1ᵀL2)ᵀ). Singular values carry
    an absolute error of order ε‖Σ‖, where square roots of eigenvalues near zero (a
    singular covariance: fewer samples than dimensions, dead features) would carry √ε‖Σ‖
    and could drive the distance below zero. What is left within rounding of zero,
    |d| ≤ 10·D·ε·(tr Σ1 + tr Σ2), is reported as 0, so the distance of a set to itself is 0.
    Mean and covariance come from :func:`mean_and_covariance`; float64 throughout.
    """
    mean_1, mean_2 = mean_1.double(), mean_2.double()
    covariance_1, covariance_2 = covariance_1.double(), covariance_2.double()
    factor_1, factor_2 = _psd_factor(covariance_1), _psd_factor(covariance_2)
    trace_of_root = torch.linalg.svdvals(factor_1.T @ factor_2).sum()
    traces = covariance_1.trace() + covariance_2.trace()
    distance = float((mean_1 - mean_2).pow(2).sum() + traces - 2 * trace_of_root)
    rounding = 10 * len(mean_1) * torch.finfo(torch.float64).eps * float(traces)
    return distance if distance > rounding else 0.0


def kernel_inception_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    num_subsets: int = 50,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Return the mean and standard deviation over subsets of the unbiased MMD² with a cubic kernel.

    k(x, y) = (xᵀy / D + 1)³, as in Bińkowski et al.; subsets are drawn without
    replacement and capped at the smaller set's size.
    """
    real, fake = real.double(), fake.double()
    dim = real.shape[1]
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError("KID needs at least two real and two generated samples")
    estimates = []
    for _ in range(num_subsets):
        x = real[torch.randperm(len(real), generator=generator)[:m]]
        y = fake[torch.randperm(len(fake), generator=generator)[:m]]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (
            m * (m - 1)
        )
        estimates.append(float(within - 2 * k_xy.mean()))
    estimates_tensor = torch.tensor(estimates, dtype=torch.float64)
    spread = float(estimates_tensor.std()) if len(estimates) > 1 else 0.0
    return float(estimates_tensor.mean()), spread


def metrics_for_sample_count(
    metrics: list[str], num_generated: int, num_real: int, feature_dim: int, k: int
) -> tuple[list[str], list[str]]:
    """Return the metrics that sets of these sizes can give, and a warning for each other one.

    What each metric needs, in the generated and in the real set alike:
    fid and kid: at least 2 samples (a covariance; an unbiased MMD² over pairs). FID is
    also given a warning, not skipped, at ``feature_dim`` samples or fewer: the
    covariance is then singular and FID biased upward; it needs more samples than
    feature dimensions to mean much. precision_recall (with density and coverage): more
    than ``k`` samples (each point's k-th nearest other point). inception_fid: 2.
    labels: 1 generated sample. ``metrics`` names them as conf/evaluation's ``metrics``.
    """
    needs = {"fid": 2, "kid": 2, "precision_recall": k + 1, "labels": 1, "inception_fid": 2}
    kept, warnings = [], []
    for metric in metrics:
        need = needs[metric]
        have = (
            num_generated if metric in ("labels", "inception_fid") else min(num_generated, num_real)
        )
        if have < need:
            warnings.append(
                f"{metric} skipped: it needs at least {need} samples in each set, got "
                f"{num_generated} generated and {num_real} real; draw at least {need}"
            )
            continue
        kept.append(metric)
        if metric == "fid" and have <= feature_dim:
            warnings.append(
                f"fid from {have} samples in {feature_dim} feature dimensions is biased "
                f"upward (a singular covariance): draw more than {feature_dim} samples"
            )
    return kept, warnings


def _kth_neighbour_radii(features: torch.Tensor, k: int) -> torch.Tensor:
    """Return each point's distance to its k-th nearest other point in the same set, (N,)."""
    distances = torch.cdist(features, features)
    return distances.kthvalue(k + 1, dim=1).values  # +1: a point is its own nearest neighbour


def precision_recall_density_coverage(
    real: torch.Tensor, fake: torch.Tensor, k: int = 3
) -> dict[str, float]:
    """Return improved precision and recall, and density and coverage, with k-NN manifolds.

    precision: share of fake points inside some real point's k-NN ball (fidelity);
    recall: share of real points inside some fake point's k-NN ball (diversity);
    density: mean number of real balls holding a fake point, over k (≈1 for matched sets);
    coverage: share of real balls that hold at least one fake point.
    Raises ValueError unless both sets hold more than k points (k ≥ 1).
    """
    if not k < min(len(real), len(fake)):
        raise ValueError(
            f"precision/recall with k={k} need more than {k} points in each set, got "
            f"{len(real)} real and {len(fake)} generated"
        )
    real, fake = real.double(), fake.double()
    real_radii = _kth_neighbour_radii(real, k)  # (N_real,)
    fake_radii = _kth_neighbour_radii(fake, k)  # (N_fake,)
    between = torch.cdist(real, fake)  # (N_real, N_fake)
    fake_in_real_ball = between <= real_radii[:, None]
    real_in_fake_ball = between <= fake_radii[None, :]
    return {
        "precision": float(fake_in_real_ball.any(dim=0).double().mean()),
        "recall": float(real_in_fake_ball.any(dim=1).double().mean()),
        "density": float(fake_in_real_ball.double().sum(dim=0).mean() / k),
        "coverage": float(fake_in_real_ball.any(dim=1).double().mean()),
    }


def label_statistics(probabilities: torch.Tensor, min_share: float = 0.01) -> dict[str, float]:
    """Return what a classifier's softmax (N, K) says about samples.

    confidence: mean top-class probability (sharp, class-like samples score high);
    classes: how many classes hold at least ``min_share`` of the samples (mode coverage);
    top_class_share: the most common class's share (1.0 is total collapse);
    label_entropy_bits: entropy of the predicted-label histogram (log2 K when uniform).
    """
    probabilities = probabilities.double()
    predicted = probabilities.argmax(dim=1)
    counts = torch.bincount(predicted, minlength=probabilities.shape[1]).double()
    shares = counts / counts.sum()
    nonzero = shares[shares > 0]
    return {
        "confidence": float(probabilities.max(dim=1).values.mean()),
        "classes": int((shares >= min_share).sum()),
        "top_class_share": float(shares.max()),
        "label_entropy_bits": float(-(nonzero * nonzero.log2()).sum()),
    }
