"""Which checkpoint a run resumes from, checked against the configured run before anything
in its folder changes."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from zoo import checkpoint_format as keys
from zoo.checkpoints import load_checkpoint
from zoo.errors import ConfigError, ZooError
from zoo.models import GenerativeModule

log = logging.getLogger("zoo")

# Hyperparameters that may change between a run and its resumption: they shape no weight.
TRAINING_ONLY = {
    "optimizer",
    "discriminator_optimizer",
    "scheduler",
    "scheduler_interval",
    "compile",
}


def resume_candidates(output_dir: Path) -> list[Path]:
    """Return the checkpoints a run folder holds that a resume may start from, newest first:
    Lightning's ``hpc_ckpt_N.ckpt`` (a cluster's preemption), ``checkpoints/interrupted.ckpt``
    (SIGTERM) and ``checkpoints/last.ckpt`` (the end of the last epoch)."""
    found = [
        *output_dir.glob("hpc_ckpt_*.ckpt"),
        output_dir / "checkpoints" / "interrupted.ckpt",
        output_dir / "checkpoints" / "last.ckpt",
    ]
    found = [path for path in found if path.is_file()]
    return sorted(found, key=lambda path: path.stat().st_mtime, reverse=True)


def checkpoint_to_resume(cfg: DictConfig, output_dir: Path, model: GenerativeModule) -> str | None:
    """Return the checkpoint that fit() resumes from, or None for a fresh start.

    ``ckpt_path`` when given. Otherwise, with ``resume: auto``, the newest readable
    checkpoint already in this run's folder (a requeued cluster job finds its own there);
    unreadable ones (truncated, empty) are skipped with a warning. The chosen checkpoint is
    checked against the configured run (:func:`check_resumable`). Raises ZooError naming
    the file and the fix.
    """
    if cfg.get("ckpt_path"):
        path = Path(cfg.ckpt_path)
        if not path.is_file():
            raise ZooError(
                f"ckpt_path={path} does not exist: pass the path of a .ckpt to resume from"
            )
        check_resumable(load_checkpoint(path), path, model, cfg)
        return str(path)
    resume = cfg.get("resume", "auto")
    if resume not in ("auto", "never"):
        raise ConfigError(f"resume={resume} is not an option: use auto or never")
    if resume == "never":
        return None
    candidates = resume_candidates(output_dir)
    for path in candidates:
        try:
            checkpoint = load_checkpoint(path)
        except ZooError as error:
            log.warning("not resuming from %s, it cannot be read: %s", path, error)
            continue
        check_resumable(checkpoint, path, model, cfg)
        log.info("resuming from %s, already in this run's folder (resume=auto)", path)
        return str(path)
    if candidates:  # a fresh start here would write over this folder's history
        raise ZooError(
            f"no readable checkpoint to resume from in {output_dir} (unreadable: "
            f"{', '.join(str(path) for path in candidates)}): pass ckpt_path= one that reads, "
            "or start afresh in another folder (or with resume=never, which writes over this "
            "folder's metrics)"
        )
    return None


def _differences(stored: dict[str, Any], configured: dict[str, Any]) -> list[str]:
    names = sorted((set(stored) | set(configured)) - TRAINING_ONLY - {"spec"})
    return [
        f"{name}={stored.get(name)!r} in the checkpoint, {configured.get(name)!r} configured"
        for name in names
        if stored.get(name) != configured.get(name)
    ]


def check_resumable(
    checkpoint: dict[str, Any], path: Path, model: GenerativeModule, cfg: DictConfig
) -> None:
    """Raises ZooError unless ``checkpoint`` can continue the configured run: the same family
    and data set, weights of the configured shapes, and training left to do."""
    record = checkpoint[keys.ZOO]
    if record["family"] != model.family:
        raise ZooError(
            f"{path} holds a {record['family']} model, but the run configures a {model.family} "
            f"one: resume with the run's own model (model={record['family']} and its "
            "experiment), or start afresh (resume=never, or another run folder)"
        )
    data_name = (record.get("data") or {}).get("name")
    if data_name and data_name != cfg.get("data_name"):
        raise ZooError(
            f"{path} was trained on {data_name!r}, but the run configures {cfg.get('data_name')!r}"
            f": resume with data={data_name}, or start afresh (resume=never)"
        )
    stored_weights = checkpoint[keys.STATE_DICT]
    configured_weights = model.state_dict()
    shapes_differ = set(stored_weights) != set(configured_weights) or any(
        tuple(stored_weights[name].shape) != tuple(tensor.shape)
        for name, tensor in configured_weights.items()
    )
    if shapes_differ:
        changed = _differences(dict(checkpoint[keys.HYPER_PARAMETERS]), dict(model.hparams))
        what = "; ".join(changed) or "the data's spec (image shape, classes or vocabulary)"
        raise ZooError(
            f"{path} holds a {model.family} model of other sizes than the configured one: "
            f"{what}. Resume with the checkpoint's settings, or start afresh (resume=never, "
            "or another run folder)"
        )
    processed = (
        checkpoint.get("loops", {})
        .get("fit_loop", {})
        .get("epoch_progress", {})
        .get("current", {})
        .get("processed", 0)
    )
    trainer = cfg.trainer
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if max_epochs not in (None, -1) and processed >= max_epochs:
        raise ZooError(
            f"{path} has already trained {processed} epochs, and trainer.max_epochs={max_epochs}: "
            f"nothing is left to train. Raise it to continue (e.g. trainer.max_epochs="
            f"{processed + max(1, processed // 2)})"
        )
    step = checkpoint.get("global_step", 0)
    if max_steps not in (None, -1) and step >= max_steps:
        raise ZooError(
            f"{path} has already taken {step} steps, and trainer.max_steps={max_steps}: nothing "
            f"is left to train. Raise it to continue (e.g. trainer.max_steps={step + step // 2})"
        )
