"""What train.py's and sample.py's configs may hold: types checked by OmegaConf's structured
configs, ranges checked here, one line for every value that cannot work.

sample.py's family options (``labels``, ``steps``, ``temperature``, …) are not listed here:
their names and types are read off the families' ``sample`` signatures, so a family that
adds an option adds it everywhere.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional  # noqa: UP035 (OmegaConf reads Optional, not X | None)

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from zoo.errors import ConfigError
from zoo.models import FAMILIES

KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


# The options ------------------------------------------------------------------------------


@dataclass
class TrainOptions:
    """The top level of conf/train.yaml (the groups below it are checked by what they build)."""

    name: str = MISSING
    data_name: str = MISSING
    monitor: str | None = "val/loss"
    monitor_mode: str = "min"
    seed: int | None = 42
    ckpt_path: str | None = None
    resume: str = "auto"
    test: bool = True


@dataclass
class TrainerBounds:
    """The trainer's budget: checked before Lightning builds anything."""

    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int = -1


@dataclass
class DataBounds:
    """The sizes and fractions a data module may hold (each data set has some of them):
    checked before the data module is built."""

    batch_size: int = 1
    num_workers: int = 0
    split_seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    val_size: int = 1
    image_size: int = 1
    block_size: int = 1
    samples_per_epoch: Optional[int] = None  # noqa: UP045
    val_windows: int = 1
    vocab_size: Optional[int] = None  # noqa: UP045
    max_download_mb: float = 1.0
    download_timeout_s: float = 1.0


@dataclass
class SampleOptions:
    """The options of conf/sample.yaml that every family shares."""

    ckpt_path: str | None = None
    pretrained: str | None = None
    num_samples: int = 64
    seed: int = 0
    output_dir: str = "samples"
    device: str = "auto"
    use_ema: bool = True
    batch_size: int | None = None
    compile: bool = False
    evaluate: bool = False
    prompt_file: str | None = None
    evaluation: Any = None
    paths: Any = None
    data: Any = None


def _option_type(annotation: Any) -> Any:
    """Return the OmegaConf type of a family option: Optional[T] for a plain T (or T | None),
    Any for unions OmegaConf cannot hold (``labels: int | list[int] | None``)."""
    arguments = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        plain = [a for a in arguments if a is not type(None)]
        return Optional[plain[0]] if len(plain) == 1 and plain[0] in KINDS else Any  # noqa: UP045
    return Optional[annotation] if annotation in KINDS else Any  # noqa: UP045


def family_option_types() -> dict[str, Any]:
    """Return every family's sample options with their types, read off ``sample`` signatures
    (an option two families type differently becomes Any)."""
    found: dict[str, Any] = {}
    for cls in FAMILIES.values():
        hints = typing.get_type_hints(cls.sample)
        for name in cls.sample_options():
            kind = _option_type(hints.get(name, Any))
            found[name] = kind if found.get(name, kind) == kind else Any
    return found


def sample_schema() -> type:
    """Return the dataclass of sample.py's config: the shared options and every family's."""
    family = [(name, kind, field(default=None)) for name, kind in family_option_types().items()]
    return dataclasses.make_dataclass("SampleConfig", family, bases=(SampleOptions,))


# Ranges -----------------------------------------------------------------------------------


def _positive(value: Any) -> bool:
    return value >= 1


def _non_negative(value: Any) -> bool:
    return value >= 0


RANGES: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    # sample.py
    "num_samples": (_positive, "a positive integer"),
    "batch_size": (_positive, "a positive integer"),
    "max_new_tokens": (_non_negative, "an integer >= 0"),
    "top_k": (_positive, "a positive integer"),
    "top_p": (lambda p: 0 < p <= 1, "a number in (0, 1]"),
    "temperature": (_non_negative, "a number >= 0"),
    "steps": (_positive, "a positive integer"),
    "eta": (lambda eta: 0 <= eta <= 1, "a number in [0, 1]"),
    "truncation": (lambda t: t > 0, "a number > 0"),
    "interpolate": (lambda s: s >= 2, "an integer >= 2"),
    # train.py
    "monitor_mode": (lambda mode: mode in ("min", "max"), "min or max"),
    "resume": (lambda mode: mode in ("auto", "never"), "auto or never"),
    "max_epochs": (lambda n: n == -1 or n >= 1, "a positive integer, or -1 for no bound"),
    "min_epochs": (_non_negative, "an integer >= 0"),
    "max_steps": (lambda n: n == -1 or n >= 1, "a positive integer, or -1 for no bound"),
    # train.py's data
    "num_workers": (_non_negative, "an integer >= 0"),
    "val_fraction": (lambda f: 0 <= f < 1, "a number in [0, 1)"),
    "test_fraction": (lambda f: 0 <= f < 1, "a number in [0, 1)"),
    "val_size": (_positive, "a positive integer"),
    "image_size": (_positive, "a positive integer"),
    "block_size": (_positive, "a positive integer"),
    "samples_per_epoch": (_positive, "a positive integer"),
    "val_windows": (_positive, "a positive integer"),
    "vocab_size": (lambda n: n >= 256, "an integer >= 256 (BPE starts from the 256 bytes)"),
    "max_download_mb": (lambda x: x > 0, "a number > 0"),
    "download_timeout_s": (lambda x: x > 0, "a number > 0"),
}


def _check_ranges(values: dict[str, Any], prefix: str = "") -> None:
    for name, value in values.items():
        if value is None or isinstance(value, (dict, list)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{name} must be a finite number, got {value}")
        rule = RANGES.get(name)
        if rule and not rule[0](value):
            raise ConfigError(f"{prefix}{name} must be {rule[1]}, got {value!r}")


def _typed(schema: type, values: DictConfig, prefix: str = "") -> DictConfig:
    """Return ``values`` merged into the structured config of ``schema``; raises ConfigError
    naming the first value of a wrong type or an unknown key."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), values)
    except ValidationError as error:
        expected = typing.get_type_hints(schema).get(str(error.key), Any)
        plain = [a for a in typing.get_args(expected) if a is not type(None)] or [expected]
        kind = KINDS.get(plain[0], "of another type")
        raise ConfigError(f"{prefix}{error.full_key} must be {kind}, got {error.value!r}") from None
    except ConfigKeyError as error:
        raise ConfigError(f"{prefix}{error.full_key} is not an option: {error.msg}") from None


def _check_group(schema: type, group: Any, prefix: str) -> DictConfig:
    """Return the values of ``schema``'s fields that the config ``group`` sets, typed (the
    others at their defaults); raises ConfigError for a wrong type or a value out of range."""
    given = {f.name: group.get(f.name) for f in dataclasses.fields(schema)}
    given = {name: value for name, value in given.items() if value is not None}
    typed = _typed(schema, OmegaConf.create(given), prefix=prefix)
    _check_ranges({name: typed[name] for name in given}, prefix=prefix)
    return typed


# What the entry scripts call --------------------------------------------------------------


def check_sample_config(cfg: DictConfig) -> DictConfig:
    """Return sample.py's config with its values typed; raises ConfigError (one line) for a
    value of the wrong type or out of range, before any work starts."""
    typed = _typed(sample_schema(), cfg)
    _check_ranges(OmegaConf.to_container(typed, resolve=False, throw_on_missing=False))
    return typed


def check_train_config(cfg: DictConfig) -> None:
    """Raises ConfigError (one line) for a top-level value or a trainer bound of train.py's
    config that cannot work, before anything is built."""
    top = {name: cfg.get(name) for name in (f.name for f in dataclasses.fields(TrainOptions))}
    _check_ranges(OmegaConf.to_container(_typed(TrainOptions, OmegaConf.create(top))))
    _check_group(DataBounds, cfg.get("data") or {}, "data.")
    typed = _check_group(TrainerBounds, cfg.get("trainer") or {}, "trainer.")
    if typed.max_epochs in (None, -1) and typed.max_steps == -1:
        raise ConfigError(
            "the run has no bound: set trainer.max_epochs or trainer.max_steps (e.g. "
            "trainer.max_epochs=100)"
        )
