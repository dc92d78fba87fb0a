"""The check of a shipped model: one figure measured on the shipped weights, re-measured by
tests/test_pretrained.py, and the tolerances it must hold within.

An image family's check is the FID of a few hundred samples (a fixed seed) against the test
split, in the feature space of the shipped judge of its data set (or, where drawing them
takes minutes, the test bits/dim of an exact likelihood); a classifier's, its test
accuracy; a text family's, its test loss in nats/token. ``bench/make_pretrained.py``
measures it on the exported folder and records it on the card (config.json's ``check``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from zoo.checkpoints import datamodule_from_record
from zoo.errors import ZooError
from zoo.evaluation import Evaluation, metrics_on_test_split
from zoo.models import GenerativeModule
from zoo.pretrained import shipped_path
from zoo.pretrained.folder import weights_fingerprint

# How far a re-measured check may lie from the recorded one (the larger of the two bounds).
# FID of a few hundred samples: the same seed draws the same samples on one machine, but
# another CPU's rounding can turn an autoregressive sampler's draws (PixelCNN, the priors),
# whose FID then moves by sample noise.
TOLERANCES = {
    "fid": {"relative": 0.2, "absolute": 1.0},
    "test/accuracy": {"absolute": 0.01},  # about 2 of the 180 test digits
    "test/bpd": {"absolute": 0.01},  # an exact likelihood: only the arithmetic differs
    "test/loss": {"absolute": 0.02},  # nats/token over 256 evenly spaced windows
}
# How far float16 weights may move the check from float32's for float16 to be kept.
HALF_TOLERANCES = {
    "fid": {"relative": 0.05, "absolute": 0.2},
    "test/accuracy": {"absolute": 0.006},
    "test/bpd": {"absolute": 0.002},
    "test/loss": {"absolute": 0.005},
}


def check_kind(family: str, modality: str) -> str:
    """Return the check of a family: ``fid``, ``test/accuracy`` (the classifier) or
    ``test/loss`` (text)."""
    if family == "cnn_classifier":
        return "test/accuracy"
    return "test/loss" if modality == "text" else "fid"


def within(value: float, recorded: float, tolerance: dict[str, float]) -> bool:
    """Return whether ``value`` lies within ``tolerance`` (``relative`` to ``recorded``, or
    ``absolute``, whichever is larger) of ``recorded``."""
    bound = max(tolerance.get("absolute", 0.0), tolerance.get("relative", 0.0) * abs(recorded))
    return abs(value - recorded) <= bound


def measure(
    model: GenerativeModule,
    metric: str,
    *,
    num_samples: int = 300,
    seed: int = 0,
    judge: str | None = None,
    cache_dir: str = ".cache/zoo",
) -> dict[str, Any]:
    """Return the check of ``model`` (see the module's docstring), as the card records it:
    ``metric``, ``value``, how it was measured, ``tolerance`` and ``seconds``.

    ``judge`` names the shipped judge of a FID check. Raises ZooError for a model without a
    data record, or a FID check without a judge.
    """
    # a text data set's token files are prepared into the cache folder, not the working one
    text = model.spec.modality == "text"
    locations = {"tokens_dir": str(Path(cache_dir) / "tokens")} if text else {}
    datamodule = datamodule_from_record(model.data_record, **locations)
    data = model.data_record["name"]
    start = time.perf_counter()
    record: dict[str, Any] = {"metric": metric}
    if metric == "fid":
        if judge is None:
            raise ZooError(f"a FID check needs a judge of {data}: ship classifier_{data} first")
        judge_dir = shipped_path(judge)
        evaluation = Evaluation(
            num_samples=num_samples,
            seed=seed,
            metrics=["fid"],
            classifier_ckpt=str(judge_dir),
            cache_dir=cache_dir,
        )
        value = evaluation.evaluate_model(model, datamodule)["fid"]
        record.update(
            value=value,
            num_samples=num_samples,
            seed=seed,
            judge=judge,
            judge_fingerprint=weights_fingerprint(judge_dir),
            description=f"FID of {num_samples} samples (seed {seed}) against the {data} test "
            f"split in {judge}'s features",
        )
    else:
        value = metrics_on_test_split(model, datamodule)[metric]
        record.update(value=value, description=f"{metric} on the {data} test split")
    record.update(tolerance=TOLERANCES[metric], seconds=round(time.perf_counter() - start, 2))
    return record


def remeasure(model: GenerativeModule, recorded: dict[str, Any], cache_dir: str) -> float:
    """Return the check ``recorded`` on a card, measured again on ``model`` the same way.

    Raises ZooError when the judge it was measured with has changed since (its figures are
    then not comparable: rebuild the model).
    """
    judge = recorded.get("judge")
    if judge is not None:
        now = weights_fingerprint(shipped_path(judge))
        if now != recorded.get("judge_fingerprint"):
            raise ZooError(
                f"the check was measured with another {judge} than the one shipping now: "
                "rebuild the model with bench/make_pretrained.py"
            )
    again = measure(
        model,
        recorded["metric"],
        num_samples=recorded.get("num_samples", 300),
        seed=recorded.get("seed", 0),
        judge=judge,
        cache_dir=cache_dir,
    )
    return again["value"]
