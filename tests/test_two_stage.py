"""Two-stage models: a frozen first stage inside the second's checkpoint, data encoded once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
import torch
from conftest import IMAGE_SPEC, checkpoint_of, tiny_family
from torch import nn

from zoo import checkpoint_format as keys
from zoo.checkpoints import load_checkpoint, model_from_checkpoint
from zoo.data import DigitsDataModule
from zoo.data.encoded import EncodedDataModule, source_of
from zoo.errors import ConfigError
from zoo.models import FAMILIES, GenerativeModule
from zoo.outputs import save_tensor
from zoo.runner import build_model


class LatentGaussian(GenerativeModule):
    """A diagonal Gaussian over a VAE's posterior means: the smallest honest second stage."""

    family = "latent_gaussian"
    stage_one_families = ("vae",)

    def __init__(
        self,
        spec: dict[str, Any],
        stage_one: dict | None = None,
        compile: bool = False,
        optimizer=None,
        scheduler=None,
        scheduler_interval: str = "epoch",
    ):
        optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.05}
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        self.stage_one = self.build_stage_one(stage_one)
        latent_dim = self.stage_one.latent_dim
        self.mean = nn.Parameter(torch.zeros(latent_dim))
        self.log_std = nn.Parameter(torch.zeros(latent_dim))
        self.encoded_images = 0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.encoded_images += len(images)
        return self.stage_one.encoder(images)[0]  # posterior means (B, latent_dim)

    def _step(self, batch, stage: str) -> torch.Tensor:
        z, _ = batch
        loss = (0.5 * ((z - self.mean) / self.log_std.exp()) ** 2 + self.log_std).sum(1).mean()
        self.log(f"{stage}/loss", loss, on_epoch=True)
        return loss

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator=None) -> torch.Tensor:
        noise = torch.randn(num_samples, len(self.mean), generator=generator, device=self.device)
        z = self.mean + noise * self.log_std.exp()
        return self.stage_one.decoded_mean(self.stage_one.decoder(z))


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(FAMILIES, LatentGaussian.family, LatentGaussian)


@pytest.fixture
def stage_one_path(tmp_path):
    vae = tiny_family("vae")
    vae.data_record = {"name": "digits", "config": {"_target_": "zoo.data.DigitsDataModule"}}
    return save_tensor(checkpoint_of(vae), tmp_path / "vae.ckpt"), vae


def test_the_second_stage_holds_the_first_stages_weights_and_plain_hyperparameters(
    registered, stage_one_path
):
    path, vae = stage_one_path
    model = build_model(
        {"_target_": "test_two_stage.LatentGaussian", "stage_one": str(path)}, IMAGE_SPEC
    )
    assert model.two_stage and not tiny_family("vae").two_stage
    for name, tensor in vae.state_dict().items():
        assert torch.equal(model.state_dict()[f"stage_one.{name}"], tensor)
    record = model.hparams.stage_one
    assert record["family"] == "vae" and record["hyper_parameters"]["latent_dim"] == 2
    assert len(record["sha256"]) == 64
    assert not any(p.requires_grad for p in model.stage_one.parameters())


def test_the_data_is_encoded_once_and_the_first_stage_stays_frozen_in_training(
    registered, stage_one_path
):
    path, vae = stage_one_path
    model = build_model(
        {"_target_": "test_two_stage.LatentGaussian", "stage_one": str(path)}, IMAGE_SPEC
    )
    digits = DigitsDataModule(batch_size=64)
    encoded = EncodedDataModule(digits, model)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=encoded)
    assert model.encoded_images == len(digits.train_dataset) + len(digits.val_dataset)
    assert not model.stage_one.training
    for name, tensor in vae.state_dict().items():
        assert torch.equal(model.state_dict()[f"stage_one.{name}"], tensor)
    latents = encoded.train_dataloader().dataset.tensors[0]
    assert model.mean.detach() == pytest.approx(latents.mean(0), abs=0.3)
    assert source_of(encoded) is digits and source_of(digits) is digits


class Flatten:
    """The smallest encoder: images (B, C, H, W) → (B, C·H·W)."""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def test_encoded_data_deals_each_process_its_own_share_and_resumes_mid_epoch():
    def loaders(num_replicas: int, rank: int) -> tuple:
        encoded = EncodedDataModule(DigitsDataModule(batch_size=16), Flatten())
        encoded.setup("fit")
        # What a DDP trainer tells its data modules about the processes.
        encoded.trainer = SimpleNamespace(
            distributed_sampler_kwargs={"num_replicas": num_replicas, "rank": rank}
        )
        return encoded.train_dataloader(), encoded.val_dataloader()

    (one_train, one_val), *shares = [loaders(*share) for share in ((1, 0), (2, 0), (2, 1))]
    whole = list(one_train.sampler)  # 1,437 training images, shuffled by (seed, epoch)
    trains = [list(train.sampler) for train, _ in shares]
    assert trains[0] == whole[0:1436:2] and trains[1] == whole[1:1436:2]
    vals = [list(val.sampler) for _, val in shares]
    assert sorted(vals[0] + vals[1]) == list(one_val.sampler) == list(range(180))
    assert not set(vals[0]) & set(vals[1])

    train = shares[1][0]
    batches = iter(train)
    next(batches), next(batches)
    state = train.state_dict()  # what a checkpoint taken after two steps holds
    _, expected = next(batches)
    resumed = loaders(2, 1)[0]
    resumed.load_state_dict(state)
    _, first = next(iter(resumed))
    assert torch.equal(first, expected)


def test_one_checkpoint_rebuilds_both_stages_and_samples_the_same_images(
    registered, stage_one_path, tmp_path
):
    path, _ = stage_one_path
    model = build_model(
        {"_target_": "test_two_stage.LatentGaussian", "stage_one": str(path)}, IMAGE_SPEC
    ).eval()
    with torch.no_grad():
        model.mean.add_(0.5)
    saved = save_tensor(checkpoint_of(model), tmp_path / "two_stage.ckpt")
    path.unlink()  # the first stage's file is not needed any more
    checkpoint = load_checkpoint(saved)  # weights_only=True
    assert any(name.startswith("stage_one.") for name in checkpoint[keys.STATE_DICT])
    rebuilt = model_from_checkpoint(checkpoint)
    first = model.sample(5, generator=torch.Generator().manual_seed(0))
    again = rebuilt.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(first, again) and first.shape == (5, 1, 8, 8)


def test_a_first_stage_of_another_family_or_shape_is_refused(registered, tmp_path):
    gan = tiny_family("gan")
    with pytest.raises(ConfigError, match="builds on a vae checkpoint, got a gan one"):
        LatentGaussian(
            IMAGE_SPEC, stage_one={"family": "gan", "hyper_parameters": dict(gan.hparams)}
        )
    vae = tiny_family("vae")
    other = {**IMAGE_SPEC, "shape": [1, 16, 16]}
    with pytest.raises(ConfigError, match=r"trained on images of shape \(1, 8, 8\)"):
        LatentGaussian(other, stage_one={"family": "vae", "hyper_parameters": dict(vae.hparams)})
