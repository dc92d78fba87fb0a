"""Judging an image family's samples: the judge classifier, cached real features, the metrics.

``evaluate_samples`` is what train.py runs at the end of training and what
``sample.py evaluate=true`` runs on a checkpoint: it draws samples through the
shared sampling call, embeds them and held-out real images with the judge (a
CNN classifier checkpoint of the same data set), and returns FID, KID,
precision/recall, density/coverage and the judge's label statistics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from zoo.checkpoints import load_checkpoint, model_from_checkpoint
from zoo.errors import ZooError
from zoo.metrics.sample_quality import (
    frechet_distance,
    kernel_inception_distance,
    label_statistics,
    mean_and_covariance,
    precision_recall_density_coverage,
)
from zoo.models import GenerativeModule

log = logging.getLogger("zoo")

METRICS = ("fid", "kid", "precision_recall", "labels")


class JudgeMissingError(ZooError, FileNotFoundError):
    """No classifier checkpoint to judge samples with."""


class Judge:
    """A CNN classifier checkpoint used as a feature extractor and labeller of images."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        self.path = Path(path)
        checkpoint = load_checkpoint(self.path, map_location=device)
        if checkpoint["zoo"]["family"] != "cnn_classifier":
            raise ZooError(
                f"{self.path} is a {checkpoint['zoo']['family']} checkpoint; the judge must be a "
                "cnn_classifier checkpoint (train one with experiment=classifier_<data set>)"
            )
        self.model = model_from_checkpoint(checkpoint).to(device)
        self.device = torch.device(device)
        # The judge's identity: cached real features are valid only for these exact bytes.
        self.fingerprint = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, batch_size: int = 500
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return features (N, D) and class probabilities (N, K) of images (N, C, H, W)."""
        expected = tuple(self.model.spec.shape)
        if tuple(images.shape[1:]) != expected:
            raise ZooError(
                f"the judge {self.path} was trained on images of shape {expected}, the samples are "
                f"{tuple(images.shape[1:])}: judge with a classifier of the same data set"
            )
        features, probabilities = [], []
        for batch in images.split(batch_size):
            embedded = self.model.features(batch.to(self.device).float())
            features.append(embedded.double().cpu())
            probabilities.append(self.model.head(embedded).softmax(dim=1).double().cpu())
        return torch.cat(features), torch.cat(probabilities)


def find_judge(evaluation: dict[str, Any], data_name: str) -> Path:
    """Return the judge's checkpoint path; raise JudgeMissingError saying how to train one."""
    path = Path(
        evaluation.get("classifier_ckpt") or Path(evaluation["judges_dir"]) / f"{data_name}.ckpt"
    )
    if not path.is_file():
        raise JudgeMissingError(
            f"no classifier to judge samples of {data_name!r} at {path}: train one with "
            f"`python train.py experiment=classifier_{data_name}` (it writes {path}), "
            "or pass evaluation.classifier_ckpt=PATH"
        )
    return path


def _split_loader(datamodule: L.LightningDataModule, split: str):
    stage = "test" if split == "test" else "fit"
    datamodule.prepare_data()
    datamodule.setup(stage)
    loaders = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader}
    return datamodule.test_dataloader() if split == "test" else loaders[split]()


def real_features(
    judge: Judge,
    datamodule: L.LightningDataModule,
    data_record: dict[str, Any],
    split: str,
    cache_dir: str | Path,
) -> torch.Tensor:
    """Return the judge's features (N, D) of the real images of a split, cached on disk.

    The cache key covers the data set's config, the split and the judge's bytes,
    so retraining the judge or changing the data (e.g. its image size) recomputes.
    """
    description = json.dumps(
        {"data": data_record, "split": split, "judge": judge.fingerprint}, sort_keys=True
    )
    key = hashlib.sha256(description.encode()).hexdigest()[:20]
    path = Path(cache_dir) / "real_features" / f"{data_record['name']}-{split}-{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    images = torch.cat([batch[0] for batch in _split_loader(datamodule, split)])
    features, _ = judge(images)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(features, temporary)
    os.replace(temporary, path)
    return features


@torch.no_grad()
def generate(
    model: GenerativeModule, num_samples: int, batch_size: int, seed: int
) -> tuple[torch.Tensor, float]:
    """Return ``num_samples`` images drawn in seeded batches, and images per second."""
    generator = torch.Generator(device=model.device).manual_seed(seed)
    start = time.perf_counter()
    batches = []
    for first in range(0, num_samples, batch_size):
        batches.append(
            model.sample(min(batch_size, num_samples - first), generator=generator).float().cpu()
        )
    elapsed = time.perf_counter() - start
    return torch.cat(batches), num_samples / max(elapsed, 1e-9)


def sample_metrics(
    fake_images: torch.Tensor, real: torch.Tensor, judge: Judge, evaluation: dict[str, Any]
) -> dict[str, float]:
    """Return the requested metrics of generated images against real features."""
    unknown = set(evaluation["metrics"]) - set(METRICS)
    if unknown:
        raise ZooError(f"unknown evaluation.metrics {sorted(unknown)}; choose from {list(METRICS)}")
    fake, probabilities = judge(fake_images, evaluation["batch_size"])
    generator = torch.Generator().manual_seed(evaluation["seed"])
    results: dict[str, float] = {}
    if "fid" in evaluation["metrics"]:
        results["fid"] = frechet_distance(*mean_and_covariance(real), *mean_and_covariance(fake))
    if "kid" in evaluation["metrics"]:
        kid, kid_std = kernel_inception_distance(
            real, fake, num_subsets=evaluation["kid_subsets"], generator=generator
        )
        results.update(kid=kid, kid_std=kid_std)
    if "precision_recall" in evaluation["metrics"]:
        results.update(
            precision_recall_density_coverage(real, fake, k=evaluation["nearest_neighbours"])
        )
    if "labels" in evaluation["metrics"]:
        results.update(label_statistics(probabilities))
    return results


def inception_fid(
    fake_images: torch.Tensor, real_images: torch.Tensor, weights: str | Path
) -> float:
    """Return the standard Inception-v3 FID through torchmetrics, from weights on disk.

    Nothing is downloaded: ``weights`` is torch-fidelity's FID Inception file
    (pt_inception-2015-12-05-6726825d.pth), fetched once by the user.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise ZooError(
            f"evaluation.inception_weights={weights} does not exist: pass the path of the FID "
            "Inception-v3 weights (pt_inception-2015-12-05-6726825d.pth), or null to skip"
        )
    try:  # torch-fidelity loads the file with weights_only=False: check it holds data only
        torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ZooError(
            f"{weights} is not a file of plain tensors, refusing to load it: {error}"
        ) from None
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(
        feature=2048, normalize=True, feature_extractor_weights_path=str(weights)
    )
    for images, real in ((real_images, True), (fake_images, False)):
        for batch in images.split(100):
            rgb = ((batch.float() + 1) / 2).clamp(0, 1)
            metric.update(rgb.expand(-1, 3, -1, -1) if rgb.shape[1] == 1 else rgb, real=real)
    return float(metric.compute())


def judge_images(
    fake_images: torch.Tensor,
    datamodule: L.LightningDataModule,
    data_record: dict[str, Any],
    evaluation: dict[str, Any],
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Return the sample-quality metrics of images against the data set's real images.

    Raises JudgeMissingError (saying how to train one) when there is no judge.
    """
    judge = Judge(find_judge(evaluation, data_record["name"]), device=device)
    split = evaluation["reference_split"]
    real = real_features(judge, datamodule, data_record, split, evaluation["cache_dir"])
    results = sample_metrics(fake_images, real, judge, evaluation)
    if evaluation.get("inception_weights"):
        real_images = torch.cat([batch[0] for batch in _split_loader(datamodule, split)])
        results["inception_fid"] = inception_fid(
            fake_images, real_images, evaluation["inception_weights"]
        )
    return results


def evaluate_model(
    model: GenerativeModule,
    datamodule: L.LightningDataModule,
    data_record: dict[str, Any],
    evaluation: dict[str, Any],
) -> dict[str, float]:
    """Return sample-quality metrics of ``evaluation.num_samples`` fresh samples, and images/s."""
    fake_images, images_per_second = generate(
        model, evaluation["num_samples"], evaluation["batch_size"], evaluation["seed"]
    )
    results = judge_images(fake_images, datamodule, data_record, evaluation, model.device)
    results["samples_per_second"] = images_per_second
    return results
