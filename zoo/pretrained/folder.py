"""Writing and reading a saved model's folder: model.safetensors, config.json, README.md.

Reading rebuilds the model through zoo's family table from config.json's plain values and
loads the safetensors weights into it; every way the folder can fail to fit the code (an
unknown family, hyperparameters the family no longer takes, weights missing, unexpected or
of another shape) is one line that names the model and the fix.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors import SafetensorError
from safetensors import torch as safetensors_torch

import zoo
from zoo import checkpoint_format as keys
from zoo.checkpoints import (
    LOCATION_ARGUMENTS,
    check_finite_weights,
    load_checkpoint,
    model_from_checkpoint,
)
from zoo.errors import ZooError
from zoo.models import FAMILIES, GenerativeModule
from zoo.outputs import atomic_write, write_json, write_text
from zoo.pretrained import (
    CARD,
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    NAME,
    WEIGHTS,
    read_config,
)
from zoo.pretrained.card import DATA_LICENCES, render_card

# The only code a config may name: the optimizer and schedule a resumed training builds.
ALLOWED_TARGETS = ("torch.optim.", "zoo.nn.schedules.")
# What describes a model on its card (save_pretrained's ``description``).
DESCRIPTION = (
    "train_command",
    "train_time_s",
    "seed",
    "machine",
    "metrics",
    "headline_metric",
    "check",
    "judge",
    "notes",
    "data_licence",
)


# Saving ------------------------------------------------------------------------------------


def _plain(value: Any, where: str) -> Any:
    """Return ``value`` as JSON values (tuples become lists); raises ZooError naming ``where``
    for anything else (an object, a non-string key, a non-finite number)."""
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ZooError(f"{where} has keys that are not strings: JSON cannot hold it")
        return {key: _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ZooError(f"{where} is {value}: JSON holds finite numbers only")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ZooError(f"{where} is a {type(value).__name__}, not a plain value: JSON cannot hold it")


def _source_model(source: Any) -> tuple[GenerativeModule, bool | None]:
    """Return the model ``source`` describes and whether EMA weights replaced its live ones
    (None when unknown: a module given as it is)."""
    if isinstance(source, GenerativeModule):
        return source, None
    if isinstance(source, (str, Path)):
        checkpoint, where = load_checkpoint(source), str(source)
    elif isinstance(source, dict):
        checkpoint, where = source, "the checkpoint"
    else:
        raise ZooError(
            f"save_pretrained takes a zoo model, a .ckpt path or a checkpoint's contents, "
            f"got a {type(source).__name__}"
        )
    check_finite_weights(checkpoint, where)
    model = model_from_checkpoint(checkpoint, use_ema=True, path=where)
    return model, bool(checkpoint.get(keys.EMA))


def _data_record(model: GenerativeModule) -> dict[str, Any] | None:
    """Return the model's data record without the locations of the machine that trained it
    (where data lie is the user's to say when evaluating, and a URL must never be fetched
    because a config named it)."""
    record = getattr(model, "data_record", None)
    if not record:
        return None
    config = {k: v for k, v in (record.get("config") or {}).items() if k not in LOCATION_ARGUMENTS}
    return _plain({"name": record.get("name"), "config": config}, "the data record")


def _hyper_parameters(model: GenerativeModule) -> dict[str, Any]:
    values = dict(model.hparams)
    if "compile" in values:
        values["compile"] = False  # compiling is the loader's choice, never the file's
    first = values.get("stage_one")
    if isinstance(first, dict):  # where the first stage's checkpoint lay on the training machine
        values["stage_one"] = {k: v for k, v in first.items() if k != "source"}
    values = {
        k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
        for k, v in values.items()
    }
    return _plain(values, "hyper_parameters")


def _tensors(model: GenerativeModule, half: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return the weights to store, each once, and the names that alias a stored one (tied
    weights such as GPT's embedding and output layer share one tensor).

    With ``half`` the floating-point parameters are stored in float16; buffers (running
    statistics, noise schedules) keep their precision.
    """
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in model.state_dict().items():
        identity = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if tensor.numel() and identity in seen:
            aliases[name] = seen[identity]
            continue
        seen[identity] = name
        value = tensor.detach().to("cpu", copy=True).contiguous()
        if half and name in parameters and value.is_floating_point():
            value = value.half()
        stored[name] = value
    return stored, aliases


def save(
    source: Any,
    directory: str | Path,
    *,
    name: str | None,
    half: bool,
    description: dict[str, Any],
) -> Path:
    """Write a model's folder (see zoo.pretrained.save_pretrained); return the folder."""
    unknown = sorted(set(description) - set(DESCRIPTION))
    if unknown:
        raise ZooError(f"unknown description fields {unknown}; known: {list(DESCRIPTION)}")
    if name is not None and not NAME.fullmatch(name):
        raise ZooError(f"a model's name must be a lower-case identifier, got {name!r}")
    model, ema = _source_model(source)
    bad = _first_non_finite(model.state_dict())
    if bad:
        raise ZooError(f"the model holds non-finite weights ({bad}): refusing to save it")
    directory = Path(directory)
    tensors, aliases = _tensors(model, half)
    data = _data_record(model)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "zoo_version": zoo.__version__,
        "family": model.family,
        "modality": model.spec.modality,
        "hyper_parameters": _hyper_parameters(model),
        "data": data,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float16" if half else "float32",
        "ema_weights": ema,
        "tied_weights": aliases,
        "data_licence": DATA_LICENCES.get((data or {}).get("name")),
        **_plain(description, "the description"),
    }
    with atomic_write(directory / WEIGHTS) as file:
        file.write(safetensors_torch.save(tensors, metadata={"format": "pt"}))
    write_json(directory / CONFIG, config)
    write_text(directory / CARD, render_card(config))
    return directory


def describe(directory: str | Path, **fields: Any) -> dict[str, Any]:
    """Return a saved model's config after adding ``fields`` (DESCRIPTION's) to it and
    rewriting its config.json and card; the weights are not touched."""
    unknown = sorted(set(fields) - set(DESCRIPTION))
    if unknown:
        raise ZooError(f"unknown description fields {unknown}; known: {list(DESCRIPTION)}")
    directory = Path(directory)
    config = {**read_config(directory), **_plain(fields, "the description")}
    write_json(directory / CONFIG, config)
    write_text(directory / CARD, render_card(config))
    return config


# Loading -----------------------------------------------------------------------------------


def load_run_checkpoint(path: Path, device: str | torch.device = "cpu") -> GenerativeModule:
    """Return the model of a run's checkpoint in eval mode on ``device``, its EMA weights in."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    check_finite_weights(checkpoint, path)
    return model_from_checkpoint(checkpoint, use_ema=True, path=path).to(device)


def _check_targets(value: Any, where: str) -> None:
    """Raises ZooError when a config names code other than an optimizer or a schedule."""
    if isinstance(value, dict):
        target = value.get("_target_")
        if target is not None and not (
            isinstance(target, str) and target.startswith(ALLOWED_TARGETS)
        ):
            raise ZooError(
                f"{where} names {target!r} as code to build; a saved model may name only "
                f"optimizers and schedules ({', '.join(ALLOWED_TARGETS)}…): refusing to load it"
            )
        for item in value.values():
            _check_targets(item, where)
    elif isinstance(value, list):
        for item in value:
            _check_targets(item, where)


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(map(str, tensor.shape)) or "scalar"


def _listed(names: list[str], limit: int = 3) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _weights_misfit(expected: dict[str, torch.Tensor], saved: dict[str, torch.Tensor]) -> str:
    """Return what differs between the weights a model has and those saved ("" when none)."""
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    reshaped = [
        f"{key} {_shape(saved[key])} → {_shape(expected[key])}"
        for key in sorted(set(expected) & set(saved))
        if expected[key].shape != saved[key].shape
    ]
    parts = []
    if missing:
        parts.append(f"weights missing: {_listed(missing)}")
    if unexpected:
        parts.append(f"weights it no longer has: {_listed(unexpected)}")
    if reshaped:
        parts.append(f"weights of another shape, saved → now: {_listed(reshaped, 2)}")
    return "; ".join(parts)


def _first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """Return the name of the first tensor holding NaN or infinity (None when all are finite),
    testing all of them in one operation first (hundreds of small ones would take a second)."""
    floating = {name: t for name, t in tensors.items() if t.is_floating_point() and t.numel()}
    if not floating or bool(
        torch.isfinite(torch.cat([t.flatten().float() for t in floating.values()])).all()
    ):
        return None
    return next(name for name, t in floating.items() if not bool(torch.isfinite(t).all()))


def load_folder(
    directory: str | Path, device: str | torch.device = "cpu", *, who: str, remedy: str
) -> GenerativeModule:
    """Return the model saved in ``directory`` in eval mode on ``device``.

    ``who`` names the model in messages; ``remedy`` ends the message of a model that no
    longer fits the code (for a shipped model, the command that rebuilds it). Raises
    ZooError (one line) for a missing or damaged file, an unknown family, hyperparameters or
    weights that do not fit the family, a config that names code to run, or non-finite
    weights.
    """
    directory = Path(directory)
    config = read_config(directory)
    family = config.get("family")
    if family not in FAMILIES:
        raise ZooError(
            f"{who} is of the family {family!r}, which this zoo does not have (it has "
            f"{', '.join(sorted(FAMILIES))}): {remedy}"
        )
    hyper_parameters = config.get("hyper_parameters")
    if not isinstance(hyper_parameters, dict):
        raise ZooError(f"{who}: its {CONFIG} has no hyper_parameters: {remedy}")
    _check_targets(hyper_parameters, who)
    try:
        state = safetensors_torch.load_file(directory / WEIGHTS, device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ZooError(f"{who}: {WEIGHTS} cannot be read ({reason}): {remedy}") from None
    for alias, stored in (config.get("tied_weights") or {}).items():
        if stored in state:
            state[alias] = state[stored]

    cls = FAMILIES[family]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(hyper_parameters) - accepted)
    if unknown:
        raise ZooError(
            f"{who} no longer fits zoo's {family} code: the family no longer takes "
            f"{', '.join(unknown)}: {remedy}"
        )
    arguments = {**hyper_parameters, **({"compile": False} if "compile" in accepted else {})}
    try:
        model = cls(**arguments)
    except (ZooError, TypeError, ValueError) as error:
        reason = str(error).splitlines()[0]
        raise ZooError(f"{who} no longer fits zoo's {family} code ({reason}): {remedy}") from None
    misfit = _weights_misfit(model.state_dict(), state)
    if misfit:
        raise ZooError(f"{who} no longer fits zoo's {family} code ({misfit}): {remedy}")
    bad = _first_non_finite(state)
    if bad:
        raise ZooError(f"{who} holds non-finite weights ({bad}): {remedy}")
    model.load_state_dict(state)  # float16 parameters are widened into the model's float32 ones
    model.data_record = config.get("data")
    return model.to(device).eval()


def weights_fingerprint(directory: str | Path) -> str:
    """Return the identity of a saved model's weights and config: 16 hex digits of their sha256."""
    digest = hashlib.sha256()
    for name in (WEIGHTS, CONFIG):
        digest.update((Path(directory) / name).read_bytes())
    return digest.hexdigest()[:16]
