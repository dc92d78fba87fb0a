"""Faults a long run meets: none loses a run's checkpoints, metrics, config, results or judge."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import (
    ROOT,
    SMOKE,
    checkpoint_of,
    one_batch_loader,
    run_script,
    tiny_family,
    train_run,
)
from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from zoo import checkpoint_format as keys
from zoo.callbacks import LastEpochCheckpoint
from zoo.checkpoints import load_checkpoint
from zoo.errors import TrainingDivergedError, ZooError
from zoo.models import FAMILIES
from zoo.outputs import atomic_write, save_tensor, write_json
from zoo.runner import checkpoint_to_resume

# A VAE of two epochs of two batches: every output of a real run, in seconds.
SHORT = [
    *SMOKE,
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "evaluation.enabled=false",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train_run(run_dir, *SHORT)
    return run_dir


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    """A copy of the finished run's folder to break things in."""
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def folder_state(run_dir: Path) -> dict[str, bytes]:
    """Return the bytes of every file the run's record consists of."""
    return {
        str(path.relative_to(run_dir)): path.read_bytes()
        for path in sorted(run_dir.rglob("*"))
        if path.is_file() and path.suffix in (".ckpt", ".csv", ".yaml", ".json")
    }


def epochs_in(path: Path) -> int:
    checkpoint = torch.load(path, weights_only=True)
    return checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]


# 1. last.ckpt is the last epoch -------------------------------------------------------------


def test_last_checkpoint_is_the_last_epoch_when_the_monitored_metric_never_improves(tmp_path):
    # monitor_mode=max on a falling loss: the best stays at epoch 0, last must not.
    results = train_run(tmp_path / "run", *SHORT, "trainer.max_epochs=3", "monitor_mode=max")
    assert epochs_in(Path(results["checkpoints"]["last"])) == 3
    assert Path(results["checkpoints"]["best"]).name == "best-epoch000.ckpt"
    for path in results["checkpoints"].values():
        assert Path(path).is_file()  # results.json names files that exist


# 2. A failed resume changes nothing ---------------------------------------------------------


def resume_in_folder(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_script(
        "train.py",
        *SHORT,
        "trainer.max_epochs=4",
        f"hydra.run.dir={run_dir}",
        *overrides,
        check=False,
    )


def test_a_resume_with_another_model_size_names_the_difference_and_changes_nothing(run_copy):
    before = folder_state(run_copy)
    process = resume_in_folder(run_copy, "model.latent_dim=32")
    assert process.returncode == 1
    message = process.stderr.strip().splitlines()[-1]
    assert (
        message.startswith("train.py: ")
        and "latent_dim=16 in the checkpoint, 32 configured" in message
    )
    assert folder_state(run_copy) == before


def test_a_truncated_last_checkpoint_is_refused_in_one_line_and_changes_nothing(run_copy):
    last = run_copy / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    before = folder_state(run_copy)
    process = resume_in_folder(run_copy)
    assert process.returncode == 1
    assert "no readable checkpoint to resume from" in process.stderr.splitlines()[-1]
    assert folder_state(run_copy) == before


def test_resume_auto_skips_an_empty_newer_checkpoint_and_continues_from_the_last(run_copy):
    (run_copy / "hpc_ckpt_1.ckpt").write_bytes(b"")  # newer than last.ckpt
    rows_before = (run_copy / "csv" / "metrics.csv").read_text().splitlines()
    process = resume_in_folder(run_copy)
    assert process.returncode == 0, process.stderr[-2000:]
    output = process.stdout + process.stderr
    assert "not resuming from" in output and "hpc_ckpt_1.ckpt" in output
    results = json.loads((run_copy / "results.json").read_text())
    assert results["epochs"] == 4 and epochs_in(run_copy / "checkpoints" / "last.ckpt") == 4
    rows_after = (run_copy / "csv" / "metrics.csv").read_text().splitlines()
    assert len(rows_after) > len(rows_before)  # the history continues


def test_a_finished_run_resumed_without_a_larger_budget_is_refused(run_copy):
    before = folder_state(run_copy)
    process = resume_in_folder(run_copy, "trainer.max_epochs=2")
    assert process.returncode == 1
    assert "already trained 2 epochs, and trainer.max_epochs=2" in process.stderr
    assert folder_state(run_copy) == before


def test_ckpt_path_of_another_family_or_data_set_is_refused_before_training(finished_run, tmp_path):
    last = finished_run / "checkpoints" / "last.ckpt"
    other_family = run_script(
        "train.py",
        *SMOKE,
        "model=gan",
        f"ckpt_path={last}",
        f"hydra.run.dir={tmp_path / 'a'}",
        check=False,
    )
    assert "holds a vae model, but the run configures a gan one" in other_family.stderr
    other_data = run_script(
        "train.py",
        *SMOKE,
        "data=shakespeare",
        "model=char_rnn",
        f"ckpt_path={last}",
        f"hydra.run.dir={tmp_path / 'b'}",
        check=False,
    )
    assert other_data.returncode == 1 and "holds a vae model" in other_data.stderr
    assert not (tmp_path / "a" / "checkpoints").exists()


def test_resume_candidates_are_taken_newest_first(run_copy):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*SHORT, "trainer.max_epochs=4"])
    with open_dict(cfg):
        cfg.data_name = "digits"  # what ${choice:data} says inside a Hydra run
    model = tiny_family("vae", latent_dim=16, channels=[32, 64])
    last = run_copy / "checkpoints" / "last.ckpt"
    assert checkpoint_to_resume(cfg, run_copy, model) == str(last)
    newer = run_copy / "hpc_ckpt_3.ckpt"
    shutil.copy(last, newer)
    assert checkpoint_to_resume(cfg, run_copy, model) == str(newer)
    with open_dict(cfg):
        cfg.resume = "never"
    assert checkpoint_to_resume(cfg, run_copy, model) is None


def test_metrics_csv_stays_until_its_continuation_is_written(run_copy, monkeypatch):
    from zoo.loggers import ContinuingCSVLogger

    before = (run_copy / "csv" / "metrics.csv").read_bytes()
    logger = ContinuingCSVLogger(save_dir=str(run_copy), name="csv", version="")
    logger.log_metrics({"train/loss": 1.0}, step=10_000)  # nothing saved yet: a crash here
    assert (run_copy / "csv" / "metrics.csv").read_bytes() == before
    logger.save()
    rows = (run_copy / "csv" / "metrics.csv").read_text().splitlines()
    assert len(rows) == len(before.decode().splitlines()) + 1


# 3. A debug run never replaces a judge ------------------------------------------------------


def test_a_debug_or_worse_classifier_run_never_replaces_the_judge(tmp_path):
    judges = tmp_path / "judges"
    shared = [f"paths.judges_dir={judges}", "trainer.accelerator=cpu"]
    train_run(tmp_path / "good", "experiment=classifier_digits", "trainer.max_epochs=3", *shared)
    judge = judges / "digits.ckpt"
    good = judge.read_bytes()
    accuracy = torch.load(judge, weights_only=True)[keys.ZOO]["judge"]["test_accuracy"]
    assert accuracy > 0.8
    train_run(tmp_path / "smoke", "experiment=classifier_digits", "debug=smoke", *shared)
    assert judge.read_bytes() == good
    one_batch = ["trainer.max_epochs=1", "trainer.limit_train_batches=1"]
    train_run(tmp_path / "worse", "experiment=classifier_digits", *one_batch, *shared)
    assert judge.read_bytes() == good  # kept, and the run said so
    train_run(
        tmp_path / "forced",
        "experiment=classifier_digits",
        *one_batch,
        *shared,
        "callbacks.export_judge.replace=always",
    )
    assert judge.read_bytes() != good


# 4. Every family stops on divergence -------------------------------------------------------


class PoisonAt(L.Callback):
    """Makes the family's loss NaN from optimizer step ``step`` on."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step >= self.step and not hasattr(pl_module, "_poisoned"):
            original = pl_module._step if pl_module.family != "diffusion" else pl_module._loss

            def poisoned(*args, **kwargs):
                return original(*args, **kwargs) * float("nan")

            if pl_module.family == "diffusion":
                pl_module._loss = poisoned
            elif pl_module.family == "gan":
                pl_module.discriminator_terms = _nan_terms(pl_module.discriminator_terms)
            else:
                pl_module._step = poisoned
            pl_module._poisoned = True


def _nan_terms(terms_of):
    def terms(*args, **kwargs):
        result = terms_of(*args, **kwargs)
        return {**result, "loss": result["loss"] * float("nan")}

    return terms


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_stops_at_the_first_non_finite_loss_and_saves_nothing_non_finite(
    family, tmp_path
):
    model = tiny_family(family).train()
    checkpoints = LastEpochCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=5,
        limit_val_batches=0,
        callbacks=[checkpoints, PoisonAt(step=2)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(
        TrainingDivergedError, match=rf"the {family} model diverged at .*last\.ckpt"
    ):
        trainer.fit(model, one_batch_loader(model))
    saved = load_checkpoint(tmp_path / "last.ckpt")
    assert all(
        torch.isfinite(t).all() for t in saved[keys.STATE_DICT].values() if t.is_floating_point()
    )
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no update was made


def test_sample_py_refuses_a_checkpoint_with_non_finite_weights(tmp_path):
    model = tiny_family("vae")
    checkpoint = checkpoint_of(model)
    checkpoint[keys.STATE_DICT]["decoder.from_latent.weight"][0, 0] = float("nan")
    save_tensor(checkpoint, tmp_path / "nan.ckpt")
    process = run_script("sample.py", f"ckpt_path={tmp_path / 'nan.ckpt'}", check=False)
    assert process.returncode == 1
    assert process.stderr.strip().splitlines()[-1].startswith("sample.py: ")
    assert "non-finite weights (decoder.from_latent.weight" in process.stderr


# 5. SIGTERM --------------------------------------------------------------------------------


def test_sigterm_saves_a_checkpoint_says_how_to_resume_and_exits_non_zero(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "train.py",
            "trainer.max_epochs=1000",
            "evaluation.enabled=false",
            "trainer.accelerator=cpu",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("train.py: interrupted by SIGTERM at step") and "resume" in message
    interrupted = run_dir / "checkpoints" / "interrupted.ckpt"
    assert load_checkpoint(interrupted)[keys.ZOO]["family"] == "vae"
    # the same command in the same folder picks it up
    resumed = run_script(
        "train.py",
        *SMOKE,
        "trainer.max_epochs=1000",
        "trainer.max_steps=60",
        f"hydra.run.dir={run_dir}",
        "evaluation.enabled=false",
        check=False,
    )
    assert f"resuming from {interrupted}" in resumed.stderr + resumed.stdout


# 6. Outputs that cannot be written ---------------------------------------------------------


def test_a_full_disk_leaves_the_old_file_and_says_no_space_left(tmp_path, monkeypatch):
    path = write_json(tmp_path / "results.json", {"old": 1})

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ZooError, match="no space left on the disk of .* while writing results"):
        write_json(path, {"new": 2})
    assert json.loads(path.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    path = write_json(tmp_path / "x.json", {"old": 1})
    with pytest.raises(KeyboardInterrupt), atomic_write(path, "w") as file:
        file.write('{"half": ')
        raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"old": 1}


@pytest.mark.parametrize("obstacle", ["file", "read_only"])
def test_sample_py_checks_its_output_folder_before_sampling(finished_run, tmp_path, obstacle):
    out = tmp_path / "out"
    if obstacle == "file":
        out.write_text("in the way")
    else:
        out.mkdir()
        out.chmod(0o500)
    if obstacle == "read_only" and os.access(out, os.W_OK):
        pytest.skip("running as a user that can write to read-only folders (root)")
    process = run_script(
        "sample.py",
        f"ckpt_path={finished_run / 'checkpoints' / 'last.ckpt'}",
        f"output_dir={out}",
        check=False,
    )
    assert process.returncode == 1
    assert process.stderr.strip().splitlines()[-1].startswith("sample.py: cannot write samples to")


# 9. A failed evaluation keeps the run's record ---------------------------------------------


def test_a_failed_evaluation_is_recorded_in_results_json_not_fatal(tmp_path):
    judges = tmp_path / "judges"
    judges.mkdir()
    (judges / "digits.ckpt").write_bytes(b"not a checkpoint")  # a judge that cannot be read
    results = train_run(tmp_path / "run", *SHORT[:-1], f"paths.judges_dir={judges}")
    assert "cannot be read as a PyTorch checkpoint" in results["evaluation_error"]
    assert Path(results["checkpoints"]["last"]).is_file()
    assert results["test"]["test/bpd"] > 0
