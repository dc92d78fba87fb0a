"""The judge classifier, sample-quality metrics, evaluating a checkpoint, the leaderboard."""

import csv
import json
import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from conftest import run_script, train_run
from PIL import Image

import zoo
from zoo.data import DigitsDataModule, MNIST5kDataModule
from zoo.evaluation import Evaluation, Judge, JudgeMissingError
from zoo.leaderboard import collect_runs, sort_runs, write_leaderboard
from zoo.metrics.sample_quality import (
    frechet_distance,
    kernel_inception_distance,
    label_statistics,
    mean_and_covariance,
    precision_recall_density_coverage,
)
from zoo.models import CNNClassifier
from zoo.models.classifier import random_shift

DIGITS = DigitsDataModule().spec.to_dict()


# Fréchet distance ----------------------------------------------------------------------------


def scipy_frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula in float64 with scipy's matrix square root: an independent check."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(sigma_a @ sigma_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sigma_a + sigma_b - 2 * root))


def test_frechet_distance_matches_scipy_on_random_features():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 16))
    b = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.3
    ours = frechet_distance(
        *mean_and_covariance(torch.from_numpy(a)), *mean_and_covariance(torch.from_numpy(b))
    )
    assert ours == pytest.approx(scipy_frechet_distance(a, b), rel=1e-6)


def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form():
    variances_1, variances_2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 1.0])
    distance = frechet_distance(
        torch.zeros(3), torch.diag(variances_1), torch.ones(3), torch.diag(variances_2)
    )
    expected = 3 + ((variances_1.sqrt() - variances_2.sqrt()) ** 2).sum().item()
    assert distance == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_is_stable_with_singular_covariances():
    # 10 samples in 32 dimensions, one feature dead: both covariances are singular.
    features = torch.randn(10, 32, generator=torch.Generator().manual_seed(0)).double()
    features[:, 0] = 1.0
    statistics = mean_and_covariance(features)
    assert abs(frechet_distance(*statistics, *statistics)) < 1e-6
    shifted = mean_and_covariance(features + 2.0)
    assert frechet_distance(*statistics, *shifted) == pytest.approx(32 * 4.0, rel=1e-6)


# KID, precision/recall, labels ---------------------------------------------------------------


def test_kid_equals_the_unbiased_mmd_written_out_by_hand():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(4, 3, generator=generator, dtype=torch.float64) + 1

    def k(a, b):
        return (float(a @ b) / 3 + 1) ** 3

    m = 4
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    between = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    expected = within / (m * (m - 1)) - 2 * between / m**2
    kid, spread = kernel_inception_distance(x, y, num_subsets=1, subset_size=4)
    assert kid == pytest.approx(expected, rel=1e-9) and spread == 0.0


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    generator = torch.Generator().manual_seed(1)
    a, b = torch.randn(400, 8, generator=generator), torch.randn(400, 8, generator=generator)
    same, _ = kernel_inception_distance(a, b, num_subsets=20, subset_size=200, generator=generator)
    different, _ = kernel_inception_distance(
        a, b + 1, num_subsets=20, subset_size=200, generator=generator
    )
    assert abs(same) < 0.05 < different


def test_precision_recall_coverage_of_matching_and_disjoint_sets():
    generator = torch.Generator().manual_seed(2)
    real = torch.randn(200, 4, generator=generator)
    same = precision_recall_density_coverage(real, real.clone(), k=3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    far = precision_recall_density_coverage(real, real + 100.0, k=3)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # Samples from one corner of the data: faithful (high precision) but not diverse (low recall).
    corner = real[real[:, 0] > 1.0]
    collapsed = precision_recall_density_coverage(real, corner, k=3)
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.5


def test_label_statistics_of_known_predictions():
    probabilities = F.one_hot(torch.tensor([0, 0, 1, 1]), 10).double()
    assert label_statistics(probabilities) == {
        "confidence": 1.0,
        "classes": 2,
        "top_class_share": 0.5,
        "label_entropy_bits": 1.0,
    }
    uniform = label_statistics(F.one_hot(torch.arange(10), 10).double())
    assert uniform["label_entropy_bits"] == pytest.approx(math.log2(10))


# The classifier ------------------------------------------------------------------------------


def test_random_shift_moves_images_by_at_most_the_limit_and_zero_is_identity():
    x = torch.full((50, 1, 8, 8), -1.0)
    x[:, :, 4, 4] = 1.0
    assert torch.equal(random_shift(x, 0), x)
    shifted = random_shift(x, 1, generator=torch.Generator().manual_seed(0))
    rows, cols = (shifted[:, 0] == 1.0).nonzero()[:, 1:].T
    assert len(rows) == 50 and set(rows.tolist()) <= {3, 4, 5} and set(cols.tolist()) <= {3, 4, 5}
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 3


def test_classifier_learns_a_batch_of_digits():
    torch.manual_seed(0)
    datamodule = DigitsDataModule(batch_size=64)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    model = CNNClassifier(DIGITS, channels=[16, 32], dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() == 1.0
    assert model.features(x).shape == (64, 32)


def save_judge(path, seed: int, spec: dict = DIGITS) -> None:
    """Write a (randomly initialised) classifier checkpoint of a data set in zoo's format."""
    torch.manual_seed(seed)
    model = CNNClassifier(spec, channels=[8, 16])
    checkpoint = {
        "zoo": {"family": "cnn_classifier", "version": zoo.__version__},
        "hyper_parameters": dict(model.hparams),
        "state_dict": model.state_dict(),
    }
    torch.save(checkpoint, path)


def test_real_features_are_cached_per_judge_and_recomputed_when_it_changes(tmp_path, monkeypatch):
    judge_path = tmp_path / "digits.ckpt"
    save_judge(judge_path, seed=0)
    record = {"name": "digits", "config": {"_target_": "zoo.data.DigitsDataModule"}}
    evaluation = Evaluation(cache_dir=str(tmp_path / "cache"))
    first = evaluation.real_features(Judge(judge_path), DigitsDataModule(), record)
    assert first.shape == (180, 16)

    def must_not_run(*args, **kwargs):
        raise AssertionError("features were recomputed although the judge is unchanged")

    monkeypatch.setattr(Judge, "__call__", must_not_run)
    assert torch.equal(
        evaluation.real_features(Judge(judge_path), DigitsDataModule(), record),
        first,
    )
    monkeypatch.undo()

    save_judge(judge_path, seed=1)  # retrained judge: same path, other weights
    second = evaluation.real_features(Judge(judge_path), DigitsDataModule(), record)
    assert not torch.equal(first, second)
    assert len(list((tmp_path / "cache" / "real_features").glob("*.pt"))) == 2


def test_real_features_are_cached_per_data_set(tmp_path):
    evaluation = Evaluation(cache_dir=str(tmp_path / "cache"))
    features = {}
    for name, module in (("digits", DigitsDataModule), ("mnist5k", MNIST5kDataModule)):
        save_judge(tmp_path / f"{name}.ckpt", seed=0, spec=module().spec.to_dict())
        record = {"name": name, "config": {"_target_": f"zoo.data.{module.__name__}"}}
        features[name] = evaluation.real_features(
            Judge(tmp_path / f"{name}.ckpt"), module(), record
        )
    assert features["digits"].shape == (180, 16) and features["mnist5k"].shape == (500, 16)
    cached = sorted(path.name for path in (tmp_path / "cache" / "real_features").glob("*.pt"))
    assert [name.split("-")[:2] for name in cached] == [["digits", "test"], ["mnist5k", "test"]]


def test_a_missing_judge_says_how_to_train_one(tmp_path):
    with pytest.raises(JudgeMissingError, match="python train.py experiment=classifier_digits"):
        Evaluation(judges_dir=str(tmp_path)).find_judge("digits")


def test_the_judge_refuses_images_of_another_shape(tmp_path):
    save_judge(tmp_path / "digits.ckpt", seed=0)
    with pytest.raises(zoo.errors.ZooError, match=r"trained on images of shape \(1, 8, 8\)"):
        Judge(tmp_path / "digits.ckpt")(torch.zeros(2, 1, 28, 28))


# End to end: judge → VAE with end-of-training evaluation → evaluate a checkpoint → leaderboard


@pytest.fixture(scope="module")
def evaluated_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    shared = [f"paths.judges_dir={root / 'judges'}", f"paths.cache_dir={root / 'cache'}"]
    # A short classifier run (debug presets never publish a judge): its test accuracy decides.
    one_batch = [
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
    ]
    train_run(root / "judge", "experiment=classifier_digits", *one_batch, *shared)
    vae_overrides = ["debug=smoke", "evaluation.num_samples=100", *shared]
    train_run(root / "vae_a", *vae_overrides)
    train_run(root / "vae_b", *vae_overrides, "model.latent_dim=4", "seed=7")
    return root


def test_training_ends_with_sample_quality_metrics_in_results(evaluated_runs):
    assert (evaluated_runs / "judges" / "digits.ckpt").is_file()
    test = json.loads((evaluated_runs / "vae_a" / "results.json").read_text())["test"]
    for name in [
        "fid",
        "kid",
        "precision",
        "recall",
        "density",
        "coverage",
        "confidence",
        "classes",
    ]:
        assert math.isfinite(test[f"test/{name}"]), name
    assert test["test/fid"] >= 0 and 0 <= test["test/precision"] <= 1
    assert test["test/samples_per_second"] > 0
    metrics_csv = (evaluated_runs / "vae_a" / "csv" / "metrics.csv").read_text()
    assert "test/fid" in metrics_csv.splitlines()[0]


def test_sample_evaluate_scores_a_checkpoint_without_retraining(evaluated_runs, tmp_path):
    run_script(
        "sample.py",
        f"ckpt_path={evaluated_runs / 'vae_a' / 'checkpoints' / 'last.ckpt'}",
        "evaluate=true",
        "num_samples=100",
        f"evaluation.judges_dir={evaluated_runs / 'judges'}",
        f"evaluation.cache_dir={evaluated_runs / 'cache'}",
        f"output_dir={tmp_path}",
    )
    scores = json.loads((tmp_path / "evaluation.json").read_text())
    assert 0 < scores["test/bpd"] < 8 and 0 < scores["test/nll_iw_bpd"] < 8
    assert scores["test/fid"] >= 0 and scores["test/classes"] >= 1
    assert torch.load(tmp_path / "samples.pt").shape == (100, 1, 8, 8)


def test_leaderboard_ranks_two_runs_and_draws_readable_figures(evaluated_runs, tmp_path):
    written = write_leaderboard(evaluated_runs, "test/fid", tmp_path)
    table = written["table"].read_text().splitlines()
    rows = [line for line in table if line.startswith("| ") and line[2].isdigit()]
    vae_rows = [row for row in rows if "| vae |" in row]
    assert len(vae_rows) == 2 and "latent_dim=4" in "".join(vae_rows)
    fids = [run.metric("test/fid") for run in sort_runs(collect_runs(evaluated_runs), "test/fid")]
    assert [f for f in fids if f is not None] == sorted(f for f in fids if f is not None)
    for name in ("samples", "metrics"):
        with Image.open(written[name]) as figure:
            assert figure.width > 300 and figure.height > 200


def test_inception_fid_names_missing_weights_instead_of_downloading(tmp_path):
    from zoo.evaluation import inception_fid

    with pytest.raises(zoo.errors.ZooError, match="does not exist: pass the path of the FID"):
        inception_fid(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), tmp_path / "missing.pth")


def test_inception_weights_that_hold_code_are_refused_before_torch_fidelity_loads_them(tmp_path):
    from zoo.evaluation import inception_fid

    weights = tmp_path / "inception.pth"
    torch.save({"conv.weight": torch.zeros(1), "hook": print}, weights)
    with pytest.raises(zoo.errors.ZooError, match="not a file of plain tensors"):
        inception_fid(torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8), weights)


def test_sample_quality_is_tracked_during_training_when_a_judge_exists(evaluated_runs, tmp_path):
    shared = [
        f"paths.judges_dir={evaluated_runs / 'judges'}",
        f"paths.cache_dir={evaluated_runs / 'cache'}",
    ]
    results = train_run(
        tmp_path / "gan",
        "experiment=gan_digits",
        "debug=smoke",
        "trainer.max_epochs=2",
        "callbacks.sample_quality.every_n_epochs=1",
        "callbacks.sample_quality.num_samples=100",
        "evaluation.enabled=false",
        *shared,
    )
    assert results["val"]["val/fid"] > 0 and 1 <= results["val"]["val/classes"] <= 10
    assert 0 < results["val"]["val/top_class_share"] <= 1
    rows = list(csv.DictReader((tmp_path / "gan" / "csv" / "metrics.csv").open()))
    assert len([row for row in rows if row.get("val/fid")]) == 2  # after each epoch
