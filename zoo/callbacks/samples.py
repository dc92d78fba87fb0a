"""Writes samples (image grids or text) to disk and to the active loggers while training."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

MIN_DISPLAY_SIZE = 32  # tiny images (8×8 digits) are enlarged, pixel for pixel, to at least this


def image_grid(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """Return a (C, H', W') grid in [0, 1] of images (N, C, H, W) in [-1, 1], enlarged if tiny."""
    images = images.detach().float().cpu().clamp(-1, 1)
    scale = math.ceil(MIN_DISPLAY_SIZE / images.shape[-1])
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    nrow = nrow or max(1, math.ceil(math.sqrt(images.shape[0])))
    return make_grid((images + 1) / 2, nrow=nrow, padding=2, pad_value=1.0)


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Return ``path`` after writing images (N, C, H, W) in [-1, 1] there as a PNG grid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(image_grid(images, nrow), path)
    return path


def save_texts(texts: list[str], path: str | Path) -> Path:
    """Return ``path`` after writing the texts there, separated by numbered rules."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"===== sample {i} =====\n{text}\n" for i, text in enumerate(texts)]
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


class SampleWriter(L.Callback):
    """Every ``every_n_epochs`` validation epochs, draws samples with a fixed seed and writes them.

    Images go to ``<dirpath>/epoch_NNN.png``, text to ``<dirpath>/epoch_NNN.txt``;
    both are also sent to TensorBoard and wandb when those loggers are active.
    A model with a ``reconstruct(x)`` method also gets a reconstructions grid
    (first row: data; second row: reconstructions) of a fixed validation batch.
    ``options`` are passed to the model's ``sample`` call (e.g. ``max_new_tokens``).
    """

    def __init__(
        self,
        dirpath: str,
        every_n_epochs: int = 5,
        num_samples: int = 64,
        seed: int = 0,
        options: dict[str, Any] | None = None,
    ):
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.seed = seed
        self.options = dict(options or {})
        self._reference_batch: torch.Tensor | None = None
        self.written: list[Path] = []

    def _due(self, trainer) -> bool:
        epoch = trainer.current_epoch + 1
        # max_epochs is -1 (or None) when only max_steps bounds the run.
        last_epoch = trainer.max_epochs not in (None, -1) and epoch >= trainer.max_epochs
        return not trainer.sanity_checking and (epoch % self.every_n_epochs == 0 or last_epoch)

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        if batch_idx == 0 and self._reference_batch is None and hasattr(pl_module, "reconstruct"):
            self._reference_batch = batch[0][: min(16, len(batch[0]))].detach()

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        if not self._due(trainer):
            return
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        samples = pl_module.sample(self.num_samples, generator=generator, **self.options)
        tag, step = f"epoch_{trainer.current_epoch:03d}", trainer.global_step
        if isinstance(samples, torch.Tensor):
            path = save_image_grid(samples, self.dirpath / f"{tag}.png")
            self._log_image(trainer, "samples", path, image_grid(samples), step)
            if self._reference_batch is not None:
                data = self._reference_batch.to(pl_module.device)
                pairs = torch.cat([data, pl_module.reconstruct(data)])
                grid_path = self.dirpath / f"reconstructions_{tag}.png"
                save_image_grid(pairs, grid_path, nrow=len(data))
                self._log_image(
                    trainer, "reconstructions", grid_path, image_grid(pairs, len(data)), step
                )
        else:
            path = save_texts(samples, self.dirpath / f"{tag}.txt")
            self._log_text(trainer, "samples", samples, step)
        self.written.append(path)

    @staticmethod
    def _log_image(trainer, name: str, path: Path, grid: torch.Tensor, step: int) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(name, grid, step)
            elif isinstance(logger, WandbLogger):
                logger.log_image(key=name, images=[str(path)], step=step)

    @staticmethod
    def _log_text(trainer, name: str, texts: list[str], step: int) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # Markdown code blocks keep the line breaks of the generated text.
                for i, text in enumerate(texts[:4]):
                    logger.experiment.add_text(f"{name}/{i}", f"```\n{text}\n```", step)
            elif isinstance(logger, WandbLogger):
                logger.log_text(key=name, columns=["sample"], data=[[t] for t in texts], step=step)
