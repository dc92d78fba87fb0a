"""CNN classifier: the judge of the image families.

A small VGG-style convolutional network sized from the data spec. Its test
accuracy says how far to trust it; its penultimate features are the space in
which zoo measures sample quality (Fréchet distance, KID, precision/recall), and
its softmax over classes tells whether samples look like any class at all.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError, ZooError
from zoo.models.base import GenerativeModule, check_fractions, check_sizes
from zoo.nn.schedules import COSINE_OVER_THE_RUN


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None):
    """Return images (B, C, H, W) each moved by up to ``max_shift`` pixels, edges padded with -1."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, value=-1.0)  # -1 is the background of [-1, 1] images
    shifts = torch.randint(0, 2 * max_shift + 1, (2, b), device=x.device, generator=generator)
    rows = shifts[0].view(b, 1, 1) + torch.arange(h, device=x.device).view(1, h, 1)  # (B, H, 1)
    cols = shifts[1].view(b, 1, 1) + torch.arange(w, device=x.device).view(1, 1, w)  # (B, 1, W)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


class CNNClassifier(GenerativeModule):
    """Classifies images; ``features(x)`` gives the penultimate layer that judges samples."""

    family = "cnn_classifier"
    generates = False
    compiled_networks = ("body", "head")
    logged_metrics = ("loss", "accuracy")

    def __init__(
        self,
        spec: dict[str, Any],
        channels: list[int] | tuple[int, ...] = (32, 64, 128),
        dropout: float = 0.3,
        max_shift: int = 1,
        label_smoothing: float = 0.0,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = COSINE_OVER_THE_RUN,
        scheduler_interval: str = "epoch",
    ):
        optimizer = optimizer or {
            "_target_": "torch.optim.AdamW",
            "_partial_": True,
            "lr": 2e-3,
            "weight_decay": 0.05,
        }
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        check_sizes(channels=list(channels))
        check_fractions(dropout=dropout)
        if max_shift < 0:
            raise ConfigError(f"model.max_shift must be >= 0, got {max_shift}")
        if self.spec.num_classes < 2:
            raise ConfigError(
                "the classifier needs labelled images (num_classes >= 2): choose a labelled image "
                "data set, e.g. data=digits, or an image folder with one subfolder per class"
            )
        layers: list[nn.Module] = []
        in_channels, size = self.spec.shape[0], min(self.spec.shape[1:])
        for width in channels:
            for _ in range(2):
                layers += [
                    nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ]
                in_channels = width
            if size >= 4:  # halve while at least 2×2 remains
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = in_channels
        self.head = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(in_channels, self.spec.num_classes)
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the penultimate features (B, feature_dim) of images (B, C, H, W) in [-1, 1]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits (B, num_classes)."""
        return self.head(self.features(x))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the features (B, feature_dim) and class probabilities (B, num_classes) of
        images (B, C, H, W) in [-1, 1]: what a judge of samples needs of a classifier."""
        features = self.features(x)
        return features, self.head(features).softmax(dim=1)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        if stage == "train":
            x = random_shift(x, self.hparams.max_shift)
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(
            f"{stage}/accuracy", accuracy, on_step=False, on_epoch=True, prog_bar=stage != "train"
        )
        return loss

    def sample(self, num_samples: int, *, generator: torch.Generator | None = None):
        raise ZooError(
            "the CNN classifier judges samples but does not generate them: sample from a "
            "generative family's checkpoint, and pass this one to judge the samples as "
            "evaluation.classifier_ckpt=PATH (or a shipped judge's name, e.g. classifier_mnist5k)"
        )
