"""The data order is a function of (seed, epoch, rank): a run resumed mid-epoch continues the
interrupted one batch for batch and loss for loss."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import ROOT
from lightning.pytorch.callbacks import ModelCheckpoint
from test_sweeps import train_in_process

from zoo.data import DigitsDataModule, TextFileDataModule
from zoo.models import VAE, CharRNN


def row_hashes(x: torch.Tensor) -> list[str]:
    """Return a short hash of each example of a batch."""
    return [hashlib.sha1(row.numpy().tobytes()).hexdigest()[:12] for row in x]


class StepLog(L.Callback):
    """Records, per training step, the hashes of the batch's examples and the loss."""

    def __init__(self):
        self.steps: dict[int, tuple[list[str], float]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps[trainer.global_step] = (row_hashes(batch[0]), float(outputs["loss"]))


def fit(build, data, run_dir: Path, max_steps: int, every: int, ckpt_path=None):
    """Return the step log of a CPU run of ``build(spec)`` on ``data`` up to ``max_steps``,
    saving a checkpoint every ``every`` steps (mid-epoch, as a cluster's requeue path does)."""
    L.seed_everything(0)  # what the runner does first, in the interrupted and the resumed run
    model = build(data.spec.to_dict())
    log = StepLog()
    checkpoints = ModelCheckpoint(
        dirpath=run_dir, every_n_train_steps=every, save_top_k=-1, save_last=False
    )
    trainer = L.Trainer(
        default_root_dir=run_dir,
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        limit_val_batches=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[log, checkpoints],
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    return log.steps


def char_rnn(spec):
    return CharRNN(spec, embedding_dim=8, hidden_size=16, num_layers=1, dropout=0.0)


def vae(spec):
    return VAE(spec, latent_dim=4, channels=[8])


def corpus_data(tmp_path: Path, **options) -> TextFileDataModule:
    path = tmp_path / "corpus.txt"
    if not path.exists():
        letters = np.random.default_rng(0).choice(list("abcdefghij \n"), size=2000)
        path.write_text("".join(letters), encoding="utf-8")
    # 10 steps an epoch of 4 windows of 8 characters
    return TextFileDataModule(
        path=str(path),
        tokens_dir=str(tmp_path / "tokens"),
        block_size=8,
        batch_size=4,
        samples_per_epoch=40,
        val_windows=8,
        **options,
    )


@pytest.mark.parametrize(
    ("build", "make_data", "stop", "end", "served"),
    [
        # checkpoint at step 13, 3 batches of 4 into the second epoch of 10; resume to step 25
        (char_rnn, corpus_data, 13, 25, 12),
        # the same with two loader workers, which fetch ahead of the step the checkpoint is at
        (char_rnn, lambda tmp_path: corpus_data(tmp_path, num_workers=2), 13, 25, 12),
        # 1,437 training digits in batches of 256: 6 steps an epoch; step 8 is mid-epoch 2
        (vae, lambda tmp_path: DigitsDataModule(batch_size=256), 8, 15, 512),
    ],
    ids=["char_rnn_text", "char_rnn_text_workers", "vae_digits"],
)
def test_a_run_resumed_mid_epoch_continues_the_batches_and_losses_of_the_uninterrupted_run(
    tmp_path, build, make_data, stop, end, served, caplog
):
    whole = fit(build, make_data(tmp_path), tmp_path / "whole", end, every=stop)
    (checkpoint,) = (tmp_path / "whole").glob(f"epoch=1-step={stop}.ckpt")
    saved = torch.load(checkpoint, weights_only=True)
    (loader_state,) = saved["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert (loader_state["epoch"], loader_state["consumed"]) == (1, served)

    with caplog.at_level(logging.WARNING):
        resumed = fit(
            build, make_data(tmp_path), tmp_path / "resumed", end, every=stop, ckpt_path=checkpoint
        )
    assert sorted(resumed) == list(range(stop + 1, end + 1))
    for step in resumed:
        assert resumed[step][0] == whole[step][0], f"other examples at step {step}"
        assert resumed[step][1] == pytest.approx(whole[step][1], rel=1e-6), f"step {step}"
    assert "not resumable" not in caplog.text and "will not repeat" not in caplog.text


# Two processes (DDP on CPU, gloo), through train.py --------------------------------------------


class WindowHashes(L.Callback):
    """Writes, per process, the hashes of each training step's windows to ``<folder>/rank<r>.json``.

    Instantiated by train.py from ``+callbacks.window_hashes._target_=test_data_order.…``.
    """

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.steps: dict[int, list[str]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps[trainer.global_step] = row_hashes(batch[0].cpu())

    def on_train_end(self, trainer, pl_module):
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.steps))


def ddp_overrides(family: str, root: Path, corpus: Path, batch_size: int) -> list[str]:
    """Return train.py's overrides for 8 steps of a tiny model of ``family`` on ``corpus``."""
    model = {
        "gpt": [
            "experiment=gpt_shakespeare_cpu",
            "model.n_layer=1",
            "model.n_head=2",
            "model.n_embd=16",
            "model.scheduler.warmup_steps=2",
            "data.tokenizer=byte",  # windows hold a varying number of characters
        ],
        "char_rnn": [
            "experiment=char_rnn_shakespeare",
            "model.hidden_size=16",
            "model.num_layers=1",
            "model.scheduler=null",
        ],
    }[family]
    return [
        *model,
        "data=text_file",
        f"data.path={corpus}",
        f"data.tokens_dir={root / 'tokens'}",
        "data.block_size=16",
        f"data.batch_size={batch_size}",
        "data.samples_per_epoch=32",  # 4 steps an epoch of a global batch of 8
        "data.val_windows=10",  # 5 for each process
        "++trainer.max_steps=8",
        "trainer.max_epochs=-1",
        "trainer.accelerator=cpu",
        "test=false",
        "evaluation.enabled=false",
        "callbacks.sample_writer=null",
        "callbacks.curves=null",
        "+callbacks.window_hashes._target_=test_data_order.WindowHashes",
        f"+callbacks.window_hashes.folder={root / 'windows'}",
    ]


def write_corpus(root: Path) -> Path:
    """Write random letters, some of them two or three UTF-8 bytes long."""
    path = root / "corpus.txt"
    letters = np.random.default_rng(1).choice(list("abcdéfghiĳ日 \n"), size=3000)
    path.write_text("".join(letters), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.Popen]]:
    """Starts train.py trainer=ddp on two CPU processes, batch 4 each, for both text families at
    once, in the background; each test waits for its own."""
    runs = {}
    for family in ("gpt", "char_rnn"):
        root = tmp_path_factory.mktemp(f"ddp_{family}")
        overrides = ddp_overrides(family, root, write_corpus(root), batch_size=4)
        ddp = ["trainer=ddp", "trainer.devices=2", f"hydra.run.dir={root / 'run'}"]
        tests = str(Path(__file__).parent)
        python_path = os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": python_path, "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(
            [sys.executable, "train.py", *overrides, *ddp],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        runs[family] = (root, process)
    yield runs
    for _, process in runs.values():
        if process.poll() is None:
            process.kill()


def metric_rows(run_dir: Path, name: str) -> list[float]:
    """Return the values of ``name`` in a run's CSV log, in order."""
    with open(run_dir / "csv" / "metrics.csv") as file:
        return [float(row[name]) for row in csv.DictReader(file) if row.get(name)]


@pytest.mark.slow  # train.py on two processes, and once more in this one
@pytest.mark.parametrize("family", ["gpt", "char_rnn"])
def test_ddp_ranks_read_disjoint_windows_that_together_are_one_process_global_batch(
    family, ddp_runs, tmp_path
):
    root, process = ddp_runs[family]
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-4000:]
    # One process with the global batch (8), on the same corpus and seed.
    single = tmp_path / "single"
    single.mkdir()
    train_in_process(single, *ddp_overrides(family, single, write_corpus(single), batch_size=8))

    ranks = [json.loads((root / "windows" / f"rank{r}.json").read_text()) for r in (0, 1)]
    alone = json.loads((single / "windows" / "rank0.json").read_text())
    assert sorted(ranks[0]) == sorted(ranks[1]) == sorted(alone) and len(alone) == 8
    for step, windows in alone.items():
        first, second = ranks[0][step], ranks[1][step]
        assert len(first) == len(second) == 4
        assert not set(first) & set(second), f"the processes share a window at step {step}"
        assert sorted(first + second) == sorted(windows), f"not the global batch at step {step}"
    # The same steps on the same global batch: the same validation, averaged over processes
    # that scored 5 of the 10 windows each.
    for metric in ("val/loss", "val/bits_per_char"):
        ddp, one = metric_rows(root / "run", metric), metric_rows(single, metric)
        assert len(ddp) == len(one) == 2
        assert ddp == pytest.approx(one, rel=1e-4)
