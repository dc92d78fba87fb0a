"""Bad input gets one line naming the cause and the fix, before any work, and changes nothing."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMOKE, checkpoint_of, one_batch_loader, run_script, tiny_family
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from zoo import checkpoint_format as keys
from zoo.errors import ZooError
from zoo.outputs import save_tensor
from zoo.runner import sample, train


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints of tiny models of three families, as train.py writes them."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {}
    for family, options in [("vae", {}), ("pixelcnn", {}), ("gpt", {})]:
        model = tiny_family(family, **options)
        model.data_record = {"name": "digits", "config": {"_target_": "zoo.data.DigitsDataModule"}}
        paths[family] = save_tensor(checkpoint_of(model), folder / f"{family}.ckpt")
    return paths


def sample_with(ckpt: Path, tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "sample", overrides=[f"ckpt_path={ckpt}", f"output_dir={tmp_path / 'out'}", *overrides]
        )
    return sample(cfg)


# sample.py: wrong types and ranges, refused before any work ---------------------------------


@pytest.mark.parametrize(
    "family, override, message",
    [
        ("vae", "num_samples=abc", "num_samples must be an integer, got 'abc'"),
        ("vae", "num_samples=2.5", "num_samples must be an integer, got 2.5"),
        ("vae", "num_samples=0", "num_samples must be a positive integer, got 0"),
        ("vae", "seed=abc", "seed must be an integer, got 'abc'"),
        ("vae", "device=tpu", "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
        ("vae", "batch_size=-1", "batch_size must be a positive integer, got -1"),
        ("pixelcnn", "temperature=nan", "temperature must be a finite number, got nan"),
        ("pixelcnn", "temperature=-1", "temperature must be a number >= 0, got -1"),
        ("pixelcnn", "fast=abc", "fast must be true or false, got 'abc'"),
        ("pixelcnn", "labels=cat", "labels= needs a class-conditional model"),
        ("gpt", "max_new_tokens=-5", "max_new_tokens must be an integer >= 0, got -5"),
        ("gpt", "top_p=1.5", "top_p must be a number in (0, 1], got 1.5"),
        ("gpt", "steps=5", "steps= is not an option of the gpt family"),
    ],
)
def test_sample_refuses_a_bad_option_in_one_line_before_any_work(
    checkpoints, tmp_path, family, override, message
):
    with pytest.raises(ZooError) as raised:
        sample_with(checkpoints[family], tmp_path, override)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "out").exists()


def test_labels_that_are_not_class_ids_are_named(tmp_path):
    model = tiny_family("pixelcnn", conditional=True)
    path = save_tensor(checkpoint_of(model), tmp_path / "conditional.ckpt")
    with pytest.raises(ZooError, match=r"labels must be a class id or a list of them.*'cat'"):
        sample_with(path, tmp_path, "labels=cat")


def test_sample_script_prints_one_line_and_exits_non_zero(checkpoints, tmp_path):
    process = run_script(
        "sample.py",
        f"ckpt_path={checkpoints['vae']}",
        "num_samples=abc",
        f"output_dir={tmp_path}",
        check=False,
    )
    assert process.returncode == 1
    assert process.stderr.strip() == "sample.py: num_samples must be an integer, got 'abc'"


# Checkpoints that do not match --------------------------------------------------------------


def edited(checkpoints, tmp_path, change) -> Path:
    checkpoint = torch.load(checkpoints["vae"], weights_only=True)
    change(checkpoint)
    return save_tensor(checkpoint, tmp_path / "edited.ckpt")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c[keys.ZOO].update(family="variational"), "family 'variational'"),
        (lambda c: c[keys.ZOO].update(family="gan"), "hyperparameters ['beta', 'channels'"),
        (lambda c: c[keys.HYPER_PARAMETERS].update(depth=3), "hyperparameters ['depth']"),
        (lambda c: c.pop(keys.HYPER_PARAMETERS), "has no 'hyper_parameters'"),
        (
            lambda c: c[keys.HYPER_PARAMETERS].update(latent_dim=3),
            "its weights do not fit the vae model",
        ),
    ],
)
def test_a_checkpoint_that_does_not_match_its_family_is_named_in_one_line(
    checkpoints, tmp_path, change, message
):
    path = edited(checkpoints, tmp_path, change)
    with pytest.raises(ZooError, match=re.escape(message)) as raised:
        sample_with(path, tmp_path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_a_checkpoint_holding_pickled_code_is_named_as_such_never_with_advice_to_run_it(tmp_path):
    path = tmp_path / "code.ckpt"
    torch.save({"zoo": {"family": "vae"}, "hook": print}, path)
    with pytest.raises(ZooError) as raised:
        sample_with(path, tmp_path)
    assert "holds pickled Python objects (code)" in str(raised.value)
    assert "weights_only=False" not in str(raised.value)


# Data a checkpoint points to -----------------------------------------------------------------


def test_evaluation_never_fetches_or_writes_where_a_checkpoint_says(checkpoints, tmp_path):
    elsewhere = tmp_path / "written_by_the_checkpoint"
    checkpoint = torch.load(checkpoints["gpt"], weights_only=True)
    checkpoint[keys.ZOO]["data"] = {
        "name": "text_file",
        "config": {
            "_target_": "zoo.data.TextFileDataModule",
            "path": "http://127.0.0.1:9/corpus.txt",
            "cache_dir": str(elsewhere),
            "block_size": 16,
        },
    }
    path = save_tensor(checkpoint, tmp_path / "pointing.ckpt")
    with pytest.raises(ZooError, match=r"pass data\.path=<its location> to evaluate on it"):
        sample_with(path, tmp_path, "evaluate=true", "max_new_tokens=2")
    assert not elsewhere.exists()
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n\n" * 20)
    result = sample_with(
        path,
        tmp_path,
        "evaluate=true",
        "max_new_tokens=2",
        f"data.path={corpus}",
        f"data.cache_dir={tmp_path / 'cache'}",
    )
    assert result["test/loss"] > 0 and not elsewhere.exists()


# train.py --------------------------------------------------------------------------------------


def train_with(tmp_path: Path, *overrides: str):
    """Run train(cfg) in this process as train.py would, writing under tmp_path."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*SMOKE, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "run")
        del cfg.hydra
    try:
        return train(cfg)
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["seed=abc"], "seed must be an integer, got 'abc'"),
        (["trainer.max_epochs=0"], "trainer.max_epochs must be a positive integer, or -1"),
        (["trainer.max_epochs=-1"], "the run has no bound"),
        (["monitor_mode=maximum"], "monitor_mode must be min or max, got 'maximum'"),
        (["model.latent_dim=0"], "model.latent_dim must be a positive integer, got 0"),
        (["model.channels=[32,0]"], "model.channels must be a list of positive integers"),
        (
            ["model.optimizer.lr=nan"],
            "model.optimizer.lr must be a positive finite number, got nan",
        ),
        (["data.batch_size=0"], "data.batch_size must be a positive integer, got 0"),
        (["data.batch_size=abc"], "data.batch_size must be an integer, got 'abc'"),
        (["data.val_fraction=1.5"], "data.val_fraction must be a number in [0, 1), got 1.5"),
        (["data.num_workers=-1"], "data.num_workers must be an integer >= 0, got -1"),
        (
            ["data=image_folder", "data.root=x", "data.image_size=0"],
            "data.image_size must be a positive integer, got 0",
        ),
        (
            ["data=shakespeare", "model=char_rnn", "data.tokenizer=bpe", "data.vocab_size=100"],
            "data.vocab_size must be an integer >= 256 (BPE starts from the 256 bytes), got 100",
        ),
        (
            ["data=text_file", "data.path=x.txt", "model=char_rnn", "data.max_download_mb=0"],
            "data.max_download_mb must be a number > 0, got 0",
        ),
        (
            ["data=text_file", "data.path=x.txt", "model=char_rnn", "data.download_timeout_s=abc"],
            "data.download_timeout_s must be a number, got 'abc'",
        ),
        (["monitor=val/bdp"], "monitor=val/bdp is never logged by a vae run; it logs"),
        (["data=text_file", "model=char_rnn"], "data=text_file needs data.path=<a text file"),
        (
            ["experiment=latent_flow_digits"],
            "model=latent_flow needs model.stage_one=<the .ckpt of a VAE trained with model.latent",
        ),
    ],
)
def test_train_refuses_a_config_that_cannot_work_before_writing_anything(
    tmp_path, overrides, message
):
    with pytest.raises(ZooError) as raised:
        train_with(tmp_path, *overrides)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / ".hydra").exists()


def test_a_gan_monitors_nothing_by_default_and_keeps_its_last_checkpoint(tmp_path):
    train_with(tmp_path, "model=gan", "evaluation.enabled=false")
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_train_script_prints_one_line_for_a_bad_value(tmp_path):
    process = run_script(
        "train.py", *SMOKE, "trainer.max_epochs=0", f"hydra.run.dir={tmp_path}", check=False
    )
    assert process.returncode == 1
    assert process.stderr.strip().splitlines()[-1] == (
        "train.py: trainer.max_epochs must be a positive integer, or -1 for no bound, got 0"
    )


# State restored over the user's config -------------------------------------------------------


def test_a_resumed_run_trains_at_the_newly_configured_learning_rate(tmp_path):
    import lightning as L

    from zoo.callbacks import LastEpochCheckpoint

    rates = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    def fit(model, epochs, *callbacks, ckpt_path=None):
        L.Trainer(
            accelerator="cpu",
            max_epochs=epochs,
            limit_val_batches=0,
            callbacks=[LastEpochCheckpoint(dirpath=tmp_path, save_last=True), *callbacks],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        ).fit(model, one_batch_loader(model), ckpt_path=ckpt_path)

    adam = {"_target_": "torch.optim.Adam", "_partial_": True}
    fit(tiny_family("vae", optimizer={**adam, "lr": 1e-3}).train(), 2)
    resumed = tiny_family("vae", optimizer={**adam, "lr": 1e-4}).train()
    fit(resumed, 4, Record(), ckpt_path=tmp_path / "last.ckpt")
    # epochs 2 and 3 of a 4-epoch cosine, from the new rate: 1e-4 · (1 + cos(π·e/4)) / 2
    assert rates == pytest.approx([0.5e-4, 1e-4 * (1 + math.cos(3 * math.pi / 4)) / 2])
