"""Reading zoo checkpoints as plain data, and rebuilding what they describe."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import lightning as L
import torch

import zoo.data
from zoo import checkpoint_format as keys
from zoo.errors import ZooError
from zoo.models import FAMILIES, GenerativeModule

# Data-module arguments that say where data live: evaluation takes them from the user.
LOCATION_ARGUMENTS = ("root", "path", "cache_dir", "tokens_dir", "download")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Return a zoo checkpoint's contents, loaded as plain data (never running code).

    Raises ZooError naming the cause when the file is missing, unreadable, or
    not a checkpoint written by zoo's train.py.
    """
    path = Path(path)
    if not path.is_file():
        raise ZooError(
            f"checkpoint not found: {path}. Pass ckpt_path= a .ckpt written by train.py "
            "(it prints them; e.g. outputs/<run>/checkpoints/last.ckpt)"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for truncated or foreign files
        if "global" in str(error).lower() and "weights_only" in str(error):
            raise ZooError(
                f"{path} holds pickled Python objects (code), not plain data; zoo loads only "
                "checkpoints of plain values, so that loading never runs code. Use a checkpoint "
                "written by zoo's train.py"
            ) from None
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ZooError(
            f"{path} cannot be read as a PyTorch checkpoint (truncated or corrupt?): {reason}. "
            "Use last.ckpt or another checkpoint of the run"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get(keys.ZOO), dict):
        raise ZooError(
            f"{path} is not a zoo checkpoint (no 'zoo' entry): pass a .ckpt written by train.py"
        )
    for key in (keys.HYPER_PARAMETERS, keys.STATE_DICT):
        if not isinstance(checkpoint.get(key), dict):
            raise ZooError(
                f"{path} has no {key!r}: it cannot rebuild its model. Pass a .ckpt written by "
                "train.py"
            )
    family = checkpoint[keys.ZOO].get("family")
    if family not in FAMILIES:
        raise ZooError(
            f"{path} was written by the family {family!r}, which this zoo does not know; "
            f"known families: {sorted(FAMILIES)}"
        )
    return checkpoint


def model_from_checkpoint(
    checkpoint: dict[str, Any],
    use_ema: bool = True,
    compile: bool = False,
    path: str | Path = "the checkpoint",
) -> GenerativeModule:
    """Return the family module rebuilt from a checkpoint alone, in eval mode.

    With ``use_ema`` the averaged weights stored by the EMA callback replace the
    live ones, when the checkpoint has them. ``compile`` compiles the family's networks
    (off by default, whatever the run used: a run compiled on a GPU must still sample on
    a machine without a compiler). Raises ZooError naming ``path`` when the hyperparameters
    or weights do not fit the family (a file edited, or written by another zoo version).
    """
    family = checkpoint[keys.ZOO]["family"]
    cls = FAMILIES[family]
    hyper_parameters = dict(checkpoint[keys.HYPER_PARAMETERS])
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(hyper_parameters) - accepted)
    if unknown:
        raise ZooError(
            f"{path} is a {family} checkpoint whose hyperparameters {unknown} the {family} "
            "family does not take (written by another zoo version, or edited?): retrain it, "
            "or sample with the zoo version that wrote it"
        )
    hyper_parameters["compile"] = False
    try:
        model = cls(**hyper_parameters)
    except ZooError as error:
        raise ZooError(f"{path} cannot rebuild its {family} model: {error}") from None
    except TypeError as error:
        raise ZooError(f"{path} cannot rebuild its {family} model: {error}") from None
    try:
        model.load_state_dict(checkpoint[keys.STATE_DICT])
        if use_ema and checkpoint.get(keys.EMA):
            model.load_state_dict(checkpoint[keys.EMA], strict=False)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:300]
        raise ZooError(
            f"{path}: its weights do not fit the {family} model its hyperparameters describe "
            f"({detail}); the file was edited or is damaged: use another checkpoint of the run"
        ) from None
    if compile:
        model.compile_networks()
    model.data_record = checkpoint[keys.ZOO].get("data")
    return model.eval()


def datamodule_from_checkpoint(
    checkpoint: dict[str, Any], **overrides: Any
) -> L.LightningDataModule:
    """Return the data module the checkpoint's model was trained on, rebuilt from its stored config.

    Only zoo's own data modules are rebuilt: a checkpoint never names code to run.
    """
    return datamodule_from_record(checkpoint[keys.ZOO].get("data"), **overrides)


def datamodule_from_record(data: dict[str, Any] | None, **overrides: Any) -> L.LightningDataModule:
    """Return the data module a data record (``{"name", "config"}``, as checkpoints and saved
    models hold it) describes. Only zoo's own data modules are rebuilt, and where data lie
    comes from ``overrides`` (the user), never from the record."""
    if not data:
        raise ZooError("the checkpoint does not record its data set (it predates that record)")
    values = dict(data["config"])
    target = values.pop("_target_", "")
    modules = {f"zoo.data.{name}": getattr(zoo.data, name) for name in zoo.data.__all__}
    cls = modules.get(target)
    if not (isinstance(cls, type) and issubclass(cls, L.LightningDataModule)):
        raise ZooError(
            f"the checkpoint names {target!r} as its data module, which is not one of zoo's"
        )
    # Where data live (and whether to download them) comes from the user, never from a file.
    for name in LOCATION_ARGUMENTS:
        values.pop(name, None)
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return cls(**{**values, **given})
    except TypeError as error:
        missing = [name for name in LOCATION_ARGUMENTS if f"'{name}'" in str(error)]
        where = f"data.{missing[0]}=<its location>" if missing else "the data.* it needs"
        raise ZooError(
            f"the checkpoint's data set ({data.get('name')}) has no location zoo may use: "
            f"pass {where} to evaluate on it"
        ) from None


def check_finite_weights(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Raises ZooError when a checkpoint's weights (live or averaged) hold NaN or infinity,
    naming the first such tensor: such a model only draws NaN."""
    for key in (keys.STATE_DICT, keys.EMA):
        for name, tensor in (checkpoint.get(key) or {}).items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise ZooError(
                    f"{path} holds non-finite weights ({name} under {key!r}): the run diverged "
                    "before it was saved. Sample from an earlier checkpoint of the run"
                )
