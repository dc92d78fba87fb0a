"""Reading zoo checkpoints as plain data, and rebuilding what they describe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class

from zoo import checkpoint_format as keys
from zoo.errors import ZooError
from zoo.models import FAMILIES, GenerativeModule


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
        if "Unsupported global" in str(error):
            raise ZooError(
                f"{path} holds Python objects, not plain data; zoo loads only checkpoints of plain "
                "values (weights_only=True), so that loading never runs code"
            ) from None
        raise ZooError(
            f"{path} cannot be read as a PyTorch checkpoint (truncated or corrupt?): {error}. "
            "Use last.ckpt or another checkpoint of the run"
        ) from None
    if not isinstance(checkpoint, dict) or keys.ZOO not in checkpoint:
        raise ZooError(
            f"{path} is not a zoo checkpoint (no 'zoo' entry): pass a .ckpt written by train.py"
        )
    family = checkpoint[keys.ZOO].get("family")
    if family not in FAMILIES:
        raise ZooError(
            f"{path} was written by the family {family!r}, which this zoo does not know; "
            f"known families: {sorted(FAMILIES)}"
        )
    return checkpoint


def model_from_checkpoint(
    checkpoint: dict[str, Any], use_ema: bool = True, compile: bool = False
) -> GenerativeModule:
    """Return the family module rebuilt from a checkpoint alone, in eval mode.

    With ``use_ema`` the averaged weights stored by the EMA callback replace the
    live ones, when the checkpoint has them. ``compile`` compiles the family's networks
    (off by default, whatever the run used: a run compiled on a GPU must still sample on
    a machine without a compiler).
    """
    cls = FAMILIES[checkpoint[keys.ZOO]["family"]]
    hyper_parameters = dict(checkpoint[keys.HYPER_PARAMETERS])
    hyper_parameters["compile"] = False
    model = cls(**hyper_parameters)
    model.load_state_dict(checkpoint[keys.STATE_DICT])
    if use_ema and checkpoint.get(keys.EMA):
        model.load_state_dict(checkpoint[keys.EMA], strict=False)
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
    data = checkpoint[keys.ZOO].get("data")
    if not data:
        raise ZooError("the checkpoint does not record its data set (it predates that record)")
    values = dict(data["config"])
    target = values.pop("_target_", "")
    cls = get_class(target) if target.startswith("zoo.data.") else None
    if not (isinstance(cls, type) and issubclass(cls, L.LightningDataModule)):
        raise ZooError(
            f"the checkpoint names {target!r} as its data module, which is not one of zoo's"
        )
    return cls(**{**values, **overrides})


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
