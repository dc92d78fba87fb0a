"""Run outputs written whole or not at all: files, JSON, tensors, image grids, texts, checkpoints.

Every file zoo writes goes through :func:`atomic_write`: the bytes go to a temporary file
beside the target, are flushed to disk, and the temporary file is renamed over the target.
A rename within one folder is atomic, so a crash, a kill or a full disk leaves the old file
(or none), never half of a new one. A full disk is reported as a ZooError naming the folder.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zoo.errors import ZooError

MIN_DISPLAY_SIZE = 32  # tiny images (8×8 digits) are enlarged, pixel for pixel, to at least this


def _no_space(path: Path) -> ZooError:
    return ZooError(
        f"no space left on the disk of {path.parent.resolve()} while writing {path.name}: "
        "free some space there (or write elsewhere) and run again; nothing was replaced"
    )


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Yield a file to write ``path``'s new contents into; on success it replaces ``path``.

    ``mode`` is ``"wb"`` or ``"w"`` (UTF-8 text). The parent folder is created. Raises
    ZooError when the disk is full (``ENOSPC``); the target is then left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise _no_space(path) from None
        raise
    finally:
        temporary.unlink(missing_ok=True)


def check_writable_dir(path: str | Path, purpose: str = "outputs") -> Path:
    """Return ``path`` once it is known that zoo can create files there (the folder, or the
    nearest existing folder above it, is writable), creating nothing. Raises ZooError when a
    file is in the way or the folder is read-only: call it before any work starts."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ZooError(
            f"cannot write {purpose} to {path}: {existing} is a file, not a folder; "
            "pass another folder or move the file"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ZooError(
            f"cannot write {purpose} to {path}: {existing} is not writable; "
            "pass a folder you can write to"
        )
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Return ``path`` after writing ``text`` there as UTF-8."""
    with atomic_write(path, "w") as file:
        file.write(text)
    return Path(path)


def write_json(path: str | Path, values: dict[str, Any]) -> Path:
    """Return ``path`` after writing ``values`` there as indented JSON."""
    return write_text(path, json.dumps(values, indent=2) + "\n")


def save_tensor(values: Any, path: str | Path) -> Path:
    """Return ``path`` after ``torch.save`` of plain values (tensors, numbers, lists, dicts)."""
    with atomic_write(path) as file:
        torch.save(values, file)
    return Path(path)


def copy_file(source: str | Path, path: str | Path) -> Path:
    """Return ``path`` after copying ``source`` there (a reader never sees half a file)."""
    with atomic_write(path) as file, open(source, "rb") as original:
        shutil.copyfileobj(original, file)
    return Path(path)


def image_grid(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """Return a (C, H', W') grid in [0, 1] of images (N, C, H, W) in [-1, 1], enlarged if tiny."""
    from torchvision.utils import make_grid

    images = images.detach().float().cpu().clamp(-1, 1)
    scale = math.ceil(MIN_DISPLAY_SIZE / images.shape[-1])
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    nrow = nrow or max(1, math.ceil(math.sqrt(images.shape[0])))
    return make_grid((images + 1) / 2, nrow=nrow, padding=2, pad_value=1.0)


def save_image_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Return ``path`` after writing images (N, C, H, W) in [-1, 1] there as a PNG grid."""
    from torchvision.utils import save_image

    with atomic_write(path) as file:
        save_image(image_grid(images, nrow), file, format="png")
    return Path(path)


def save_texts(texts: list[str], path: str | Path) -> Path:
    """Return ``path`` after writing the texts there, separated by numbered rules."""
    parts = [f"===== sample {i} =====\n{text}\n" for i, text in enumerate(texts)]
    return write_text(path, "\n".join(parts))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing through :func:`atomic_write`.

    A run killed mid-save, or a disk that fills up, leaves the previous checkpoint intact.
    (Lightning's own writer stages the file in the system's temporary folder and moves it,
    which is not atomic when that folder lies on another file system.)
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        with atomic_write(path) as file:
            torch.save(checkpoint, file)
