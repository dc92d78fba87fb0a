"""The data spec: what a model needs to know about its data, as plain values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DataSpec:
    """What the data looks like; models are built from this, never from a dataset.

    Images enter models as float tensors in [-1, 1] of shape ``(C, H, W)`` whose
    values lie on ``num_levels`` evenly spaced levels (17 for the digits, 256 for
    8-bit images); text enters as integer token ids below ``vocab_size``.
    """

    modality: str  # "image" or "text"
    shape: tuple[int, ...] | None = None  # (C, H, W) for images
    num_levels: int | None = None  # quantisation levels of each image value
    num_classes: int = 0  # 0 when the data carry no labels
    vocab_size: int | None = None  # text only
    tokenizer: dict[str, Any] = field(default_factory=dict)  # text only: the tokenizer's state

    def __post_init__(self):
        if self.modality not in ("image", "text"):
            raise ValueError(f"modality must be 'image' or 'text', got {self.modality!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain values, safe to store in a checkpoint."""
        spec = asdict(self)
        spec["shape"] = list(self.shape) if self.shape is not None else None
        return spec

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DataSpec:
        """Return the spec stored by :meth:`to_dict`."""
        values = dict(values)
        if values.get("shape") is not None:
            values["shape"] = tuple(values["shape"])
        return cls(**values)
