"""Writes samples (image grids or text) to disk and to the active loggers while training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from zoo.callbacks.cadence import epoch_is_due
from zoo.models.base import draw_samples
from zoo.outputs import image_grid, save_image_grid, save_texts


class SampleWriter(L.Callback):
    """Every ``every_n_epochs`` validation epochs, draws samples with a fixed seed and writes them.

    Images go to ``<dirpath>/epoch_NNN.png``, text to ``<dirpath>/epoch_NNN.txt``;
    both are also sent to TensorBoard and wandb when those loggers are active.
    A model with a ``reconstruct(x)`` method also gets a reconstructions grid
    (first row: data; second row: reconstructions) of a fixed validation batch, and a
    model that does not generate (``generates = False``, an autoencoder) only that grid.
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

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        if batch_idx == 0 and self._reference_batch is None and hasattr(pl_module, "reconstruct"):
            self._reference_batch = batch[0][: min(16, len(batch[0]))].detach()

    @rank_zero_only
    def on_validation_epoch_end(self, trainer, pl_module):
        if not epoch_is_due(trainer, self.every_n_epochs):
            return
        tag, step = f"epoch_{trainer.current_epoch:03d}", trainer.global_step
        if getattr(pl_module, "generates", True):  # not an autoencoder alone (the VQ-VAE)
            samples, _ = draw_samples(pl_module, self.num_samples, seed=self.seed, **self.options)
            if isinstance(samples, torch.Tensor):
                path = save_image_grid(samples, self.dirpath / f"{tag}.png")
                self._log_image(trainer, "samples", path, image_grid(samples), step)
            else:
                path = save_texts(samples, self.dirpath / f"{tag}.txt")
                self._log_text(trainer, "samples", samples, step)
            self.written.append(path)
        if self._reference_batch is not None:  # reconstructs
            data = self._reference_batch.to(pl_module.device)
            pairs = torch.cat([data, pl_module.reconstruct(data)])
            grid_path = self.dirpath / f"reconstructions_{tag}.png"
            save_image_grid(pairs, grid_path, nrow=len(data))
            self._log_image(
                trainer, "reconstructions", grid_path, image_grid(pairs, len(data)), step
            )

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
