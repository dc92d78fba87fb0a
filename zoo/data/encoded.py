"""The batches of an image data module, passed once through the frozen first stage of a
two-stage model: what its second stage trains on (latents of latent diffusion, the codes of
a VQ-VAE's prior)."""

from __future__ import annotations

from typing import Protocol

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from zoo.data.ordering import item_loader


class Encoder(Protocol):
    """What a two-stage model offers its data: ``encode`` images (B, C, H, W) in [-1, 1] to
    what its second stage models, and optionally ``fit_latent_statistics`` on the encoded
    training set (e.g. the latents' scale)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...


class EncodedDataModule(L.LightningDataModule):
    """Serves ``(encoded, labels)`` batches of ``source``'s splits, each image encoded once.

    The splits are encoded when first set up, in order and without gradients, on the
    trainer's device when there is one; the loaders then read the encoded set as every zoo
    loader does (:mod:`zoo.data.ordering`): training shuffled by (seed, epoch), each process
    its own share, resumable mid-epoch. ``source`` stays the data set of record:
    evaluation judges samples against its real images.
    """

    def __init__(
        self, source: L.LightningDataModule, encoder: Encoder, batch_size: int | None = None
    ):
        super().__init__()
        self.source = source
        self.encoder = encoder
        self.batch_size = batch_size or getattr(source, "batch_size", 128)
        self.num_workers = 0
        self._encoded: dict[str, Dataset] = {}

    @property
    def spec(self):
        return self.source.spec

    def prepare_data(self) -> None:
        self.source.prepare_data()

    def _device(self) -> torch.device:
        trainer = getattr(self, "trainer", None)
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    @torch.no_grad()
    def _encode(self, dataset: Dataset) -> TensorDataset:
        device = self._device()
        module = self.encoder if isinstance(self.encoder, torch.nn.Module) else None
        original = next(module.parameters()).device if module is not None else None
        if module is not None:
            module.to(device)
        try:
            codes, labels = [], []
            for images, targets in DataLoader(dataset, batch_size=self.batch_size):
                codes.append(self.encoder.encode(images.to(device)).cpu())
                labels.append(torch.as_tensor(targets))
        finally:
            if module is not None:
                module.to(original)
        return TensorDataset(torch.cat(codes), torch.cat(labels))

    def setup(self, stage: str | None = None) -> None:
        self.source.setup(stage)
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in wanted.get(stage, ("train", "val", "test")):
            if split in self._encoded:
                continue
            dataset = getattr(self.source, f"{split}_dataset", None)
            if dataset is None:
                continue
            self._encoded[split] = self._encode(dataset)
            if split == "train" and hasattr(self.encoder, "fit_latent_statistics"):
                self.encoder.fit_latent_statistics(self._encoded[split].tensors[0])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self._encoded:
            raise RuntimeError(f"call {type(self).__name__}.setup() before asking for a loader")
        dataset = self._encoded[split]
        return item_loader(dataset, self.batch_size, self.trainer, shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def source_of(datamodule: L.LightningDataModule) -> L.LightningDataModule:
    """Return the data set of record behind ``datamodule``: its source when it is encoded."""
    return getattr(datamodule, "source", datamodule)
