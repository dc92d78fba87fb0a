"""Every image family runs on the 5,000 real 28×28 MNIST digits: its preset, shrunk to a tiny
model, trains a batch, tests, draws samples and is judged by an mnist5k judge."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import train_in_process

# The presets' own data, model shape and callbacks; only the widths shrink.
TINY_PRESETS = {
    "vae_mnist5k": ["model.latent_dim=2", "model.channels=[4,8]", "model.iw_samples=2"],
    "gan_mnist5k": ["model.latent_dim=4", "model.width=4"],
    "pixelcnn_mnist5k": ["model.channels=4", "model.num_layers=2"],
    "diffusion_mnist5k": [
        "model.base_channels=8",
        "model.num_res_blocks=1",
        "model.num_heads=1",
        "model.sampler_steps=2",
        "model.bound_timesteps=2",
    ],
}
ONE_BATCH = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "data.batch_size=8",
]


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> Path:
    """Return a folder whose judges/mnist5k.ckpt a one-batch classifier run exported."""
    root = tmp_path_factory.mktemp("mnist5k")
    train_in_process(
        root / "classifier",
        "experiment=classifier_mnist5k",
        *ONE_BATCH,
        "model.channels=[4]",
        "callbacks.curves=null",
        f"paths.judges_dir={root / 'judges'}",
        f"paths.cache_dir={root / 'cache'}",
    )
    return root


def test_the_classifier_preset_exports_the_mnist5k_judge(judged):
    checkpoint = torch.load(judged / "judges" / "mnist5k.ckpt", weights_only=True)
    assert checkpoint["zoo"]["family"] == "cnn_classifier"
    assert checkpoint["hyper_parameters"]["spec"]["shape"] == [1, 28, 28]


@pytest.mark.parametrize("experiment", sorted(TINY_PRESETS))
def test_each_image_family_trains_tests_and_is_judged_on_mnist5k(judged, experiment):
    run_dir = judged / experiment
    train_in_process(
        run_dir,
        f"experiment={experiment}",
        *ONE_BATCH,
        *TINY_PRESETS[experiment],
        "callbacks.sample_writer.num_samples=4",
        "callbacks.curves=null",
        "evaluation.num_samples=20",
        f"paths.judges_dir={judged / 'judges'}",
        f"paths.cache_dir={judged / 'cache'}",
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data"] == "mnist5k" and results["global_step"] >= 1
    test = results["test"]
    assert all(math.isfinite(value) for value in test.values())
    assert test["test/fid"] >= 0 and 1 <= test["test/classes"] <= 10  # judged: 20 samples
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["hyper_parameters"]["spec"]["shape"] == [1, 28, 28]
    assert list((run_dir / "samples").glob("*.png"))
    # The judge's features of the 500 real test digits were computed once, for this data set.
    assert [path.name.split("-")[:2] for path in (judged / "cache").rglob("*.pt")] == [
        ["mnist5k", "test"]
    ]
