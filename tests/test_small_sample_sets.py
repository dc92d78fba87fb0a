"""Sample-quality metrics on sets too small for them: skipped with a warning saying how many
samples each needs, never a linear-algebra traceback; FID of a set to itself is 0, never below."""

import json
import logging

import numpy as np
import pytest
import scipy.linalg
import torch
from conftest import SMOKE, run_script, train_run
from test_evaluation import save_judge

from zoo.data import DigitsDataModule
from zoo.evaluation import Evaluation
from zoo.metrics.sample_quality import (
    frechet_distance,
    mean_and_covariance,
    metrics_for_sample_count,
    precision_recall_density_coverage,
)

METRICS = ["fid", "kid", "precision_recall", "labels"]
RECORD = {"name": "digits", "config": {"_target_": "zoo.data.DigitsDataModule"}}


# Which metrics a set size allows -------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_samples", "kept"),
    [
        (1, ["labels"]),
        (2, ["fid", "kid", "labels"]),
        (3, ["fid", "kid", "labels"]),
        (4, ["fid", "kid", "precision_recall", "labels"]),
    ],
)
def test_each_metric_runs_only_on_as_many_samples_as_it_needs(num_samples, kept):
    runnable, warnings = metrics_for_sample_count(METRICS, num_samples, 180, 16, k=3)
    assert runnable == kept
    skipped = [metric for metric in METRICS if metric not in kept]
    for metric in skipped:
        need = 4 if metric == "precision_recall" else 2
        assert (
            f"{metric} skipped: it needs at least {need} samples in each set, got {num_samples} "
            f"generated and 180 real; draw at least {need}"
        ) in warnings
    if "fid" in kept:  # fewer samples than feature dimensions: computed, but said to be biased
        biased = f"fid from {num_samples} samples in 16 feature dimensions is biased upward"
        assert warnings[0].startswith(biased)
    assert len(warnings) == len(skipped) + ("fid" in kept)


def test_the_real_set_counts_as_well_and_labels_need_only_generated_samples():
    runnable, warnings = metrics_for_sample_count(METRICS, 500, 1, 16, k=3)
    assert runnable == ["labels"] and len(warnings) == 3
    assert metrics_for_sample_count(["fid"], 17, 500, 16, k=3) == (["fid"], [])


def test_precision_recall_refuses_sets_no_larger_than_k_instead_of_lowering_k():
    points = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="k=3 need more than 3 points in each set, got 3 real"):
        precision_recall_density_coverage(points, points, k=3)


# FID on small sets ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_samples", [2, 3, 5, 10, 50])
@pytest.mark.parametrize("dimensions", [8, 64, 512])
def test_frechet_distance_of_a_small_set_to_itself_is_exactly_zero(num_samples, dimensions):
    # Features with scales spread over decades, as a network's are: with the square roots
    # of rounding noise, these gave distances down to -0.02.
    generator = torch.Generator().manual_seed(num_samples * dimensions)
    scales = 10 ** (3 * torch.rand(dimensions, generator=generator, dtype=torch.float64) - 1)
    features = torch.randn(num_samples, dimensions, generator=generator, dtype=torch.float64)
    statistics = mean_and_covariance(features * scales)
    assert frechet_distance(*statistics, *statistics) == 0.0


@pytest.mark.filterwarnings("ignore:Matrix is singular")
def test_frechet_distance_of_two_small_sets_is_positive_and_matches_scipy():
    rng = np.random.default_rng(3)
    for num_samples in (2, 3, 5):
        a, b = rng.normal(size=(num_samples, 6)), rng.normal(size=(num_samples, 6)) + 0.1
        ours = frechet_distance(
            *mean_and_covariance(torch.from_numpy(a)), *mean_and_covariance(torch.from_numpy(b))
        )
        # scipy's sqrtm of a singular product is itself inexact: agree to 1e-6 of the traces.
        sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        root = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
        reference = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sigma_a + sigma_b - 2 * root)
        assert ours > 0
        assert ours == pytest.approx(reference, abs=1e-6 * np.trace(sigma_a + sigma_b))


# The evaluation on 1, 2 and 3 samples ---------------------------------------------------------


@pytest.fixture(scope="module")
def judge_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("judges") / "digits.ckpt"
    save_judge(path, seed=0)
    return path


@pytest.mark.parametrize(
    ("num_samples", "expected"),
    [
        (1, {"confidence", "classes", "top_class_share", "label_entropy_bits"}),
        (2, {"fid", "kid", "kid_std", "confidence", "classes"}),
        (3, {"fid", "kid", "kid_std", "confidence", "classes"}),
    ],
)
def test_judging_a_few_samples_skips_what_they_cannot_give_with_a_warning(
    judge_path, tmp_path, caplog, num_samples, expected
):
    evaluation = Evaluation(
        classifier_ckpt=str(judge_path), cache_dir=str(tmp_path / "cache"), kid_subsets=5
    )
    images = DigitsDataModule().spec  # the shape the judge takes
    fake = torch.rand(num_samples, *images.shape, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="zoo"):
        results = evaluation.judge_images(fake * 2 - 1, DigitsDataModule(), RECORD)
    assert expected <= results.keys()
    assert "precision" not in results
    assert "precision_recall skipped: it needs at least 4 samples in each set" in caplog.text
    if num_samples == 1:
        assert "fid skipped: it needs at least 2 samples" in caplog.text and "fid" not in results
    else:
        assert results["fid"] >= 0 and np.isfinite(results["kid"])


def test_sample_evaluate_with_one_sample_reports_what_it_can(judge_path, tmp_path):
    # sample.py … evaluate=true num_samples=1 ended in a LinAlgError traceback.
    quick = ["test=false", "evaluation.enabled=false", "callbacks.curves=null"]
    train_run(tmp_path / "vae", *SMOKE, *quick, "callbacks.sample_writer=null")
    process = run_script(
        "sample.py",
        f"ckpt_path={tmp_path / 'vae' / 'checkpoints' / 'last.ckpt'}",
        "device=cpu",
        "evaluate=true",
        "num_samples=1",
        f"evaluation.classifier_ckpt={judge_path}",
        f"evaluation.cache_dir={tmp_path / 'cache'}",
        f"output_dir={tmp_path / 'out'}",
    )
    assert "Traceback" not in process.stderr
    output = process.stdout + process.stderr
    assert "fid skipped: it needs at least 2 samples in each set" in output
    scores = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert scores["test/classes"] == 1 and "test/fid" not in scores
    assert 0 < scores["test/bpd"] < 8
