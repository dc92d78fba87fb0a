"""Building what a config describes: the family module, Hydra objects, the device."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from zoo import checkpoint_format as keys
from zoo.checkpoints import load_checkpoint, model_from_checkpoint
from zoo.errors import ZooError
from zoo.models import GenerativeModule
from zoo.resolvers import register_resolvers

register_resolvers()

# Lightning advertises a cloud logger on every run and warns about its own use of a
# deprecated torch API; neither is actionable for a user of this zoo.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


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
    first = values.get("stage_one")
    if not (cls.stage_one_families and isinstance(first, str)):
        return cls(spec=spec, **values)
    checkpoint = load_checkpoint(first)
    stage_one = model_from_checkpoint(checkpoint, path=first)  # its EMA weights when kept
    values["stage_one"] = {
        "family": stage_one.family,
        "hyper_parameters": dict(checkpoint[keys.HYPER_PARAMETERS]),
        "sha256": hashlib.sha256(Path(first).read_bytes()).hexdigest(),
        "source": str(first),
    }
    model = cls(spec=spec, **values)
    model.stage_one.load_state_dict(stage_one.state_dict())
    return model


def instantiate_or_explain(config: DictConfig, **kwargs) -> Any:
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


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Return the objects of a group of ``name: {_target_: ...}`` entries, skipping nulls."""
    if not group:
        return []
    return [
        instantiate_or_explain(entry)
        for entry in group.values()
        if entry is not None and "_target_" in entry
    ]


def resolve_device(name: str) -> torch.device:
    """Return the torch device for ``auto`` (CUDA when present, else CPU) or an explicit name.

    Raises ZooError for a CUDA device on a machine without CUDA.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ZooError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ZooError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ZooError(
            f"device={name} was asked for, but CUDA is not available here: use device=cpu"
        )
    return device
