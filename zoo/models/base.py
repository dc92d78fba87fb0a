"""What every family's LightningModule shares: a spec in, optimizers from config, samples out."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

import zoo
from zoo.data.spec import DataSpec
from zoo.errors import ConfigError
from zoo.metrics import perplexity
from zoo.rng import restore_rng_states, rng_states

RNG_KEY = "rng_states"  # where a checkpoint keeps the random generators' states


def class_labels(
    labels: Any, count: int, num_classes: int, device: torch.device | str | None = None
) -> torch.Tensor | None:
    """Return the class of each of ``count`` samples, (count,): ``labels`` (one class or a
    list) repeated in turn, or every class in turn when None; None for an unconditional
    model (``num_classes`` 0). Raises ConfigError for labels given to an unconditional
    model and for classes outside 0 … num_classes − 1."""
    if not num_classes:
        if labels is not None:
            raise ConfigError(
                "labels= needs a class-conditional model (trained with model.conditional=true)"
            )
        return None
    if labels is None:
        labels = list(range(num_classes))
    labels = torch.as_tensor(labels, dtype=torch.long, device=device).flatten()
    if labels.numel() == 0 or labels.min() < 0 or labels.max() >= num_classes:
        raise ConfigError(
            f"labels must lie in the classes 0 … {num_classes - 1}, got {labels.tolist()}"
        )
    return labels.repeat(math.ceil(count / len(labels)))[:count]


class GenerativeModule(L.LightningModule):
    """A LightningModule built from a data spec that answers the shared sampling call.

    Subclasses set ``family`` (the name stored in checkpoints), call
    ``self.save_hyperparameters()`` in their ``__init__`` so that the checkpoint
    alone rebuilds them, and implement :meth:`sample`.

    ``optimizer`` and ``scheduler`` are Hydra partials kept as plain dicts
    (``{"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}``), so
    the checkpoint holds values, never objects.
    """

    family: str = ""
    generates: bool = True  # False for families that judge rather than generate (the classifier)
    ema_prefix: str = ""  # the weights the EMA callback averages by default ("": all of them)

    def __init__(
        self,
        spec: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
    ):
        super().__init__()
        self.spec = DataSpec.from_dict(spec)
        # The data set's name and config (plain values), recorded in checkpoints so that
        # evaluation can rebuild the data the model was trained on. Set by the runner.
        self.data_record: dict[str, Any] | None = None
        self._rng_to_restore: dict[str, Any] | None = None  # set when resuming

    # Logging --------------------------------------------------------------------

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Logs as LightningModule.log does; val/ and test/ metrics are averaged over every
        process (``sync_dist``), so a run on several devices reports the whole split's figure
        (a no-op on one device). Per-step train/ metrics stay per process: no sync each step."""
        if not name.startswith("train/"):
            kwargs.setdefault("sync_dist", True)
        super().log(name, value, *args, **kwargs)

    # Optimisation ---------------------------------------------------------------

    def parameter_groups(self):
        """Return what the optimizer updates; families override this for decay/no-decay groups."""
        return self.parameters()

    def optimizer_options(self) -> dict[str, Any]:
        """Return keyword arguments the family adds to the configured optimizer (e.g. fused)."""
        return {}

    def configure_optimizers(self):
        # _convert_="all": list arguments (betas) reach torch as lists, not ListConfig, so the
        # optimizer's state_dict, and with it every checkpoint, stays plain data.
        optimizer = instantiate(self.hparams.optimizer, _convert_="all")
        optimizer = optimizer(self.parameter_groups(), **self.optimizer_options())
        if not self.hparams.get("scheduler"):
            return optimizer
        scheduler = instantiate(self.hparams.scheduler, _convert_="all")(optimizer)
        interval = self.hparams.get("scheduler_interval", "epoch")
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval},
        }

    # The Lightning steps: a family computes and logs its loss in _step(batch, stage) ----

    def _step(self, batch, stage: str) -> torch.Tensor:
        """Return the loss of a batch, logging it under ``stage/`` (train, val or test)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _step()")

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    # The shared sampling call ---------------------------------------------------

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, **options):
        """Return ``num_samples`` samples in data space.

        Images: a float tensor ``(N, C, H, W)`` in [-1, 1]. Text: a list of strings.
        ``generator`` makes the draw reproducible; ``options`` are the family's own
        keyword arguments (``labels``, ``prompt``, ``temperature``, ...).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement sample()")

    # Checkpoints ----------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Marks the file as ours and names the family, so sample.py can rebuild the
        # model from the checkpoint alone without importing a path stored in it.
        checkpoint["zoo"] = {"family": self.family, "version": zoo.__version__}
        if self.data_record:
            checkpoint["zoo"]["data"] = self.data_record
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Applied when training starts, after the sanity check's validation has drawn its
        # noise: the next epoch's data order, noise and augmentations are then the ones
        # the interrupted run would have drawn.
        self._rng_to_restore = checkpoint.get(RNG_KEY)

    def on_train_start(self) -> None:
        if self._rng_to_restore is not None:
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None


class LanguageModel(GenerativeModule):
    """A text family whose ``forward(tokens)`` returns next-token logits (B, T, V) and a state.

    Its loss is the next-token cross-entropy in nats per token, logged with the
    perplexity on validation and test.
    """

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch  # (B, T) each; y is x shifted by one token
        logits, _ = self(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # nats/token
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        if stage != "train":
            self.log(f"{stage}/perplexity", perplexity(loss), on_epoch=True)
        return loss
