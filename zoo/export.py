"""python -m zoo.export ckpt_path=PATH out=DIR [name=NAME] [half=true]

Converts a run's checkpoint into the Hugging Face layout (model.safetensors, config.json,
README.md; see zoo.pretrained), its EMA weights in where the run kept them. When the
checkpoint lies in a run folder of train.py (``<run>/checkpoints/*.ckpt``), the card records
the run's test metrics with their units, its train command and wall time from the run's
results.json and .hydra/overrides.yaml.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from zoo.errors import ZooError

OPTIONS = {"ckpt_path": "a run's .ckpt", "out": "the folder to write", "name": "", "half": ""}
# The metric a card leads with, the first of these a run has.
HEADLINES = ("test/fid", "test/accuracy", "test/bpd", "test/loss")


def run_description(ckpt_path: str | Path) -> dict[str, Any]:
    """Return what the run folder around a checkpoint says about it (train command, test
    metrics with units, headline metric, wall time, seed); {} outside a run folder."""
    from omegaconf import OmegaConf

    from zoo.pretrained.card import metrics_with_units

    run = Path(ckpt_path).resolve().parent.parent
    results_path, overrides_path = run / "results.json", run / ".hydra" / "overrides.yaml"
    description: dict[str, Any] = {}
    if overrides_path.is_file():
        overrides = [str(o) for o in OmegaConf.to_container(OmegaConf.load(overrides_path))]
        description["train_command"] = shlex.join(["python", "train.py", *overrides])
    if results_path.is_file():
        try:
            results = json.loads(results_path.read_text(encoding="utf-8"))
        except ValueError:
            return description
        metrics = results.get("test") or {}
        description["metrics"] = metrics_with_units(results.get("family", ""), metrics)
        headline = next((name for name in HEADLINES if name in metrics), None)
        if headline:
            description["headline_metric"] = headline
        for key in ("train_time_s", "seed"):
            if results.get(key) is not None:
                description[key] = results[key]
    return description


def parse(arguments: list[str]) -> dict[str, str]:
    """Return ``key=value`` arguments as a dict; raises ZooError for anything else."""
    values = {}
    for argument in arguments:
        key, equals, value = argument.partition("=")
        if not equals or key not in OPTIONS:
            raise ZooError(
                f"unknown argument {argument!r}; usage: python -m zoo.export ckpt_path=PATH "
                "out=DIR [name=NAME] [half=true]"
            )
        values[key] = value
    for key in ("ckpt_path", "out"):
        if not values.get(key):
            raise ZooError(
                f"{key}= is required: {OPTIONS[key]} (python -m zoo.export ckpt_path=… out=…)"
            )
    if values.get("half", "false").lower() not in ("true", "false"):
        raise ZooError(f"half must be true or false, got {values['half']!r}")
    return values


def export(arguments: list[str]) -> Path:
    """Return the folder written from the ``key=value`` arguments of ``python -m zoo.export``."""
    from zoo.pretrained import save_pretrained

    values = parse(arguments)
    return save_pretrained(
        values["ckpt_path"],
        values["out"],
        name=values.get("name") or None,
        half=values.get("half", "false").lower() == "true",
        description=run_description(values["ckpt_path"]),
    )


def main() -> None:
    try:
        directory = export(sys.argv[1:])
    except ZooError as error:
        sys.exit(f"zoo.export: {error}")
    for path in sorted(directory.iterdir()):
        print(f"{path}  ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
