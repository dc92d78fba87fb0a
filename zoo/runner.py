"""train(cfg) and sample(cfg): the logic behind train.py and sample.py, usable without a CLI."""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from zoo.callbacks.pruning import OptunaPruning
from zoo.callbacks.samples import save_image_grid, save_texts
from zoo.checkpoints import datamodule_from_checkpoint, load_checkpoint, model_from_checkpoint
from zoo.errors import ZooError
from zoo.evaluation import JudgeMissingError, evaluate_model, judge_images
from zoo.models import GenerativeModule
from zoo.resolvers import register_resolvers

log = logging.getLogger("zoo")


register_resolvers()

# Lightning advertises a cloud logger on every run and warns about its own use of a
# deprecated torch API; neither is actionable for a user of this zoo.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def write_json(path: str | Path, values: dict[str, Any]) -> Path:
    """Return ``path`` after writing ``values`` there as JSON, atomically (temp, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(values, indent=2, sort_keys=False) + "\n")
    os.replace(temporary, path)
    return path


# Building from config -------------------------------------------------------------


def build_model(model_cfg: DictConfig | dict, spec: dict[str, Any]) -> GenerativeModule:
    """Return the family module named by ``model_cfg._target_``, built from the data spec.

    Every argument is passed as a plain value (partials stay dicts), so the
    module's saved hyperparameters are data and its checkpoints load with
    ``weights_only=True``.
    """
    values = (
        OmegaConf.to_container(model_cfg, resolve=True)
        if isinstance(model_cfg, DictConfig)
        else dict(model_cfg)
    )
    cls = get_class(values.pop("_target_"))
    if not (isinstance(cls, type) and issubclass(cls, GenerativeModule)):
        raise ZooError(
            f"model._target_ must name a zoo family (one of zoo.models.FAMILIES), got {cls}"
        )
    return cls(spec=spec, **values)


def _instantiate(config: DictConfig, **kwargs) -> Any:
    """Return ``hydra.utils.instantiate(config)``, letting a ZooError through unwrapped.

    Hydra wraps what a constructor raises; a user's mistake should read as its own
    one-line message, not as a traceback of the instantiation machinery.
    """
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, ZooError):
            raise error.__cause__ from None
        raise


def _instantiate_group(group: DictConfig | None) -> list[Any]:
    """Return the objects of a group of ``name: {_target_: ...}`` entries, skipping nulls."""
    if not group:
        return []
    return [_instantiate(e) for e in group.values() if e is not None and "_target_" in e]


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in sorted(metrics.items())
        if name.startswith(prefix) and not name.endswith("_step")
    }


# train ---------------------------------------------------------------------------


def train(cfg: DictConfig) -> float | None:
    """Fit and test the configured model; return the value of ``cfg.monitor`` for sweeps."""
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    ckpt_path = checkpoint_to_resume(cfg, output_dir)

    datamodule: L.LightningDataModule = _instantiate(cfg.data)
    spec = datamodule.spec.to_dict()
    model = build_model(cfg.model, spec)
    model.data_record = {
        "name": cfg.data_name,
        "config": OmegaConf.to_container(cfg.data, resolve=True),
    }
    callbacks = _instantiate_group(cfg.get("callbacks"))
    trial_number = OmegaConf.select(cfg, "optuna.trial_number")
    if trial_number is not None:  # a trial of the zoo_optuna sweeper: report to its study
        pruning = OptunaPruning.for_sweep_trial(trial_number, cfg.monitor)
        callbacks += [pruning] if pruning else []
    loggers = [
        _instantiate(entry, **_wandb_resume(entry, output_dir))
        for entry in (cfg.get("logger") or {}).values()
        if entry is not None and "_target_" in entry
    ]
    trainer_cfg = cfg.trainer
    if not model.automatic_optimization and trainer_cfg.get("strategy") in ("ddp", "ddp_spawn"):
        # Networks stepped in turn (a GAN's discriminator, then its generator) leave the other
        # network without gradients in each backward pass; DDP must be told to expect that.
        strategy = f"{trainer_cfg.strategy}_find_unused_parameters_true"
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"strategy": strategy})
    trainer: L.Trainer = _instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)
    _refuse_ddp_relaunch_in_local_sweep(trainer)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    num_parameters = sum(p.numel() for p in model.parameters())
    for logger in trainer.loggers:
        logger.log_hyperparams({**resolved, "num_parameters": num_parameters})

    start = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    train_time = time.perf_counter() - start
    val_metrics = _scalars(trainer.callback_metrics, "val/")

    checkpoint = (
        trainer.checkpoint_callback
        if isinstance(trainer.checkpoint_callback, ModelCheckpoint)
        else None
    )
    best_path = checkpoint.best_model_path if checkpoint else ""
    test_metrics: dict[str, float] = {}
    if cfg.get("test"):
        trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, weights_only=True)
        test_metrics = _scalars(trainer.callback_metrics, "test/")
    evaluation = cfg.get("evaluation")
    last_path = (
        str(Path(checkpoint.dirpath) / "last.ckpt") if checkpoint and checkpoint.save_last else ""
    )
    if evaluation and evaluation.enabled and trainer.is_global_zero and (best_path or last_path):
        sample_quality = _evaluate_after_training(
            best_path or last_path,
            datamodule,
            OmegaConf.to_container(evaluation, resolve=True),
            trainer,
        )
        test_metrics.update(sample_quality)

    results = {
        "name": cfg.name,
        "family": model.family,
        "data": cfg.data_name,
        "seed": cfg.get("seed"),
        "monitor": cfg.monitor,
        "best_score": float(checkpoint.best_model_score)
        if checkpoint and checkpoint.best_model_score is not None
        else None,
        "val": val_metrics,
        "test": test_metrics,
        "checkpoints": {"last": last_path or None, "best": best_path or None},
        "num_parameters": num_parameters,
        "global_step": trainer.global_step,
        "epochs": trainer.current_epoch,
        "train_time_s": round(train_time, 2),
        "output_dir": str(output_dir),
    }
    if trainer.is_global_zero:
        write_json(output_dir / "results.json", results)
        _report(results, output_dir, callbacks)

    value = val_metrics.get(cfg.monitor, results["best_score"])
    return value if value is None or math.isfinite(value) else float("nan")


def checkpoint_to_resume(cfg: DictConfig, output_dir: Path) -> str | None:
    """Return the checkpoint that fit() resumes from, or None for a fresh start.

    ``ckpt_path`` when given. Otherwise, with ``resume: auto``, the newest checkpoint
    already in this run's folder: a cluster job that was preempted or timed out is
    requeued into the same folder, where it finds Lightning's ``hpc_ckpt_N.ckpt`` (saved
    when SLURM signalled the end) or ``checkpoints/last.ckpt``.
    """
    if cfg.get("ckpt_path"):
        if not Path(cfg.ckpt_path).is_file():
            raise ZooError(
                f"ckpt_path={cfg.ckpt_path} does not exist: pass the path of a .ckpt to resume from"
            )
        return str(cfg.ckpt_path)
    resume = cfg.get("resume", "auto")
    if resume not in ("auto", "never"):
        raise ZooError(f"resume={resume} is not an option: use auto or never")
    if resume == "never":
        return None
    found = [*output_dir.glob("hpc_ckpt_*.ckpt"), output_dir / "checkpoints" / "last.ckpt"]
    found = [path for path in found if path.is_file()]
    if not found:
        return None
    newest = max(found, key=lambda path: path.stat().st_mtime)
    log.info("resuming from %s, already in this run's folder (resume=auto)", newest)
    return str(newest)


def _wandb_resume(logger: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Return ``id=`` for a wandb logger whose config sets none: an id kept in
    ``<run>/wandb_id``, so that a requeued or resumed job logs to the same wandb run.

    Rank 0 writes the file; other ranks (whose loggers stay silent) only read it.
    """
    if not str(logger.get("_target_", "")).endswith("WandbLogger") or logger.get("id"):
        return {}
    from lightning.pytorch.utilities import rank_zero_only

    path = output_dir / "wandb_id"
    if not path.is_file() and rank_zero_only.rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(4) + "\n")
    return {"id": path.read_text().strip()} if path.is_file() else {}


def _refuse_ddp_relaunch_in_local_sweep(trainer: L.Trainer) -> None:
    """Raises ZooError where DDP would re-launch train.py from a job of a local sweep.

    Lightning starts the extra ranks by running the script again with the parent's
    command line (sys.argv); in a job of ``-m`` that command is the whole sweep. On a
    cluster the scheduler starts every rank itself, and ddp_spawn forks instead.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.strategies.launchers.subprocess_script import (
        _SubprocessScriptLauncher,
    )

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    launcher = trainer.strategy.launcher
    if (
        isinstance(launcher, _SubprocessScriptLauncher)
        and trainer.num_devices > 1
        and not launcher.cluster_environment.creates_processes_externally
    ):
        raise ZooError(
            "trainer=ddp cannot run inside a local sweep: Lightning would start its extra "
            "processes with the sweep's own command line. Sweep on a cluster "
            "(hydra/launcher=slurm, one task per device), or use trainer.strategy=ddp_spawn"
        )


def _evaluate_after_training(
    checkpoint_path: str,
    datamodule: L.LightningDataModule,
    evaluation: dict[str, Any],
    trainer: L.Trainer,
) -> dict[str, float]:
    """Return the sample-quality metrics (``test/fid``, …) of a checkpoint, logged to the loggers.

    The model is rebuilt from the checkpoint exactly as sample.py does (EMA
    weights when kept), so the figures describe what a user samples. Image
    families only; without a judge, logs how to train one and returns nothing.
    """
    checkpoint = load_checkpoint(checkpoint_path, map_location=trainer.strategy.root_device)
    model = model_from_checkpoint(checkpoint).to(trainer.strategy.root_device)
    if model.spec.modality != "image" or not model.generates:
        return {}
    try:
        metrics = evaluate_model(model, datamodule, model.data_record, evaluation)
    except JudgeMissingError as error:
        log.warning("sample-quality metrics skipped: %s", error)
        return {}
    metrics = {f"test/{name}": float(value) for name, value in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
        logger.save()
    return metrics


def _report(results: dict[str, Any], output_dir: Path, callbacks: list[Any]) -> None:
    """Logs where every output of the run is."""
    lines = [f"run finished in {results['train_time_s']:.0f} s: {output_dir}"]
    for kind in ("last", "best"):
        if results["checkpoints"][kind]:
            lines.append(f"  {kind + ' checkpoint':<16}{results['checkpoints'][kind]}")
    for name, path in [
        ("samples", output_dir / "samples"),
        ("metrics CSV", output_dir / "csv" / "metrics.csv"),
        ("curves", output_dir / "curves.png"),
        ("config", output_dir / ".hydra" / "config.yaml"),
        ("results", output_dir / "results.json"),
    ]:
        if path.exists():
            lines.append(f"  {name:<16}{path}")
    for stage in ("val", "test"):
        if results[stage]:
            figures = ", ".join(f"{k}={v:.4g}" for k, v in results[stage].items())
            lines.append(f"  {stage + ' metrics':<16}{figures}")
    log.info("\n".join(lines))


# sample --------------------------------------------------------------------------

# Options that sample.py forwards to a family's sample() call when they are set.
SAMPLE_OPTIONS = (
    "labels",
    "prompt",
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "stop",
    "sampler",
    "steps",
    "eta",
    "guidance",
    "clip",
    "fast",
    "truncation",
    "interpolate",
)


def resolve_device(name: str) -> torch.device:
    """Return the torch device for ``auto`` (CUDA when present, else CPU) or an explicit name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(
            f"device={name} was asked for, but CUDA is not available here: use device=cpu"
        )
    return device


def _sample_options(model: GenerativeModule, cfg: DictConfig) -> dict[str, Any]:
    """Return the family options set in ``cfg``; raise ZooError for one the family does not take."""
    accepted = inspect.signature(model.sample).parameters
    options = {}
    for name in SAMPLE_OPTIONS:
        value = cfg.get(name)
        if value is None:
            continue
        if name not in accepted:
            takes = [n for n in accepted if n in SAMPLE_OPTIONS] or ["no options"]
            raise ZooError(
                f"{name}= is not an option of the {model.family} family; "
                f"it takes: {', '.join(takes)}"
            )
        options[name] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    if cfg.get("prompt_file"):
        if "prompt" not in accepted:
            raise ZooError(f"prompt_file= is not an option of the {model.family} family")
        prompt_path = Path(cfg.prompt_file)
        if not prompt_path.is_file():
            raise ZooError(f"prompt_file={prompt_path} does not exist")
        options["prompt"] = prompt_path.read_text(encoding="utf-8")
    return options


def sample(cfg: DictConfig) -> dict[str, Any]:
    """Write samples from ``cfg.ckpt_path`` (scored too with ``evaluate``); return what was done."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ZooError(
            "ckpt_path= is required: the .ckpt to sample from (train.py prints its path)"
        )
    if cfg.num_samples < 1:
        raise ZooError(f"num_samples must be at least 1, got {cfg.num_samples}")
    device = resolve_device(cfg.device)
    checkpoint = load_checkpoint(cfg.ckpt_path, map_location=device)
    model = model_from_checkpoint(checkpoint, use_ema=cfg.use_ema, compile=cfg.compile).to(device)
    output_dir = Path(cfg.output_dir)
    result: dict[str, Any] = {"family": model.family}
    images = None
    if model.generates or not cfg.get("evaluate"):
        drawn, elapsed = _draw(model, cfg, device)
        output_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(drawn[0], torch.Tensor):
            images = torch.cat(drawn).float().cpu()
            torch.save(images, output_dir / "samples.pt")
            written = {
                # an interpolation walks one row of the grid per pair of latents
                "grid": str(
                    save_image_grid(images, output_dir / "samples.png", nrow=cfg.get("interpolate"))
                ),
                "tensor": str(output_dir / "samples.pt"),
            }
            unit = "images"
        else:
            texts = [text for batch in drawn for text in batch]
            written = {"text": str(save_texts(texts, output_dir / "samples.txt"))}
            unit = "samples"
        result.update(
            num_samples=cfg.num_samples,
            seconds=round(elapsed, 3),
            **{f"{unit}_per_second": round(cfg.num_samples / max(elapsed, 1e-9), 2)},
            **written,
        )
    if cfg.get("evaluate"):
        metrics = _evaluate_checkpoint(model, checkpoint, images, cfg, device)
        evaluation_path = write_json(
            output_dir / "evaluation.json", {"checkpoint": str(cfg.ckpt_path), **metrics}
        )
        result.update(metrics, evaluation=str(evaluation_path))
    return result


def _draw(
    model: GenerativeModule, cfg: DictConfig, device: torch.device
) -> tuple[list[Any], float]:
    """Return the samples drawn in batches with the seeded generator, and the seconds it took."""
    options = _sample_options(model, cfg)
    if "progress" in inspect.signature(model.sample).parameters:
        options["progress"] = True  # long samplers show a progress bar
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    batch_size = cfg.get("batch_size") or cfg.num_samples
    start = time.perf_counter()
    batches = []
    for first in range(0, cfg.num_samples, batch_size):
        count = min(batch_size, cfg.num_samples - first)
        try:
            batches.append(model.sample(count, generator=generator, **options))
        except ValueError as error:  # a family's check of an option's value
            raise ZooError(str(error)) from None
    return batches, time.perf_counter() - start


def _evaluate_checkpoint(
    model: GenerativeModule,
    checkpoint: dict[str, Any],
    images: torch.Tensor | None,
    cfg: DictConfig,
    device: torch.device,
) -> dict[str, float]:
    """Return the test metrics of a checkpoint on its own data set's test split, and, for images,
    the sample-quality metrics of ``images``."""
    datamodule = datamodule_from_checkpoint(checkpoint)
    tester = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    metrics: dict[str, float] = {}
    for row in tester.test(model, datamodule=datamodule, verbose=False):
        metrics.update({name: float(value) for name, value in row.items()})
    if images is not None:
        evaluation = OmegaConf.to_container(cfg.evaluation, resolve=True)
        quality = judge_images(images, datamodule, model.data_record, evaluation, device)
        metrics.update({f"test/{name}": value for name, value in quality.items()})
    return metrics
