"""What several test files share: running the real scripts, tiny specs and tiny families."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from torch.utils.data import DataLoader, TensorDataset

import zoo
from zoo import checkpoint_format as keys
from zoo.data.spec import DataSpec
from zoo.data.tokenizers import CharTokenizer
from zoo.models import FAMILIES, GenerativeModule
from zoo.pretrained import ENVIRONMENT
from zoo.runner import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def no_shipped_models(tmp_path_factory):
    """Tests (and the scripts they run) see no shipped pretrained models unless they point
    ZOO_PRETRAINED_DIR at some: which models ship changes, the behaviour under test must not
    (evaluation without a judge, for one)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ENVIRONMENT, str(tmp_path_factory.mktemp("no_shipped_models")))
        yield


SMOKE = ["debug=smoke", "trainer.accelerator=cpu"]
TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"

IMAGE_SPEC = DataSpec(modality="image", shape=(1, 8, 8), num_levels=17, num_classes=10).to_dict()


def text_spec(text_or_tokenizer: str | Any = TEXT) -> dict:
    """Return the spec of a character-level text (a tokenizer may be given instead)."""
    tokenizer = (
        CharTokenizer.from_text(text_or_tokenizer)
        if isinstance(text_or_tokenizer, str)
        else text_or_tokenizer
    )
    return DataSpec(
        modality="text", vocab_size=tokenizer.vocab_size, tokenizer=tokenizer.state_dict()
    ).to_dict()


TEXT_SPEC = text_spec()

# Sizes that make each family tiny (a few thousand parameters at most).
TINY = {
    "vae": {"latent_dim": 2, "channels": [4]},
    "cnn_classifier": {"channels": [4]},
    "pixelcnn": {"channels": 8, "num_layers": 2},
    "diffusion": {
        "base_channels": 8,
        "channel_multipliers": [1],
        "num_res_blocks": 1,
        "attention_resolutions": [],
        "num_heads": 1,
        "sampler_steps": 4,
    },
    "flow": {
        "base_channels": 8,
        "channel_multipliers": [1],
        "num_res_blocks": 1,
        "attention_resolutions": [],
        "num_heads": 1,
        "sampler_steps": 4,
    },
    "gan": {"latent_dim": 4, "width": 8},
    "gpt": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
    "char_rnn": {"embedding_dim": 8, "hidden_size": 16, "num_layers": 1},
    "vqvae": {"channels": [4], "num_residual_blocks": 1, "codebook_size": 8, "embedding_dim": 4},
}
# A two-stage family gets its first stage as train.py records it: family and hyperparameters.
TINY["vq_prior"] = {
    "stage_one": {"family": "vqvae", "hyper_parameters": {"spec": IMAGE_SPEC, **TINY["vqvae"]}},
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 16,
    "channels": 8,
    "num_layers": 2,
}


def tiny_family(family: str, seed: int = 0, **options: Any) -> GenerativeModule:
    """Return a tiny model of ``family`` on the 8×8 digits' spec or a short text's, in eval mode."""
    torch.manual_seed(seed)
    cls = FAMILIES[family]
    spec = IMAGE_SPEC if cls.modality == "image" else TEXT_SPEC
    return cls(spec, **{**TINY[family], **options}).eval()


def one_batch_loader(model: GenerativeModule, batch_size: int = 4) -> DataLoader:
    """Return a loader of one batch in the format of ``model``'s data: images on the spec's
    levels with labels (encoded by the first stage of a two-stage model), or windows of
    token ids with their next tokens."""
    generator = torch.Generator().manual_seed(0)
    spec = model.spec
    if spec.modality == "image":
        levels = torch.randint(0, spec.num_levels, (batch_size, *spec.shape), generator=generator)
        x = levels.float() / (spec.num_levels - 1) * 2 - 1
        y = torch.arange(batch_size) % max(spec.num_classes, 1)
        if model.two_stage:  # a second stage trains on what its first stage makes of images
            x = model.encode(x)
        return DataLoader(TensorDataset(x, y), batch_size=batch_size)
    tokens = torch.randint(0, spec.vocab_size, (batch_size, 9), generator=generator)
    return DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=batch_size)


def checkpoint_of(model: GenerativeModule) -> dict[str, Any]:
    """Return what a zoo checkpoint of ``model`` holds, as Lightning would write it."""
    checkpoint = {
        keys.HYPER_PARAMETERS: dict(model.hparams),
        keys.STATE_DICT: model.state_dict(),
    }
    model.on_save_checkpoint(checkpoint)
    assert checkpoint[keys.ZOO]["family"] == model.family
    assert checkpoint[keys.ZOO]["version"] == zoo.__version__
    return checkpoint


def run_script(script: str, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """Return the finished process of ``python script overrides…`` run from the repository root."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    process = subprocess.run(
        [sys.executable, script, *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and process.returncode != 0:
        raise AssertionError(
            f"{script} failed:\n{process.stdout[-3000:]}\n{process.stderr[-3000:]}"
        )
    return process


def train_run(run_dir: Path, *overrides: str) -> dict:
    """Return results.json of a train.py run written to ``run_dir``."""
    run_script("train.py", *overrides, f"hydra.run.dir={run_dir}")
    return json.loads((run_dir / "results.json").read_text())


def train_in_process(run_dir: Path, *overrides: str) -> float | None:
    """Runs zoo's train() on the config train.py composes, here, writing to ``run_dir``;
    returns what train() returns (the monitored metric)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        with open_dict(cfg):
            del cfg["hydra"]  # as Hydra hands a job its config
            cfg.paths.output_dir = str(run_dir)
        return train(cfg)
    finally:
        HydraConfig.instance().cfg = None
