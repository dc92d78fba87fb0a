"""sample(cfg): a checkpoint or a pretrained model in, samples (and optionally scores) out."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from zoo.checkpoints import (
    check_finite_weights,
    datamodule_from_record,
    load_checkpoint,
    model_from_checkpoint,
)
from zoo.data.sources import read_text, strip_bom
from zoo.errors import ZooError
from zoo.evaluation import Evaluation, metrics_on_test_split
from zoo.models import FAMILIES, GenerativeModule
from zoo.models.base import draw_samples
from zoo.outputs import check_writable_dir, save_image_grid, save_tensor, save_texts, write_json
from zoo.pretrained import load, shipped_names
from zoo.runner.build import resolve_device
from zoo.runner.schema import check_sample_config

log = logging.getLogger("zoo")


def sample_options() -> tuple[str, ...]:
    """Return every family option sample.py forwards: the union of the families' own
    ``sample`` keywords (``GenerativeModule.sample_options``), in table order."""
    names = [name for cls in FAMILIES.values() for name in cls.sample_options()]
    return tuple(dict.fromkeys(names))


def _family_options(model: GenerativeModule, cfg: DictConfig) -> dict[str, Any]:
    """Return the family options set in ``cfg``; raise ZooError for one the family does not take."""
    accepted = model.sample_options()
    options = {}
    for name in sample_options():
        value = cfg.get(name)
        if value is None:
            continue
        if name not in accepted:
            raise ZooError(
                f"{name}= is not an option of the {model.family} family; "
                f"it takes: {', '.join(accepted) or 'no options'}"
            )
        options[name] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    if isinstance(options.get("prompt"), str):
        options["prompt"] = strip_bom(options["prompt"])
    if cfg.get("prompt_file"):
        if "prompt" not in accepted:
            raise ZooError(f"prompt_file= is not an option of the {model.family} family")
        prompt_path = Path(cfg.prompt_file)
        if not prompt_path.is_file():
            raise ZooError(f"prompt_file={prompt_path} does not exist")
        options["prompt"] = read_text(prompt_path)  # zoo's one text reader: utf-8-sig
    if "progress" in inspect.signature(model.sample).parameters:
        options["progress"] = True  # long samplers show a progress bar
    return options


def _source(cfg: DictConfig) -> dict[str, str]:
    """Return what to sample from, ``{"checkpoint": path}`` or ``{"pretrained": name}``;
    raises ZooError unless exactly one of ``ckpt_path`` and ``pretrained`` is given."""
    if cfg.get("ckpt_path") and cfg.get("pretrained"):
        raise ZooError(
            "pass either ckpt_path= (a run's checkpoint) or pretrained= (a pretrained model), "
            "not both"
        )
    if cfg.get("pretrained"):
        return {"pretrained": str(cfg.pretrained)}
    if cfg.get("ckpt_path"):
        return {"checkpoint": str(cfg.ckpt_path)}
    names = ", ".join(shipped_names()) or "none in this install"
    raise ZooError(
        "ckpt_path= is required: the .ckpt to sample from (train.py prints its path); or "
        f"pretrained=NAME, a pretrained model ({names})"
    )


def _pretrained_model(name: str, device: torch.device) -> GenerativeModule:
    """Return a pretrained model (a shipped name or a saved folder) on ``device``; raises
    ZooError for a run's checkpoint, which ckpt_path= takes."""
    if Path(name).is_file():
        raise ZooError(f"pretrained={name} is a file: pass a run's checkpoint as ckpt_path={name}")
    return load(name, device=device)


def sample(cfg: DictConfig) -> dict[str, Any]:
    """Write samples from ``cfg.ckpt_path`` or ``cfg.pretrained`` (scored too with
    ``evaluate``); return what was done."""
    cfg = check_sample_config(cfg)
    source = _source(cfg)
    device = resolve_device(cfg.device)
    if "pretrained" in source:
        output_dir = check_writable_dir(cfg.output_dir, "samples")
        model = _pretrained_model(cfg.pretrained, device)
        if cfg.compile:
            model.compile_networks()
    else:
        checkpoint = load_checkpoint(cfg.ckpt_path, map_location=device)
        check_finite_weights(checkpoint, cfg.ckpt_path)
        output_dir = check_writable_dir(cfg.output_dir, "samples")
        model = model_from_checkpoint(
            checkpoint, use_ema=cfg.use_ema, compile=cfg.compile, path=cfg.ckpt_path
        ).to(device)
    options = _family_options(model, cfg)
    evaluation = Evaluation.from_config(cfg.evaluation) if cfg.get("evaluate") else None
    if evaluation is not None and model.generates and model.modality == "image":
        # The judge is found once, before the samples are drawn: a missing one fails at once.
        judge = evaluation.find_judge(model.data_record["name"])
        evaluation = evaluation.replace(classifier_ckpt=str(judge))
    result: dict[str, Any] = {"family": model.family}
    images = None
    if model.generates or not cfg.get("evaluate"):
        drawn, seconds = draw_samples(
            model, cfg.num_samples, seed=cfg.seed, batch_size=cfg.get("batch_size"), **options
        )
        if isinstance(drawn, torch.Tensor):
            images = drawn
            if not bool(torch.isfinite(images).all()):
                bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
                log.warning("%d of %d samples hold NaN or infinite values", bad, len(images))
            written = {
                # an interpolation walks one row of the grid per pair of latents
                "grid": str(
                    save_image_grid(images, output_dir / "samples.png", nrow=cfg.get("interpolate"))
                ),
                "tensor": str(save_tensor(images, output_dir / "samples.pt")),
            }
            unit = "images"
        else:
            written = {"text": str(save_texts(drawn, output_dir / "samples.txt"))}
            unit = "samples"
        result.update(
            num_samples=cfg.num_samples,
            seconds=round(seconds, 3),
            **{f"{unit}_per_second": round(cfg.num_samples / max(seconds, 1e-9), 2)},
            **written,
        )
        if getattr(model, "last_network_calls", None) is not None:  # families that count them
            result["network_calls"] = model.last_network_calls
    if evaluation is not None:
        metrics = _evaluate_model(model, images, cfg, device, evaluation)
        drawn_with = {k: result[k] for k in ("network_calls",) if k in result}
        evaluation_path = write_json(
            output_dir / "evaluation.json", {**source, **drawn_with, **metrics}
        )
        result.update(metrics, evaluation=str(evaluation_path))
    return result


def _evaluate_model(
    model: GenerativeModule,
    images: torch.Tensor | None,
    cfg: DictConfig,
    device: torch.device,
    evaluation: Evaluation,
) -> dict[str, float]:
    """Return the test metrics of a model on its own data set's test split, and, for images,
    the sample-quality metrics of ``images`` judged as ``evaluation`` says."""
    locations = OmegaConf.to_container(cfg.data) if cfg.get("data") else {}
    datamodule = datamodule_from_record(model.data_record, **locations)
    metrics = metrics_on_test_split(model, datamodule, device)
    if images is not None:
        quality = evaluation.judge_images(images, datamodule, model.data_record, device)
        metrics.update({f"test/{name}": value for name, value in quality.items()})
    return metrics
