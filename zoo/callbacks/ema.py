"""Exponential moving average of a model's weights, used for evaluation and sampling."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from zoo import checkpoint_format as keys


class EMA(L.Callback):
    """Keeps ``ema = decay·ema + (1-decay)·weights`` after every optimizer step.

    The averaged weights replace the live ones during validation and testing
    (so the metrics, the sample grids and the best checkpoint judge the EMA
    model), are stored in every checkpoint under ``keys.EMA`` (sample.py
    uses them by default), and are restored on resume.

    ``warmup`` ramps the decay as min(decay, (1 + n) / (10 + n)) after n updates,
    so early averages are not dominated by the random initialisation.
    ``prefix`` restricts the average to one submodule's weights (e.g. ``"generator."``);
    empty means the whole model; None (the default) takes the model's ``ema_prefix``
    (the GAN's generator, every weight of the other families).
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True, prefix: str | None = None):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.prefix = prefix
        self.num_updates = 0
        self.ema_weights: dict[str, torch.Tensor] = {}
        self._live_weights: dict[str, torch.Tensor] | None = None  # set while EMA is swapped in
        self._last_step = -1  # the global step of the last update

    def _tracked(self, pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        prefix = self.prefix if self.prefix is not None else getattr(pl_module, "ema_prefix", "")
        return {
            name: tensor
            for name, tensor in pl_module.state_dict().items()
            if name.startswith(prefix) and tensor.is_floating_point()
        }

    def current_decay(self) -> float:
        """Return the decay used for the next update."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))

    # Updating

    def on_fit_start(self, trainer, pl_module):
        self._last_step = trainer.global_step
        tracked = self._tracked(pl_module)
        if not self.ema_weights:
            self.ema_weights = {name: t.detach().clone() for name, t in tracked.items()}
        else:  # restored from a checkpoint: follow the model to its device
            self.ema_weights = {
                name: t.to(tracked[name].device) for name, t in self.ema_weights.items()
            }

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # With gradient accumulation a batch may end without an optimizer step;
        # the average follows steps, not batches.
        if trainer.global_step == self._last_step:
            return
        self._last_step = trainer.global_step
        decay = self.current_decay()
        for name, live in self._tracked(pl_module).items():
            self.ema_weights[name].lerp_(live.detach(), 1.0 - decay)
        self.num_updates += 1

    # Swapping the average in for evaluation

    def _swap_in(self, pl_module):
        if not self.ema_weights or self._live_weights is not None:
            return
        self._live_weights = {n: t.detach().clone() for n, t in self._tracked(pl_module).items()}
        pl_module.load_state_dict(self.ema_weights, strict=False)

    def _swap_out(self, pl_module):
        if self._live_weights is None:
            return
        pl_module.load_state_dict(self._live_weights, strict=False)
        self._live_weights = None

    def on_validation_start(self, trainer, pl_module):
        self._swap_in(pl_module)

    def on_validation_end(self, trainer, pl_module):
        self._swap_out(pl_module)

    def on_test_start(self, trainer, pl_module):
        self._swap_in(pl_module)

    def on_test_end(self, trainer, pl_module):
        self._swap_out(pl_module)

    # Checkpoints

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self._live_weights is not None:
            # Saved mid-validation: the module holds the average, so store the live weights.
            checkpoint[keys.STATE_DICT].update(self._live_weights)
        checkpoint[keys.EMA] = {name: t.detach().cpu() for name, t in self.ema_weights.items()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if keys.EMA in checkpoint:
            self.ema_weights = {name: t.clone() for name, t in checkpoint[keys.EMA].items()}

    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_updates = state_dict["num_updates"]
