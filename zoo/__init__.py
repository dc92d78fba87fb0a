"""zoo: a PyTorch model zoo for generative architectures.

The pretrained-model API is named here and imported on first use, so ``import zoo``
stays cheap (no torch): ``zoo.load``, ``zoo.list_models``, ``zoo.save_pretrained``,
``zoo.from_pretrained`` and ``zoo.push_to_hub`` are those of :mod:`zoo.pretrained`.
"""

import importlib

__version__ = "0.1.0"

PRETRAINED_API = ("load", "list_models", "save_pretrained", "from_pretrained", "push_to_hub")


def __getattr__(name: str):
    if name in PRETRAINED_API:
        return getattr(importlib.import_module("zoo.pretrained"), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *PRETRAINED_API])
