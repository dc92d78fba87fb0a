"""A leaderboard of runs: a Markdown table, a figure of sample grids and a plot of the metrics.

Reads every ``results.json`` under a folder (single runs under ``outputs/`` and
sweep jobs under ``multirun/`` alike) with the run's composed config beside it. A run
whose files cannot be read (truncated JSON, a config that is not a mapping) is left out
with a warning naming it; the others are still ranked.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from zoo.errors import ZooError

log = logging.getLogger("zoo")

# Metrics where larger is better; every other metric sorts ascending.
HIGHER_IS_BETTER = {
    "accuracy",
    "precision",
    "recall",
    "density",
    "coverage",
    "confidence",
    "classes",
}
# The columns shown when present, in this order (the sort metric always comes first).
SHOWN_METRICS = [
    "test/fid",
    "test/kid",
    "test/precision",
    "test/recall",
    "test/coverage",
    "test/confidence",
    "test/classes",
    "test/bpd",
    "test/nll_iw_bpd",
    "test/loss",
    "test/perplexity",
    "test/accuracy",
]
# Model settings too structural to be "key hyperparameters" in a table.
SKIPPED_SETTINGS = {"_target_", "optimizer", "scheduler", "scheduler_interval"}


@dataclass
class Run:
    """One training run's results, key settings and newest sample grid."""

    path: Path
    results: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    grid: Path | None = None

    def metric(self, name: str) -> float | None:
        stage = name.split("/", 1)[0]
        value = self.results.get(stage, {}).get(name)
        return float(value) if value is not None else None

    def metric_names(self) -> set[str]:
        """Return the names of the metrics this run has a value of."""
        return {
            name
            for stage in STAGES
            for name, value in self.results.get(stage, {}).items()
            if value is not None
        }


STAGES = ("train", "val", "test")


class UnreadableRunError(ZooError):
    """A run folder whose results.json or config cannot be read as a run's."""


def _check_results(results: Any) -> None:
    """Raise UnreadableRunError unless ``results`` has the shape train.py writes."""
    if not isinstance(results, dict):
        raise UnreadableRunError(f"results.json holds a {type(results).__name__}, not a mapping")
    if not isinstance(results.get("family"), str):
        raise UnreadableRunError("results.json names no family: it was not written by train.py")
    for stage in STAGES:
        metrics = results.get(stage, {})
        if not isinstance(metrics, dict):
            raise UnreadableRunError(f"results.json's {stage!r} is not a mapping of metrics")
        for name, value in metrics.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise UnreadableRunError(f"results.json's {name} is {value!r}, not a number")
    for key in ("num_parameters", "train_time_s"):
        value = results.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise UnreadableRunError(f"results.json's {key} is {value!r}, not a number")


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_run(results_path: Path) -> Run:
    """Return the run whose ``results.json`` is at ``results_path``.

    Raises UnreadableRunError saying what is wrong with its results.json or
    ``.hydra/config.yaml`` (a missing config is fine: the run has no settings).
    """
    run_dir = results_path.parent
    try:
        results = json.loads(results_path.read_text())
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        raise UnreadableRunError(f"results.json cannot be read: {error}") from None
    _check_results(results)
    run = Run(path=run_dir, results=results)
    config_path = run_dir / ".hydra" / "config.yaml"
    if config_path.is_file():
        try:
            config = yaml.safe_load(config_path.read_text())
        except (OSError, ValueError, yaml.YAMLError) as error:
            first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UnreadableRunError(f".hydra/config.yaml cannot be read: {first_line}") from None
        model = config.get("model", {}) if isinstance(config, dict) else None
        if not isinstance(model, dict):
            raise UnreadableRunError(".hydra/config.yaml is not a run's config (no model mapping)")
        settings = {k: v for k, v in model.items() if k not in SKIPPED_SETTINGS}
        run.settings = _flatten(settings)
        optimizer = model.get("optimizer")
        if isinstance(optimizer, dict) and optimizer.get("lr") is not None:
            run.settings["lr"] = optimizer["lr"]
        run.settings["seed"] = config.get("seed")
    grids = sorted((run_dir / "samples").glob("epoch_*.png"))
    run.grid = grids[-1] if grids else None
    return run


def collect_runs(root: str | Path) -> list[Run]:
    """Return every readable run with a ``results.json`` below ``root``.

    A run that cannot be read is left out with a warning naming its folder and the fault.
    """
    runs = []
    for path in sorted(Path(root).rglob("results.json")):
        try:
            runs.append(read_run(path))
        except UnreadableRunError as error:
            log.warning("run %s left out of the leaderboard: %s", path.parent, error)
    return runs


def sort_runs(runs: list[Run], metric: str) -> list[Run]:
    """Return the runs best first by ``metric``; runs without it go last."""
    descending = metric.rsplit("/", 1)[-1] in HIGHER_IS_BETTER

    def key(run: Run):
        value = run.metric(metric)
        if value is None or math.isnan(value):
            return (1, 0.0)
        return (0, -value if descending else value)

    return sorted(runs, key=key)


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _format_count(value: int | float | None) -> str:
    return f"{value:,}" if isinstance(value, int) else _format(value)


def _varying_settings(runs: list[Run]) -> list[str]:
    """Return the settings whose values differ between runs (all of them for a single run)."""
    names = sorted({name for run in runs for name in run.settings})
    if len(runs) == 1:
        return names
    return [n for n in names if len({repr(run.settings.get(n)) for run in runs}) > 1]


def markdown_table(runs: list[Run], metric: str, root: Path) -> str:
    """Return the leaderboard as a Markdown table, best run first."""
    metrics = [metric] + [
        m for m in SHOWN_METRICS if m != metric and any(r.metric(m) is not None for r in runs)
    ]
    settings = _varying_settings(runs)
    header = [
        "#",
        "run",
        "family",
        "data",
        "settings",
        *metrics,
        "parameters",
        "train s",
        "samples/s",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, run in enumerate(runs, start=1):
        described = ", ".join(
            f"{n}={_format(run.settings[n])}" for n in settings if n in run.settings
        )
        row = [
            str(rank),
            str(run.path.relative_to(root)) if run.path != root else run.path.name,
            run.results["family"],
            str(run.results.get("data", "?")),
            described or "–",
            *[_format(run.metric(m)) for m in metrics],
            _format_count(run.results.get("num_parameters")),
            _format(run.results.get("train_time_s")),
            _format(run.metric("test/samples_per_second")),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def samples_figure(runs: list[Run], metric: str, path: Path) -> Path | None:
    """Return ``path`` after drawing each run's newest sample grid with its rank and metric."""
    shown = [run for run in runs if run.grid is not None]
    if not shown:
        return None
    plt = _pyplot()
    from PIL import Image

    columns = min(4, len(shown))
    rows = math.ceil(len(shown) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, run in zip(axes.flat, shown, strict=False):
        try:
            with Image.open(run.grid) as grid:
                ax.imshow(grid.convert("RGB"))
        except OSError as error:  # a damaged grid leaves its panel empty, not the figure
            log.warning("sample grid %s left out of the figure: %s", run.grid, error)
        rank = runs.index(run) + 1
        ax.set_title(
            f"#{rank} {run.results.get('name', '')}\n{metric}={_format(run.metric(metric))}",
            fontsize=9,
        )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def metrics_figure(runs: list[Run], metric: str, path: Path) -> Path:
    """Return ``path`` after drawing one bar panel per metric, runs in leaderboard order."""
    plt = _pyplot()
    metrics = [metric] + [
        m for m in SHOWN_METRICS if m != metric and any(r.metric(m) is not None for r in runs)
    ]
    columns = min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, metrics, strict=False):
        ax.axis("on")
        ranked = [(f"#{i}", run.metric(name)) for i, run in enumerate(runs, start=1)]
        labels, values = zip(*[(label, v) for label, v in ranked if v is not None], strict=True)
        ax.bar(labels, values, color="tab:blue")  # runs without the metric are left out
        ax.set_title(
            name + (" (higher is better)" if name.rsplit("/", 1)[-1] in HIGHER_IS_BETTER else "")
        )
        ax.grid(axis="y", alpha=0.3)
    figure.suptitle("runs in leaderboard order (see leaderboard.md)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_leaderboard(
    root: str | Path, metric: str, output_dir: str | Path | None = None
) -> dict[str, Path]:
    """Return the paths of leaderboard.md and its figures, written for the runs under ``root``."""
    root = Path(root)
    runs = collect_runs(root)
    if not runs:
        raise ZooError(
            f"no runs under {root}: point at a folder that holds runs' results.json (e.g. outputs)"
        )
    found = sorted(set().union(*(run.metric_names() for run in runs)))
    if metric not in found:
        choices = f"sort by one of: {', '.join(found)}" if found else "the runs logged no metrics"
        raise ZooError(f"no run under {root} has {metric}; {choices}")
    runs = sort_runs(runs, metric)
    output_dir = Path(output_dir) if output_dir else root
    written = {"table": output_dir / "leaderboard.md"}
    title = f"# Leaderboard: {len(runs)} runs under {root}, sorted by {metric}\n\n"
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        written["table"].write_text(title + markdown_table(runs, metric, root))
        grids = samples_figure(runs, metric, output_dir / "leaderboard_samples.png")
        if grids:
            written["samples"] = grids
        written["metrics"] = metrics_figure(runs, metric, output_dir / "leaderboard_metrics.png")
    except OSError as error:
        raise ZooError(
            f"cannot write the leaderboard in {output_dir}: {error.strerror or error}; "
            "pass --out <a writable folder>"
        ) from None
    return written
