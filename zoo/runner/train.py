"""train(cfg): compose a run from its config, fit, test, evaluate, and record where it all went."""

from __future__ import annotations

import logging
import math
import secrets
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from zoo.callbacks.pruning import OptunaPruning
from zoo.checkpoints import load_checkpoint, model_from_checkpoint
from zoo.data.encoded import EncodedDataModule
from zoo.errors import ConfigError, RunInterrupted, ZooError
from zoo.evaluation import Evaluation, JudgeMissingError
from zoo.outputs import check_writable_dir, write_json, write_text
from zoo.runner.build import build_model, instantiate_group, instantiate_or_explain
from zoo.runner.resume import checkpoint_to_resume
from zoo.runner.schema import check_train_config

log = logging.getLogger("zoo")


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    return {
        name: float(value)
        for name, value in sorted(metrics.items())
        if name.startswith(prefix) and not name.endswith("_step")
    }


def train(cfg: DictConfig) -> float | None:
    """Fit and test the configured model; return the value of ``cfg.monitor`` for sweeps.

    Everything that can be known wrong before training is checked first (the run folder
    is writable, the checkpoint to resume from continues this run), and the run's config
    is written only then, so a refused run changes nothing in its folder. results.json is
    written before the end-of-training evaluation, whose failure is recorded in it.
    Raises ZooError with one line naming the cause and the fix; RunInterrupted after a
    SIGTERM, once the interrupted checkpoint is saved.
    """
    refuse_missing_values(cfg)
    check_train_config(cfg)
    output_dir = check_writable_dir(cfg.paths.output_dir, "the run")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule: L.LightningDataModule = instantiate_or_explain(cfg.data)
    spec = datamodule.spec.to_dict()
    model = build_model(cfg.model, spec)
    model.data_record = {
        "name": cfg.data_name,
        "config": OmegaConf.to_container(cfg.data, resolve=True),
    }
    ckpt_path = checkpoint_to_resume(cfg, output_dir, model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    check_monitor(cfg.get("monitor"), model, callbacks)
    write_run_config(cfg, output_dir)

    trial_number = OmegaConf.select(cfg, "optuna.trial_number")
    if trial_number is not None:  # a trial of the zoo_optuna sweeper: report to its study
        pruning = OptunaPruning.for_sweep_trial(trial_number, cfg.monitor)
        callbacks += [pruning] if pruning else []
    loggers = [
        instantiate_or_explain(entry, **_wandb_resume(entry, output_dir))
        for entry in (cfg.get("logger") or {}).values()
        if entry is not None and "_target_" in entry
    ]
    trainer_cfg = cfg.trainer
    if not model.automatic_optimization and trainer_cfg.get("strategy") in ("ddp", "ddp_spawn"):
        # Networks stepped in turn (a GAN's discriminator, then its generator) leave the other
        # network without gradients in each backward pass; DDP must be told to expect that.
        strategy = f"{trainer_cfg.strategy}_find_unused_parameters_true"
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"strategy": strategy})
    trainer: L.Trainer = instantiate_or_explain(
        trainer_cfg, callbacks=callbacks, logger=loggers or False
    )
    _refuse_ddp_relaunch_in_local_sweep(trainer)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    num_parameters = sum(p.numel() for p in model.parameters())
    for logger in trainer.loggers:
        logger.log_hyperparams({**resolved, "num_parameters": num_parameters})

    # A second stage trains on the data encoded once by its frozen first stage.
    fitted = EncodedDataModule(datamodule, model) if model.two_stage else datamodule
    start = time.perf_counter()
    try:
        trainer.fit(model, datamodule=fitted, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        raise RunInterrupted(_interrupted_message(trainer, cfg)) from None
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
        trainer.test(model, datamodule=fitted, ckpt_path=best_path or None, weights_only=True)
        test_metrics = _scalars(trainer.callback_metrics, "test/")
    last = Path(checkpoint.dirpath) / "last.ckpt" if checkpoint else None
    last_path = str(last) if last is not None and last.is_file() else ""

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
    evaluation = Evaluation.from_config(cfg.get("evaluation"))
    if trainer.is_global_zero:
        write_json(output_dir / "results.json", results)  # before evaluation, which may fail
        if evaluation.enabled and (best_path or last_path):
            try:
                test_metrics.update(
                    _evaluate_after_training(
                        best_path or last_path, datamodule, evaluation, trainer
                    )
                )
            except Exception as error:  # the run's record stays; the failure is recorded in it
                log.error(
                    "end-of-training evaluation failed: %s",
                    error,
                    exc_info=not isinstance(error, ZooError),
                )
                results["evaluation_error"] = f"{type(error).__name__}: {error}"
            write_json(output_dir / "results.json", results)
        _report(results, output_dir)

    value = val_metrics.get(cfg.monitor, results["best_score"])
    return value if value is None or math.isfinite(value) else float("nan")


def refuse_missing_values(cfg: DictConfig) -> None:
    """Raises ConfigError naming the first mandatory value (``???``) the config leaves unset,
    with what its config file says it takes: ``data=text_file needs data.path=<…>``."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if not missing:
        return
    key = missing[0]
    group, _, leaf = key.partition(".")
    choice = _choice(group)
    hint = _comment_of(group, choice, leaf) or "a value"
    asked = f"{group}={choice} needs" if choice else "the config needs"
    raise ConfigError(f"{asked} {key}=<{hint}>")


def _choice(group: str) -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return HydraConfig.get().runtime.choices.get(group)


def _comment_of(group: str, choice: str | None, leaf: str) -> str | None:
    """Return the comment beside ``leaf: ???`` in conf/<group>/<choice>.yaml, if it has one."""
    if not choice or "." in leaf:
        return None
    path = Path(__file__).resolve().parents[2] / "conf" / group / f"{choice}.yaml"
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(f"{leaf}:") and "#" in line:
            return line.split("#", 1)[1].strip()
    return None


def check_monitor(monitor: str | None, model, callbacks: list) -> None:
    """Raises ConfigError, before training, when ``monitor`` names a metric that the family
    and the callbacks never log; the message lists those they do."""
    if monitor is None:
        return
    logged = {f"val/{name}" for name in model.logged_metrics} | {"train/loss"}
    for callback in callbacks:
        logged |= set(getattr(callback, "logged_metrics", ()))
    if monitor not in logged:
        raise ConfigError(
            f"monitor={monitor} is never logged by a {model.family} run; it logs "
            f"{', '.join(sorted(logged))}: pass one of them (or monitor=null to keep the last "
            "checkpoint only)"
        )


def write_run_config(cfg: DictConfig, output_dir: Path) -> None:
    """Writes the run's composed config (``.hydra/config.yaml``), Hydra's own config and the
    command-line overrides, as Hydra would, but only once the run is known to start: a run
    refused before training leaves an earlier run's config in its folder as it was."""
    from hydra.core.hydra_config import HydraConfig

    folder = output_dir / ".hydra"
    write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        write_text(folder / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
        write_text(folder / "overrides.yaml", OmegaConf.to_yaml(list(hydra_cfg.overrides.task)))


def _interrupted_message(trainer: L.Trainer, cfg: DictConfig) -> str:
    """Return the line that says where an interrupted run's checkpoint is and how to resume."""
    saved = getattr(trainer.checkpoint_callback, "interrupted_path", None)
    if not saved:
        return (
            f"interrupted by SIGTERM at step {trainer.global_step} before a checkpoint could be "
            "saved; the run's earlier checkpoints are in its folder"
        )
    return (
        f"interrupted by SIGTERM at step {trainer.global_step}; saved {saved}. Resume with "
        f"`python train.py <the same overrides> ckpt_path={saved}`, or run again in the same "
        f"folder (hydra.run.dir={cfg.paths.output_dir}, resume=auto)"
    )


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
    evaluation: Evaluation,
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
        metrics = evaluation.evaluate_model(model, datamodule)
    except JudgeMissingError as error:
        log.warning("sample-quality metrics skipped: %s", error)
        return {}
    metrics = {f"test/{name}": float(value) for name, value in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)
        logger.save()
    return metrics


def _report(results: dict[str, Any], output_dir: Path) -> None:
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
