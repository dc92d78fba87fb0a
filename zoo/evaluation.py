"""Judging an image family's samples: the judge classifier, cached real features, the metrics.

:class:`Evaluation` is built from ``conf/evaluation/`` and is what train.py runs at the
end of training, what ``sample.py evaluate=true`` runs on a checkpoint and what the
sample-quality callback runs during training: it draws samples through the shared
sampling call, embeds them and held-out real images with the judge (a CNN classifier
of the same data set: the user's own ``judges/<data set>.ckpt`` when there is one, else the
shipped pretrained ``classifier_<data set>``), and returns FID, KID, precision/recall,
density/coverage and the judge's label statistics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from zoo.checkpoints import load_checkpoint, model_from_checkpoint
from zoo.data.encoded import EncodedDataModule, source_of
from zoo.errors import ConfigError, ZooError
from zoo.metrics.sample_quality import (
    frechet_distance,
    kernel_inception_distance,
    label_statistics,
    mean_and_covariance,
    metrics_for_sample_count,
    precision_recall_density_coverage,
)
from zoo.models import GenerativeModule
from zoo.models.base import draw_samples
from zoo.outputs import save_tensor
from zoo.pretrained import NAME, shipped_judge, shipped_names, shipped_path

log = logging.getLogger("zoo")

METRICS = ("fid", "kid", "precision_recall", "labels")
SPLITS = ("train", "val", "test")


class JudgeMissingError(ZooError, FileNotFoundError):
    """No classifier checkpoint to judge samples with."""


def judge_path(judges_dir: str | Path, data_name: str) -> Path:
    """Return where the judge of a data set lives: ``<judges_dir>/<data_name>.ckpt``.

    The classifier presets export their judge there and evaluation reads it from there.
    """
    return Path(judges_dir) / f"{data_name}.ckpt"


def shipped_judge_names() -> str:
    """Return the shipped judges' names, comma-separated, for messages."""
    return ", ".join(n for n in shipped_names() if n.startswith("classifier_")) or (
        "none in this install"
    )


class Judge:
    """A CNN classifier used as a feature extractor and labeller of images: a run's checkpoint
    or a saved (pretrained) model's folder."""

    def __init__(self, path: str | Path, device: torch.device | str = "cpu"):
        self.path = Path(path)
        if self.path.is_dir():
            from zoo.pretrained import load
            from zoo.pretrained.folder import weights_fingerprint

            self.model = load(self.path, device=device)
            # Cached real features are valid only for these exact weights.
            self.fingerprint = weights_fingerprint(self.path)
        else:
            checkpoint = load_checkpoint(self.path, map_location=device)
            self.model = model_from_checkpoint(checkpoint, path=self.path).to(device)
            self.fingerprint = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        if self.model.family != "cnn_classifier":
            raise ZooError(
                f"{self.path} is a {self.model.family} model; the judge must be a cnn_classifier: "
                "train one with experiment=classifier_<data set>, or pass a shipped judge's "
                f"name ({shipped_judge_names()})"
            )
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, batch_size: int = 500
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return features (N, D) and class probabilities (N, K), float64 on the CPU, of images
        (N, C, H, W) in [-1, 1]. Raises ZooError for images of another shape than the judge's."""
        expected = tuple(self.model.spec.shape)
        if tuple(images.shape[1:]) != expected:
            raise ZooError(
                f"the judge {self.path} was trained on images of shape {expected}, the samples are "
                f"{tuple(images.shape[1:])}: judge with a classifier of the same data set"
            )
        features, probabilities = [], []
        for batch in images.split(batch_size):
            embedded, probs = self.model.embed(batch.to(self.device).float())
            features.append(embedded.double().cpu())
            probabilities.append(probs.double().cpu())
        return torch.cat(features), torch.cat(probabilities)


def _split_loader(datamodule: L.LightningDataModule, split: str):
    stage = "test" if split == "test" else "fit"
    datamodule.prepare_data()
    datamodule.setup(stage)
    loaders = {"train": datamodule.train_dataloader, "val": datamodule.val_dataloader}
    return datamodule.test_dataloader() if split == "test" else loaders[split]()


def split_images(datamodule: L.LightningDataModule, split: str) -> torch.Tensor:
    """Return every image (N, C, H, W) of a split of ``datamodule``."""
    return torch.cat([batch[0] for batch in _split_loader(datamodule, split)])


@dataclass
class Evaluation:
    """How image samples are judged: which judge, against which real images, which metrics.

    Built from ``conf/evaluation/default.yaml`` by :meth:`from_config`; every field is
    documented there. Raises ConfigError for an unknown metric or split.
    """

    enabled: bool = True
    num_samples: int = 1000
    reference_split: str = "test"
    metrics: list[str] = field(default_factory=lambda: list(METRICS))
    classifier_ckpt: str | None = None
    judges_dir: str = "judges"
    cache_dir: str = ".cache/zoo"
    batch_size: int = 500
    seed: int = 0
    nearest_neighbours: int = 3
    kid_subsets: int = 50
    inception_weights: str | None = None

    def __post_init__(self):
        unknown = sorted(set(self.metrics) - set(METRICS))
        if unknown:
            raise ConfigError(f"unknown evaluation.metrics {unknown}; choose from {list(METRICS)}")
        if self.reference_split not in SPLITS:
            raise ConfigError(
                f"evaluation.reference_split must be one of {list(SPLITS)}, "
                f"got {self.reference_split!r}"
            )

    @classmethod
    def from_config(cls, config: DictConfig | dict[str, Any] | Evaluation | None) -> Evaluation:
        """Return the evaluation described by a config node (or a plain dict) of its fields."""
        if isinstance(config, Evaluation):
            return config
        if config is None:
            return cls()
        values = (
            OmegaConf.to_container(config, resolve=True) if OmegaConf.is_config(config) else config
        )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown evaluation option(s) {unknown}; known: {sorted(names)}")
        return cls(**values)

    def replace(self, **changes: Any) -> Evaluation:
        """Return a copy with ``changes`` applied (e.g. other metrics for a callback)."""
        return dataclasses.replace(self, **changes)

    # The judge and the real images ------------------------------------------------------

    def find_judge(self, data_name: str) -> Path:
        """Return the judge: ``classifier_ckpt`` when set (a classifier run's checkpoint, a
        folder written by ``zoo.save_pretrained`` or a shipped judge's name such as
        ``classifier_mnist5k``), else the user's own ``<judges_dir>/<data_name>.ckpt``, else
        the shipped judge of the data set. Raises JudgeMissingError saying how to get one."""
        if self.classifier_ckpt:
            return self._named_judge(str(self.classifier_ckpt))
        path = judge_path(self.judges_dir, data_name)
        if path.is_file():
            return path
        shipped = shipped_judge(data_name)
        if shipped is not None:
            log.info("judging samples of %r with the shipped judge %s", data_name, shipped.name)
            return shipped
        raise JudgeMissingError(
            f"no classifier to judge samples of {data_name!r} at {path}: train one with "
            f"`python train.py experiment=classifier_{data_name}` (it writes {path}), "
            "or pass evaluation.classifier_ckpt=PATH"
        )

    @staticmethod
    def _named_judge(name: str) -> Path:
        path = Path(name)
        if path.exists():
            return path
        if NAME.fullmatch(name) and name in shipped_names():
            return shipped_path(name)
        raise JudgeMissingError(
            f"evaluation.classifier_ckpt={name} is no file, folder or shipped judge: pass a "
            "classifier run's checkpoint (its checkpoints/best.ckpt), a folder written by "
            "zoo.save_pretrained, or a shipped judge's name: " + shipped_judge_names()
        )

    def load_judge(self, data_name: str, device: torch.device | str = "cpu") -> Judge:
        """Return the judge of ``data_name`` on ``device`` (see :meth:`find_judge`)."""
        return Judge(self.find_judge(data_name), device=device)

    def real_features(
        self, judge: Judge, datamodule: L.LightningDataModule, data_record: dict[str, Any]
    ) -> torch.Tensor:
        """Return the judge's features (N, D) of the reference split's real images, cached.

        The cache key covers the data set's config, the split and the judge's bytes,
        so retraining the judge or changing the data (e.g. its image size) recomputes.
        """
        split = self.reference_split
        description = json.dumps(
            {"data": data_record, "split": split, "judge": judge.fingerprint}, sort_keys=True
        )
        key = hashlib.sha256(description.encode()).hexdigest()[:20]
        path = Path(self.cache_dir) / "real_features" / f"{data_record['name']}-{split}-{key}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        features, _ = judge(split_images(source_of(datamodule), split), self.batch_size)
        save_tensor(features, path)
        return features

    # Scoring ----------------------------------------------------------------------------

    def score(self, images: torch.Tensor, judge: Judge, real: torch.Tensor) -> dict[str, float]:
        """Return the metrics of generated ``images`` (N, C, H, W) against real features (M, D);
        a metric the sets are too small for is skipped with a warning saying how many it needs."""
        fake, probabilities = judge(images, self.batch_size)
        metrics, warnings = metrics_for_sample_count(
            self.metrics, len(fake), len(real), real.shape[1], self.nearest_neighbours
        )
        for warning in warnings:
            log.warning(warning)
        generator = torch.Generator().manual_seed(self.seed)
        results: dict[str, float] = {}
        if "fid" in metrics:
            results["fid"] = frechet_distance(
                *mean_and_covariance(real), *mean_and_covariance(fake)
            )
        if "kid" in metrics:
            kid, kid_std = kernel_inception_distance(
                real, fake, num_subsets=self.kid_subsets, generator=generator
            )
            results.update(kid=kid, kid_std=kid_std)
        if "precision_recall" in metrics:
            results.update(precision_recall_density_coverage(real, fake, k=self.nearest_neighbours))
        if "labels" in metrics:
            results.update(label_statistics(probabilities))
        return results

    def judge_images(
        self,
        images: torch.Tensor,
        datamodule: L.LightningDataModule,
        data_record: dict[str, Any],
        device: torch.device | str = "cpu",
    ) -> dict[str, float]:
        """Return the sample-quality metrics of images against the data set's real images
        (and the Inception FID when ``inception_weights`` is set).

        Raises JudgeMissingError (saying how to train one) when there is no judge.
        """
        judge = self.load_judge(data_record["name"], device)
        real = self.real_features(judge, datamodule, data_record)
        results = self.score(images, judge, real)
        if self.inception_weights:
            runnable, warnings = metrics_for_sample_count(
                ["inception_fid"], len(images), len(real), 0, 0
            )
            for warning in warnings:
                log.warning(warning)
            if runnable:
                real_images = split_images(source_of(datamodule), self.reference_split)
                results["inception_fid"] = inception_fid(
                    images, real_images, self.inception_weights
                )
        return results

    def evaluate_model(
        self, model: GenerativeModule, datamodule: L.LightningDataModule
    ) -> dict[str, float]:
        """Return the sample-quality metrics of ``num_samples`` fresh samples of ``model`` (drawn
        with ``seed``), the images per second it drew them at, and the network calls each
        took for families that count them (``last_network_calls``)."""
        images, seconds = draw_samples(
            model, self.num_samples, seed=self.seed, batch_size=self.batch_size
        )
        results = self.judge_images(images, datamodule, model.data_record, model.device)
        results["samples_per_second"] = self.num_samples / max(seconds, 1e-9)
        if getattr(model, "last_network_calls", None) is not None:  # per sample (diffusion)
            results["network_calls"] = float(model.last_network_calls)
        return results


def metrics_on_test_split(
    model: GenerativeModule, datamodule: L.LightningDataModule, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Return a model's test metrics (``test/loss``, ``test/bpd``, ``test/accuracy``, …) on the
    test split of ``datamodule``; a second stage is tested on the split encoded by its first
    stage, as it was trained."""
    device = torch.device(device)
    tester = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    tested = EncodedDataModule(datamodule, model) if model.two_stage else datamodule
    metrics: dict[str, float] = {}
    for row in tester.test(model, datamodule=tested, verbose=False):
        metrics.update({name: float(value) for name, value in row.items()})
    return metrics


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
