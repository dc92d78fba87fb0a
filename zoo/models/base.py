"""The family contract: what every family's LightningModule is and may offer.

A family is one module under ``zoo/models/`` with a :class:`GenerativeModule` subclass.
It is built from a data spec and plain hyperparameters, trains through ``_step``, and
answers the one sampling call. To add a family: write ``zoo/models/<family>.py``, add its
class to ``FAMILIES`` in ``zoo/models/__init__.py``, give it ``conf/model/<family>.yaml``
(whose values equal the constructor's defaults: tests/test_configs.py holds them equal),
a ``conf/experiment/<family>_<data>.yaml`` and a ``tests/test_<family>.py``.

**Required** of a subclass:

- ``family``: the name stored in checkpoints and looked up in ``FAMILIES``.
- ``modality``: ``"image"`` or ``"text"``; the base class refuses data of the other kind.
- ``__init__(spec, <hyperparameters>, compile=False, optimizer=None, scheduler=None,
  scheduler_interval=...)`` that calls ``super().__init__`` and then
  ``self.save_hyperparameters()``, so that a checkpoint alone rebuilds it
  (``zoo.checkpoints.model_from_checkpoint``). Every argument must be a plain value.
- ``_step(batch, stage)``: computes the loss of a batch and logs it as
  ``f"{stage}/loss"`` (stage is ``train``, ``val`` or ``test``), with
  ``logged_metrics`` logged under ``val/`` and ``test/``.
- ``sample(num_samples, *, generator=None, **options)``: data-space samples, images
  ``(N, C, H, W)`` in [-1, 1] or a list of strings. Its keyword-only options are the
  family's sample.py options (``labels``, ``temperature``, ``steps``, …): sample.py
  derives the options it forwards from these signatures.

**Optional** attributes and methods that the runner, callbacks and sample.py look for:

- ``logged_metrics``: the metrics logged under ``val/`` and ``test/``; ``monitor`` must
  name one of them (or one a callback logs).
- ``generates = False``: the family judges rather than generates (the classifier);
  nothing asks it for samples.
- ``ema_prefix``: the weights the EMA callback averages when its own prefix is unset
  (``"generator."`` for a GAN; ``""``, every weight, by default).
- ``compiled_networks``: the submodules that ``compile=True`` compiles in place with
  ``torch.compile`` (``nn.Module.compile``, so state_dict keys do not change and a
  checkpoint of a compiled model loads into an uncompiled one and back).
- ``reconstruct(x)``: data → reconstructions; the sample writer then adds a grid of
  data and reconstructions.
- a ``progress`` keyword of ``sample``: sample.py turns on a progress bar.
- ``last_network_calls``: the network calls per sample of the last ``sample`` call
  (diffusion); sample.py and the evaluation report it as ``network_calls``.
- ``num_classes`` (set through :meth:`conditional_classes`): class-conditional sampling
  with ``labels=``; :meth:`batch_labels` and :meth:`sample_labels` give the labels.
- ``parameter_groups()`` and ``optimizer_options()``: decay groups, fused kernels.
- ``training_step_counts()``: optimizer steps per network of a family that steps them
  in turn (the GAN).

**Two-stage families** (latent diffusion, a prior over a VQ-VAE's codes) set
``stage_one_families``, take a ``stage_one`` argument (required, or optional for a family
that also works on pixels) and build their frozen first stage, ``self.stage_one``, with
:meth:`build_stage_one`; ``two_stage`` is then true. train.py turns a checkpoint path
given as ``model.stage_one=PATH`` into that argument (the first stage's family and
hyperparameters, plain values) and copies its weights in; the first stage's weights are
then part of the model's own, so one checkpoint holds both stages and sample.py needs
nothing else. They implement ``encode(images)`` (what the second stage models) and may
implement ``fit_latent_statistics(encoded)``: train.py trains them on the data encoded
once (``zoo.data.EncodedDataModule``), while evaluation judges their decoded samples
against the real images.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from functools import partial
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from torch.optim.lr_scheduler import LambdaLR

import zoo
from zoo import checkpoint_format as keys
from zoo.data.spec import DataSpec
from zoo.data.tokenizers import tokenizer_from_state
from zoo.errors import ConfigError, TrainingDivergedError
from zoo.metrics import bits_per_character, perplexity
from zoo.nn.decoding import truncate_at_stop
from zoo.rng import restore_rng_states, rng_states

log = logging.getLogger("zoo")

EXAMPLE_DATA = {"image": "data=digits", "text": "data=shakespeare"}


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
    if isinstance(labels, torch.Tensor):
        labels = labels.flatten().tolist()
    values = labels if isinstance(labels, (list, tuple)) else [labels]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ConfigError(
            f"labels must be a class id or a list of them (e.g. labels=3 or 'labels=[0,1,2]'), "
            f"got {labels!r}"
        )
    labels = torch.as_tensor(values, dtype=torch.long, device=device)
    if labels.numel() == 0 or labels.min() < 0 or labels.max() >= num_classes:
        raise ConfigError(
            f"labels must lie in the classes 0 … {num_classes - 1}, got {labels.tolist()}"
        )
    return labels.repeat(math.ceil(count / len(labels)))[:count]


def check_sizes(**sizes: Any) -> None:
    """Raises ConfigError naming the first size that is not a positive integer (a list of
    sizes, such as channels per level, must hold positive integers only)."""
    for name, value in sizes.items():
        listed = isinstance(value, (list, tuple))
        values = list(value) if listed else [value]
        if not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values
        ):
            kind = "a list of positive integers" if listed else "a positive integer"
            raise ConfigError(f"model.{name} must be {kind}, got {value!r}")


def check_halvings(network: str, num_halvings: int, shape: tuple[int, ...]) -> int:
    """Return the factor 2**num_halvings by which ``network`` shrinks images of ``shape``
    (C, H, W), one halving per entry of model.channels; raises ConfigError when H or W is
    not a multiple of it."""
    _, h, w = shape
    factor = 2**num_halvings
    if h % factor or w % factor:
        raise ConfigError(
            f"the {network} halves the image {num_halvings} times ({num_halvings} entries in "
            f"model.channels), so H and W must be multiples of {factor}; the data are {h}×{w}: "
            "use fewer channel entries or resize the images (data.image_size)"
        )
    return factor


def check_fractions(**fractions: float) -> None:
    """Raises ConfigError naming the first value outside [0, 1) (dropout rates and the like)."""
    for name, value in fractions.items():
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ConfigError(f"model.{name} must lie in [0, 1), got {value!r}")


def check_optimizer(name: str, optimizer: dict[str, Any] | None) -> None:
    """Raises ConfigError when an optimizer config has no _target_, a learning rate that is
    not a positive finite number, or a ``fused`` that is not true, false or null."""
    if optimizer is None:
        return
    if not isinstance(optimizer, dict) or "_target_" not in optimizer:
        raise ConfigError(
            f"model.{name} must be a partial with a _target_ (e.g. torch.optim.Adam), "
            f"got {optimizer!r}"
        )
    lr = optimizer.get("lr")
    if lr is not None and (not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0):
        raise ConfigError(f"model.{name}.lr must be a positive finite number, got {lr!r}")
    fused = optimizer.get("fused")
    if fused is not None and not isinstance(fused, bool):
        raise ConfigError(f"model.{name}.fused must be true, false or null, got {fused!r}")


class GenerativeModule(L.LightningModule):
    """A LightningModule built from a data spec that answers the shared sampling call.

    ``optimizer`` and ``scheduler`` are Hydra partials kept as plain dicts
    (``{"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3}``), so the
    checkpoint holds values, never objects. See the module's docstring for the contract.
    """

    family: str = ""
    modality: str = "image"
    generates: bool = True  # False for families that judge rather than generate (the classifier)
    ema_prefix: str = ""  # the weights the EMA callback averages by default ("": all of them)
    compiled_networks: tuple[str, ...] = ()  # the submodules compile=True compiles
    stage_one_families: tuple[str, ...] = ()  # the families a first stage may be (two-stage)
    logged_metrics: tuple[str, ...] = ("loss",)  # logged under val/ and test/

    def __init__(
        self,
        spec: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
    ):
        super().__init__()
        self.spec = DataSpec.from_dict(spec)
        if self.spec.modality != self.modality:
            raise ConfigError(
                f"the {self.family} family models {self.modality}, but the data are "
                f"{self.spec.modality}: choose {'an' if self.modality == 'image' else 'a'} "
                f"{self.modality} data set (e.g. {EXAMPLE_DATA[self.modality]})"
            )
        check_optimizer("optimizer", optimizer)
        if scheduler_interval not in ("epoch", "step"):
            raise ConfigError(
                f"model.scheduler_interval must be epoch or step, got {scheduler_interval!r}"
            )
        self.num_classes = 0  # classes of a class-conditional family (conditional_classes)
        # The data set's name and config (plain values), recorded in checkpoints so that
        # evaluation can rebuild the data the model was trained on. Set by the runner.
        self.data_record: dict[str, Any] | None = None
        self._rng_to_restore: dict[str, Any] | None = None  # set when resuming
        self._resumed_hyper_parameters: dict[str, Any] | None = None  # likewise
        self._compiled = False

    # Classes ----------------------------------------------------------------------

    def conditional_classes(self, conditional: bool) -> int:
        """Return the number of classes to condition on: the data's when ``conditional``,
        else 0. Raises ConfigError when conditioning is asked of unlabelled data."""
        if conditional and self.spec.num_classes < 2:
            raise ConfigError(
                "model.conditional=true needs labelled data (at least two classes); this data "
                "set has none: choose a labelled data set or set model.conditional=false"
            )
        return self.spec.num_classes if conditional else 0

    def batch_labels(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Return a training batch's labels (B,) for a conditional model, None otherwise.
        Raises ConfigError when a conditional model meets unlabelled images (label −1)."""
        if not self.num_classes:
            return None
        if bool((labels < 0).any()):
            raise ConfigError(
                f"the {self.family} model is class-conditional, but the batch holds unlabelled "
                "images (label -1): train it on labelled data or set model.conditional=false"
            )
        return labels

    def sample_labels(self, labels: Any, count: int) -> torch.Tensor | None:
        """Return the class of each of ``count`` samples (see :func:`class_labels`)."""
        return class_labels(labels, count, self.num_classes, self.device)

    # Two-stage families -----------------------------------------------------------

    def build_stage_one(self, stage_one: dict[str, Any]) -> GenerativeModule:
        """Return the frozen first stage described by ``stage_one`` (``family`` and
        ``hyper_parameters``, as train.py records them), weights to be loaded by the caller.

        Raises ConfigError for a family this one cannot build on, or a first stage trained
        on data of another shape.
        """
        from zoo.models import FAMILIES  # the table imports every family, this one included

        if not isinstance(stage_one, dict) or "family" not in stage_one:
            raise ConfigError(
                f"model.stage_one must name the first stage's checkpoint (model.stage_one=PATH), "
                f"got {stage_one!r}"
            )
        family = stage_one["family"]
        if family not in self.stage_one_families:
            raise ConfigError(
                f"the {self.family} family builds on a {' or '.join(self.stage_one_families)} "
                f"checkpoint, got a {family} one"
            )
        first = FAMILIES[family](**{**stage_one["hyper_parameters"], "compile": False})
        if tuple(first.spec.shape or ()) != tuple(self.spec.shape or ()):
            raise ConfigError(
                f"the first stage was trained on images of shape {tuple(first.spec.shape)}, "
                f"the data are {tuple(self.spec.shape)}: train it on the same data set"
            )
        first.requires_grad_(False)
        return first.eval()

    @property
    def two_stage(self) -> bool:
        """Whether the model is a second stage over a frozen first stage (``stage_one``)."""
        return isinstance(getattr(self, "stage_one", None), torch.nn.Module)

    def train(self, mode: bool = True):
        """Sets training mode, except for a frozen first stage, which stays in eval mode."""
        super().train(mode)
        stage_one = getattr(self, "stage_one", None)
        if isinstance(stage_one, torch.nn.Module):
            stage_one.eval()
        return self

    # Compilation ------------------------------------------------------------------

    def compile_networks(self) -> None:
        """Compiles the ``compiled_networks`` in place with torch.compile (once)."""
        if self._compiled:
            return
        for name in self.compiled_networks:
            getattr(self, name).compile()
        self._compiled = True

    def setup(self, stage: str) -> None:
        if self.hparams.get("compile"):
            self.compile_networks()

    # Logging ----------------------------------------------------------------------

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """Logs as LightningModule.log does; val/ and test/ metrics are averaged over every
        process (``sync_dist``), so a run on several devices reports the whole split's figure
        (a no-op on one device). Per-step train/ metrics stay per process: no sync each step."""
        if not name.startswith("train/"):
            kwargs.setdefault("sync_dist", True)
        super().log(name, value, *args, **kwargs)

    # Optimisation -----------------------------------------------------------------

    def parameter_groups(self):
        """Return what the optimizer updates; families override this for decay/no-decay groups."""
        return self.parameters()

    def optimizer_options(self) -> dict[str, Any]:
        """Return keyword arguments the family adds to the configured optimizer (e.g. fused)."""
        return {}

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clips as Lightning does, and also for a fused optimizer under bf16-mixed precision.

        Lightning refuses to clip gradients for a fused optimizer under any mixed precision,
        because with float16's gradient scaler the gradients are still scaled at that point.
        Lightning's own bf16-mixed has no scaler: the gradients are the true, whole ones
        (all-reduced under DDP), and clipping them here is exact. Every other precision
        plugin (float16's scaler, FSDP's sharded gradients, whose norm is not local) goes
        through Lightning unchanged.
        """
        plugin = self.trainer.precision_plugin
        fused = getattr(optimizer, "defaults", {}).get("fused")
        if fused and type(plugin) is MixedPrecision and plugin.precision == "bf16-mixed":
            # Lightning's plain clipping, without MixedPrecision's refusal.
            Precision.clip_gradients(
                plugin, optimizer, gradient_clip_val or 0.0, gradient_clip_algorithm or "norm"
            )
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def schedule_length(self, interval: str) -> int:
        """Return how many times the scheduler steps in the whole run: the epochs (those that
        ``max_steps`` makes, when only it bounds the run), or the optimizer steps with
        ``interval="step"``. Raises ConfigError when the run is unbounded."""
        trainer = self.trainer
        # A bound the trainer states needs no data. Reading the training loader here (as
        # estimated_stepping_batches does) comes before a resumed run restores its loops,
        # and Lightning then never hands the loader its place in the epoch.
        bounded_by_epochs = trainer.max_epochs not in (None, -1)
        if interval == "epoch" and bounded_by_epochs:
            return int(trainer.max_epochs)
        if interval == "step" and not bounded_by_epochs and trainer.max_steps not in (None, -1):
            return int(trainer.max_steps)
        steps = trainer.estimated_stepping_batches
        length = steps
        if interval == "epoch":
            length = trainer.max_epochs
            if length in (None, -1) and math.isfinite(steps):
                if trainer.train_dataloader is None:
                    trainer.fit_loop.setup_data()  # as estimated_stepping_batches does
                batches = trainer.num_training_batches
                if math.isfinite(batches):
                    per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
                    length = math.ceil(steps / per_epoch)
        if length is None or length < 1 or not math.isfinite(length):
            bound = "trainer.max_epochs" if interval == "epoch" else "trainer.max_steps"
            raise ConfigError(
                f"the learning-rate schedule spans the run, but the run sets no {bound}: set it, "
                "or give the scheduler its own total_steps"
            )
        return int(length)

    def make_scheduler(self, optimizer: torch.optim.Optimizer):
        """Return the configured scheduler of ``optimizer`` (None without one). A schedule
        whose ``total_steps`` is null spans the run: it is planned from the trainer's
        bound each time training starts, so a resumed run with a larger budget re-plans it."""
        if not self.hparams.get("scheduler"):
            return None
        make = instantiate(self.hparams.scheduler, _convert_="all")
        if "total_steps" in inspect.signature(make).parameters and (
            make.keywords.get("total_steps") is None
        ):
            # A run shorter than its warm-up (a smoke test) stays in the warm-up.
            length = self.schedule_length(self.hparams.scheduler_interval)
            length = max(length, make.keywords.get("warmup_steps", 0) + 1)
            make = partial(make, total_steps=length)
        return make(optimizer)

    def configure_optimizers(self):
        # _convert_="all": list arguments (betas) reach torch as lists, not ListConfig, so the
        # optimizer's state_dict, and with it every checkpoint, stays plain data.
        optimizer = instantiate(self.hparams.optimizer, _convert_="all")
        optimizer = optimizer(self.parameter_groups(), **self.optimizer_options())
        scheduler = self.make_scheduler(optimizer)
        if scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }

    # The Lightning steps: a family computes and logs its loss in _step(batch, stage) ----

    def _step(self, batch, stage: str) -> torch.Tensor:
        """Return the loss of a batch, logging it under ``stage/`` (train, val or test)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _step()")

    def training_step(self, batch, batch_idx):
        loss = self._step(batch, "train")
        self.stop_if_diverged({"loss": loss})
        return loss

    def stop_if_diverged(
        self,
        losses: dict[str, torch.Tensor],
        where: str | None = None,
        advice: str = "Lower the learning rate (model.optimizer.lr) or clip gradients "
        "(trainer.gradient_clip_val=1.0)",
    ) -> None:
        """Raises TrainingDivergedError when a training loss is NaN or infinite.

        Called before the backward pass, so no non-finite update is made and nothing
        non-finite is saved: the checkpoints on disk are the last good ones, and the
        message names the newest. One device sync per step.
        """
        if bool(torch.isfinite(torch.stack([loss.detach() for loss in losses.values()])).all()):
            return
        bad = {name: float(value) for name, value in losses.items() if not torch.isfinite(value)}
        checkpoint = getattr(self.trainer, "checkpoint_callback", None)
        last = getattr(checkpoint, "last_model_path", "") or getattr(
            checkpoint, "best_model_path", ""
        )
        kept = (
            f"the last good checkpoint is {last} (resume with ckpt_path={last})"
            if last
            else "no checkpoint had been written yet"
        )
        found = ", ".join(f"{name}={value}" for name, value in bad.items())
        raise TrainingDivergedError(
            f"the {self.family} model diverged at {where or f'step {self.global_step}'} "
            f"({found}); {kept}. {advice}"
        )

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    # The shared sampling call -----------------------------------------------------

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, **options):
        """Return ``num_samples`` samples in data space.

        Images: a float tensor ``(N, C, H, W)`` in [-1, 1]. Text: a list of strings.
        ``generator`` makes the draw reproducible; ``options`` are the family's own
        keyword arguments (``labels``, ``prompt``, ``temperature``, ...).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement sample()")

    @classmethod
    def sample_options(cls) -> tuple[str, ...]:
        """Return the family's sample options: the keyword-only arguments of its ``sample``."""
        parameters = inspect.signature(cls.sample).parameters.values()
        return tuple(
            p.name
            for p in parameters
            if p.kind == p.KEYWORD_ONLY and p.name not in ("generator", "progress")
        )

    # Checkpoints ------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Marks the file as ours and names the family, so sample.py can rebuild the
        # model from the checkpoint alone without importing a path stored in it.
        checkpoint[keys.ZOO] = {"family": self.family, "version": zoo.__version__}
        if self.data_record:
            checkpoint[keys.ZOO]["data"] = self.data_record
        checkpoint[keys.RNG] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Applied when training starts, after the sanity check's validation has drawn its
        # noise: the next epoch's data order, noise and augmentations are then the ones
        # the interrupted run would have drawn.
        self._rng_to_restore = checkpoint.get(keys.RNG)
        self._resumed_hyper_parameters = checkpoint.get(keys.HYPER_PARAMETERS)

    def on_train_start(self) -> None:
        # A resumed run's training loader gets its place in the epoch from the checkpoint
        # (zoo.data.ordering.ResumableLoader) when Lightning builds the loader after restoring
        # its loops. When configure_optimizers had to read the loader first (a schedule
        # planned from the batches per epoch), the place is handed over here, before the
        # first batch is drawn.
        fit_loop = self.trainer.fit_loop
        if getattr(fit_loop, "_combined_loader_states_to_load", None):
            fit_loop._load_combined_loader_states()
        if self._rng_to_restore is not None:
            restore_rng_states(self._rng_to_restore)
            self._rng_to_restore = None
        if self._resumed_hyper_parameters:
            self.apply_configured_learning_rates(self._resumed_hyper_parameters)
            self._resumed_hyper_parameters = None

    optimizer_configs: tuple[str, ...] = ("optimizer",)  # hparams of each optimizer, in order

    def apply_configured_learning_rates(self, stored: dict[str, Any]) -> None:
        """Makes a resumed run follow its own config, not the restored optimizer state: the
        configured learning rate where it differs from the checkpoint's, and the schedule
        planned for this run's length.

        Each parameter group's rate, and its scheduler's base rate, is scaled by
        configured / stored; a LambdaLR (zoo's schedules) then sets each group's rate from
        its lambda at the step reached, so a longer run continues on its longer cosine.
        """
        schedulers = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        for index, key in enumerate(self.optimizer_configs):
            optimizer = self.trainer.optimizers[index]
            configured = (self.hparams.get(key) or {}).get("lr")
            previous = (stored.get(key) or {}).get("lr")
            if configured is not None and previous is not None and configured != previous:
                scale = configured / previous
                for group in optimizer.param_groups:
                    group["lr"] *= scale
                    if "initial_lr" in group:
                        group["initial_lr"] *= scale
                for scheduler in schedulers:
                    if scheduler.optimizer is optimizer and hasattr(scheduler, "base_lrs"):
                        scheduler.base_lrs = [rate * scale for rate in scheduler.base_lrs]
                log.info(
                    "resumed at the configured model.%s.lr=%g (the checkpoint's was %g)",
                    key,
                    configured,
                    previous,
                )
            for scheduler in schedulers:
                if scheduler.optimizer is optimizer and isinstance(scheduler, LambdaLR):
                    rates = [
                        base * factor(scheduler.last_epoch)
                        for base, factor in zip(
                            scheduler.base_lrs, scheduler.lr_lambdas, strict=True
                        )
                    ]
                    for group, rate in zip(optimizer.param_groups, rates, strict=True):
                        group["lr"] = rate
                    scheduler._last_lr = rates


@torch.no_grad()
def draw_samples(
    model: GenerativeModule,
    num_samples: int,
    *,
    seed: int,
    batch_size: int | None = None,
    **options: Any,
) -> tuple[torch.Tensor | list[str], float]:
    """Return ``num_samples`` samples and the seconds they took: images (N, C, H, W) in
    [-1, 1] as float32 on the CPU, or a list of texts.

    The samples are drawn through the shared sampling call in batches of ``batch_size``
    (all at once when None) with one generator seeded by ``seed``, so the same seed gives
    the same samples. This is the one loop behind sample.py, the sample writer and
    evaluation. Raises ConfigError for an option value the family refuses.
    """
    generator = torch.Generator(device=model.device).manual_seed(seed)
    batch_size = batch_size or num_samples
    start = time.perf_counter()
    batches = []
    for first in range(0, num_samples, batch_size):
        count = min(batch_size, num_samples - first)
        try:
            batches.append(model.sample(count, generator=generator, **options))
        except ConfigError:
            raise
        except ValueError as error:  # a family's check of an option's value
            raise ConfigError(str(error)) from None
    seconds = time.perf_counter() - start
    if isinstance(batches[0], torch.Tensor):
        return torch.cat([batch.float().cpu() for batch in batches]), seconds
    return [text for batch in batches for text in batch], seconds


class LanguageModel(GenerativeModule):
    """A text family: ``forward(tokens)`` returns next-token logits (B, T, V) and a state,
    and ``generate(idx, max_new_tokens, …)`` continues token ids (B, T).

    Its loss is the next-token cross-entropy in nats per token, logged with the perplexity
    and the bits per character on validation and test: bits per character compare models
    over any tokenizer (the characters a batch's targets hold come from the tokenizer's
    ``char_counts()``). Sampling (prompt → tokens → generate → text, cut at ``stop``) is
    written once, here.
    """

    modality = "text"
    logged_metrics = ("loss", "perplexity", "bits_per_char")

    def __init__(self, spec, optimizer, scheduler=None, scheduler_interval="epoch"):
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.tokenizer = tokenizer_from_state(self.spec.tokenizer)
        self._char_counts: torch.Tensor | None = None  # (V,): characters each token id starts

    def characters(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return how many characters of text the token ids ``tokens`` hold, a scalar."""
        if self._char_counts is None or self._char_counts.device != tokens.device:
            self._char_counts = torch.tensor(self.tokenizer.char_counts(), device=tokens.device)
        return self._char_counts[tokens].sum()

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch  # (B, T) each; y is x shifted by one token
        logits, _ = self(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())  # nats/token
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        if stage != "train":
            self.log(f"{stage}/perplexity", perplexity(loss), on_epoch=True)
            # Weighted by characters, the epoch's figure is the split's bits over its characters.
            # Lightning averages the summed weights over processes by integer division: a
            # weight that is a multiple of the number of processes keeps that exact.
            num_chars = max(int(self.characters(y)), 1)
            processes = self.trainer.world_size if self._trainer is not None else 1
            bits = bits_per_character(loss * y.numel(), num_chars)
            self.log(
                f"{stage}/bits_per_char", bits, on_epoch=True, batch_size=num_chars * processes
            )
        return loss

    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        stop_ids: list[int] | None = None,
    ) -> torch.Tensor:
        """Return ``idx`` (B, T) followed by up to ``max_new_tokens`` sampled tokens, ending
        early once every row has produced ``stop_ids``."""
        raise NotImplementedError(f"{type(self).__name__} does not implement generate()")

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        prompt: str = "\n",
        max_new_tokens: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | None = None,
    ) -> list[str]:
        """Return ``num_samples`` texts: the prompt, then up to ``max_new_tokens`` tokens.

        Each text ends after the first ``stop`` string its generated part holds, if any.
        Raises ConfigError for an empty prompt or characters the tokenizer cannot encode.
        """
        if not prompt:
            raise ConfigError(
                f"the {self.family} model needs a prompt of at least one token (e.g. prompt='\\n')"
            )
        if max_new_tokens < 0:
            raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        prompt_ids = self.tokenizer.encode(prompt)
        idx = torch.tensor([prompt_ids] * num_samples, dtype=torch.long, device=self.device)
        tokens = self.generate(
            idx,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            stop_ids=self._stop_ids(stop),
        )
        generated = tokens[:, len(prompt_ids) :].tolist()
        return [prompt + truncate_at_stop(self.tokenizer.decode(row), stop) for row in generated]

    def _stop_ids(self, stop: str | None) -> list[int] | None:
        """Return the token ids of ``stop``; None when it is empty or outside the vocabulary."""
        if not stop:
            return None
        try:
            return self.tokenizer.encode(stop)
        except ValueError:  # characters the model cannot produce: the stop can never occur
            return None
