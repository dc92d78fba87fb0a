"""Plots the logged training and validation curves to a PNG at the end of training."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from zoo.outputs import atomic_write


def plot_curves(
    history: dict[str, list[tuple[int, float]]], path: str | Path, title: str = ""
) -> Path:
    """Return ``path`` after drawing one panel per metric name, its train and val curves together.

    ``history`` maps a logged name (``train/loss``, ``val/loss``, ``val/bpd``) to
    (global step, value) points; names that differ only in their stage prefix
    share a panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(dict)
    for name, points in sorted(history.items()):
        stage, _, metric = name.partition("/")
        if points:
            panels[metric or stage][stage] = points
    path = Path(path)
    columns = min(3, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for ax, (metric, curves) in zip(axes.flat, sorted(panels.items()), strict=False):
        for stage, points in sorted(curves.items()):
            steps, values = zip(*points, strict=True)
            ax.plot(
                steps, values, marker="o" if len(points) < 30 else None, markersize=3, label=stage
            )
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, dpi=110, format="png")
    plt.close(figure)
    return path


class CurvePlotter(L.Callback):
    """Records the epoch-level train/ and val/ metrics and plots them when fitting ends.

    The history is part of the callback's checkpoint state, so a resumed run
    plots its whole curve, not just the part after the resume.
    """

    def __init__(self, path: str, title: str = ""):
        self.path = Path(path)
        self.title = title
        self.history: dict[str, list[tuple[int, float]]] = defaultdict(list)

    def _record(self, trainer, stage: str) -> None:
        step = trainer.global_step
        for name, value in trainer.callback_metrics.items():
            if not name.startswith(f"{stage}/") or name.endswith("_step") or value.numel() != 1:
                continue
            name = name.removesuffix("_epoch")
            points = self.history[name]
            if points and points[-1][0] == step:
                points[-1] = (step, float(value))
            else:
                points.append((step, float(value)))

    def on_train_epoch_end(self, trainer, pl_module):
        self._record(trainer, "train")

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._record(trainer, "val")

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module):
        if self.history:
            plot_curves(self.history, self.path, self.title)

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": {name: [list(p) for p in points] for name, points in self.history.items()}
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = defaultdict(list)
        for name, points in state_dict["history"].items():
            self.history[name] = [(int(s), float(v)) for s, v in points]
