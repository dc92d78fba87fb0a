"""Sweeps and several processes, run as a user runs them: Optuna studies in SQLite, a grid
through submitit's local executor, DDP on two CPU processes."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from conftest import ROOT, train_in_process
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from PIL import Image

from hydra_plugins.zoo_optuna_sweeper.optuna_sweeper import parameter
from zoo.callbacks import OptunaPruning
from zoo.runner.train import _wandb_resume

# One batch of train and val; no test pass, evaluation, sample grids or plots: a job of ~2 s.
QUICK = [
    "debug=smoke",
    "trainer.accelerator=cpu",
    "test=false",
    "evaluation.enabled=false",
    "callbacks.sample_writer=null",
    "callbacks.curves=null",
]
# DDP against one process: the whole training split in one global batch (1,436 digits, an
# even split, so that neither process gets a repeated image) for four plain SGD steps.
FULL_BATCH_SGD = [
    *QUICK,
    "trainer.max_epochs=4",
    "trainer.limit_train_batches=1",
    "data.test_fraction=0.1007",
    "model.optimizer._target_=torch.optim.SGD",
    "model.optimizer.lr=0.05",
    "model.scheduler=null",
]


def optuna_sweep(sweep_dir: Path, storage: str, *overrides: str) -> list[str]:
    """Return the train.py arguments of a vae_optuna sweep into ``sweep_dir`` on ``storage``."""
    return [
        "-m",
        "hparams_search=vae_optuna",
        *QUICK,
        f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]


def load_trials(storage: str, study_name: str = "vae_digits") -> list:
    """Return the trials of a study, by number."""
    study = optuna.load_study(study_name=study_name, storage=storage)
    return sorted(study.get_trials(), key=lambda trial: trial.number)


def start_script(script: str, *overrides: str) -> subprocess.Popen:
    """Return the running process of ``python script overrides…``, started in the repository."""
    # One thread each: these runs share two cores, where more threads only wait on each other.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, script, *overrides],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen) -> str:
    """Return the output of a process started by start_script, once it exited successfully."""
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-4000:]
    return output


@dataclass
class Started:
    """Processes started in the background, writing under ``root``."""

    root: Path
    processes: list[subprocess.Popen]

    def finish(self) -> None:
        for process in self.processes:
            finish(process)


def start_grid_through_submitit(root: Path) -> Started:
    """python train.py -m hydra/launcher=local seed=1,2: a job per seed, each in its process."""
    sweep = ["-m", "hydra/launcher=local", "seed=1,2", *QUICK, f"hydra.sweep.dir={root}"]
    return Started(root, [start_script("train.py", *sweep)])


def start_ddp(root: Path) -> Started:
    """python train.py trainer=ddp on two CPU processes, batch 1024 on each."""
    ddp = ["trainer=ddp", "trainer.devices=2", "data.batch_size=1024", f"hydra.run.dir={root}"]
    return Started(root, [start_script("train.py", *FULL_BATCH_SGD, *ddp)])


# The slow runs, by the test that checks them.
SLOW_RUNS = {
    "test_grid_sweep_through_submitit_runs_each_job_and_summarises_at_the_root": (
        start_grid_through_submitit
    ),
    "test_ddp_on_two_cpu_processes_matches_one_process_with_the_same_global_batch": start_ddp,
}


@pytest.fixture(scope="module", autouse=True)
def slow_runs(request, tmp_path_factory) -> dict[str, Started]:
    """Starts the slow runs of the selected tests when the module starts, so that they share
    the cores with each other and with the Optuna tests meanwhile; each test waits for its
    own (``slow_runs[test name]``)."""
    selected = {item.originalname for item in request.session.items}
    runs = {
        name: start(tmp_path_factory.mktemp("run"))
        for name, start in SLOW_RUNS.items()
        if name in selected
    }
    yield runs
    for run in runs.values():
        for process in run.processes:
            if process.poll() is None:
                process.kill()


# Optuna ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """A three-trial vae_optuna study in an SQLite file, and the first sweep's folder."""
    root = tmp_path_factory.mktemp("study")
    storage = f"sqlite:///{root / 'optuna.db'}"
    finish(
        start_script("train.py", *optuna_sweep(root / "first", storage, "hydra.sweeper.n_trials=3"))
    )
    return {"root": root, "storage": storage, "first": root / "first"}


def test_optuna_sweep_runs_its_trials_and_writes_best_params_and_history(study):
    trials = load_trials(study["storage"])
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert {"model.latent_dim", "model.beta", "model.optimizer.lr"} <= trials[0].params.keys()
    assert 0.5 <= trials[0].params["model.beta"] <= 2.0

    report = yaml.safe_load((study["first"] / "best_params.yaml").read_text())
    best = min(trials, key=lambda t: t.value)
    assert (report["study_name"], report["metric"]) == ("vae_digits", "val/bpd")
    assert report["trials"] == {"COMPLETE": 3}
    assert report["best"]["trial"] == best.number
    assert report["best"]["value"] == pytest.approx(best.value)
    assert report["best"]["params"] == best.params
    # The best run's folder holds what it says: the value is its val/bpd.
    results = json.loads((Path(report["best"]["run_dir"]) / "results.json").read_text())
    assert results["val"]["val/bpd"] == pytest.approx(best.value)
    assert f"model.beta={best.params['model.beta']!r}" in report["best"]["overrides"]
    with Image.open(study["first"] / "optimization_history.png") as plot:
        assert plot.width > 300
    # Each trial is a Hydra job with its own folder and results; the sweep root ranks them.
    assert len(list(study["first"].glob("[0-9]/results.json"))) == 3
    leaderboard = (study["first"] / "leaderboard.md").read_text()
    assert "sorted by val/bpd" in leaderboard and leaderboard.count("| vae | digits |") == 3


def test_the_same_sweep_on_two_workers_at_once_resumes_the_study_to_n_trials_in_all(study):
    # The same command again, with n_trials=5, from two processes at once on the one
    # database: two trials are added in all, not two per worker. A fixed override makes them
    # impossible (four halvings of 8×8 digits): each is recorded as failed, with the reason,
    # and the sweeps go on and finish.
    rerun = [
        optuna_sweep(
            study["root"] / f"worker{i}",
            study["storage"],
            "hydra.sweeper.n_trials=5",
            "model.channels=[8,8,8,8]",
        )
        for i in range(2)
    ]
    outputs = [finish(worker) for worker in [start_script("train.py", *r) for r in rerun]]
    trials = load_trials(study["storage"])
    # A worker that asks just after the other took the last number hands its trial back
    # (WAITING: the next run takes it), so the study never holds more than n_trials.
    counted = [t for t in trials if t.state != TrialState.WAITING]
    assert [t.number for t in counted] == [0, 1, 2, 3, 4]
    assert len(trials) - len(counted) <= 1
    assert [t.state for t in counted[3:]] == [TrialState.FAIL, TrialState.FAIL]
    assert all("H and W must be multiples of 16" in t.user_attrs["failure"] for t in counted[3:])
    assert "".join(outputs).count("the study goes on") == 2
    for i in range(2):
        report = yaml.safe_load((study["root"] / f"worker{i}" / "best_params.yaml").read_text())
        assert report["best"]["trial"] in (0, 1, 2)  # the study's best, from the first sweep


def test_a_sweep_refuses_a_storage_or_direction_that_cannot_work_in_one_line(study, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    refused = {
        "text": optuna_sweep(tmp_path / "a", f"sqlite:///{notes}"),
        # the first sweep's study minimises val/bpd: Optuna would keep that without a word
        "direction": optuna_sweep(
            tmp_path / "b", study["storage"], "hydra.sweeper.direction=maximize"
        ),
    }
    processes = {name: start_script("train.py", *arguments) for name, arguments in refused.items()}
    outputs = {name: process.communicate(timeout=300)[0] for name, process in processes.items()}
    assert all(process.returncode == 1 for process in processes.values()), outputs
    assert outputs["text"].strip().splitlines()[-1] == (
        f"train.py: hydra.sweeper.storage=sqlite:///{notes}: {notes} is not an SQLite database "
        "(it begins b'not a da'): name a new file or an Optuna SQLite database"
    )
    assert outputs["direction"].strip().splitlines()[-1] == (
        f"train.py: study vae_digits in {study['storage']} is set to minimize, and "
        "hydra.sweeper.direction=maximize cannot change that: pass "
        "hydra.sweeper.direction=minimize, or a new hydra.sweeper.study_name"
    )
    assert "Traceback" not in "".join(outputs.values())
    assert notes.read_text() == "not a database\n"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# Workers that create one new study together: each process waits for a go file, then opens
# the storage and creates (or loads) the study; ROUNDS fresh databases in a row.
CREATE_TOGETHER = """
import sys, time
from pathlib import Path
import optuna
from zoo.sweeps import open_storage
optuna.logging.set_verbosity(optuna.logging.WARNING)
root, worker, rounds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for round in range(rounds):
    (root / f"ready{round}.{worker}").touch()
    while not (root / f"go{round}").exists():
        time.sleep(0.001)
    storage = open_storage(f"sqlite:///{root / f'optuna{round}.db'}", heartbeat_interval=60)
    study = optuna.create_study(study_name="new", storage=storage, load_if_exists=True)
    print(round, study._study_id, flush=True)
"""


def test_three_workers_started_together_on_a_new_sqlite_study_all_start(tmp_path):
    rounds, workers = 5, 3
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE_TOGETHER, str(tmp_path), str(worker), str(rounds)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for worker in range(workers)
    ]
    try:
        for round in range(rounds):
            while len(list(tmp_path.glob(f"ready{round}.*"))) < workers:
                if any(process.poll() is not None for process in processes):
                    break  # a worker died: let the others go on, and fail below
                time.sleep(0.01)
            (tmp_path / f"go{round}").touch()  # all at once, on a database nobody created yet
        outputs = [process.communicate(timeout=300)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    assert [process.returncode for process in processes] == [0] * workers, outputs
    for output in outputs:  # one study per database, the same for every worker
        assert output.split() == [str(n) for round in range(rounds) for n in (round, 1)]


def test_a_study_extended_in_the_same_sweep_folder_runs_each_new_trial_in_its_own(tmp_path):
    # README's way to extend a study, with the fixed folder a cluster job uses: trial 4 ran
    # in job folder 0, found trial 0's last.ckpt there and resumed it (resume=auto).
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep_dir = tmp_path / "sweep"
    for n_trials in (4, 6):
        finish(
            start_script(
                "train.py", *optuna_sweep(sweep_dir, storage, f"hydra.sweeper.n_trials={n_trials}")
            )
        )
    trials = load_trials(storage)
    assert [(t.number, t.state) for t in trials] == [(n, TrialState.COMPLETE) for n in range(6)]
    for trial in trials:
        run_dir = sweep_dir / str(trial.number)
        assert trial.user_attrs["run_dir"] == str(run_dir)
        overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
        assert f"++optuna.trial_number={trial.number}" in overrides
        assert f"model.latent_dim={trial.params['model.latent_dim']}" in overrides
        results = json.loads((run_dir / "results.json").read_text())
        assert results["global_step"] == 1  # one batch of its own: nothing resumed
        assert "resuming from" not in (run_dir / "train.log").read_text()
        assert results["val"]["val/bpd"] == pytest.approx(trial.value)
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == [str(n) for n in range(6)]


def test_a_sweep_folder_holding_another_studys_runs_is_refused_before_any_trial(tmp_path):
    # A new study (the old database deleted) in the old sweep folder: its trial 0 would
    # find the old trial 0's checkpoints in folder 0 and resume them.
    sweep_dir = tmp_path / "sweep"
    (sweep_dir / "0" / "checkpoints").mkdir(parents=True)
    (sweep_dir / "0" / "checkpoints" / "last.ckpt").write_bytes(b"another study's weights")
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    process = start_script("train.py", *optuna_sweep(sweep_dir, storage))
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 1
    assert output.strip().splitlines()[-1] == (
        f"train.py: {sweep_dir / '0'} holds a run that is not trial 0 of study vae_digits, and "
        f"trial 0 would resume it: pass a new hydra.sweep.dir (or move {sweep_dir} away)"
    )
    assert optuna.get_all_study_names(storage) == []  # no study was created


def test_a_sweep_interrupted_by_sigterm_stops_and_resumes_the_trial_where_it_stopped(tmp_path):
    # SIGTERM (a scheduler's preemption) during a trial stops the whole sweep, as it stops a
    # single run, instead of going on to the next trial; the trial keeps its number,
    # parameters and folder, and the same command resumes it from its interrupted.ckpt.
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep = optuna_sweep(tmp_path / "sweep", storage, "hydra.sweeper.n_trials=2")
    sweep.append("trainer.max_epochs=100000")
    process = start_script("train.py", *sweep)
    checkpoint = tmp_path / "sweep" / "0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not checkpoint.is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 143, output[-3000:]
    assert "train.py: the sweep was interrupted by SIGTERM during trial(s) 0;" in output
    assert not (tmp_path / "sweep" / "1").exists()  # the next trial never started
    (interrupted,) = load_trials(storage)
    assert interrupted.state == TrialState.WAITING
    params = interrupted.params
    step = torch.load(checkpoint.with_name("interrupted.ckpt"), weights_only=True)["global_step"]

    output = finish(start_script("train.py", *sweep, f"trainer.max_steps={step + 2}"))
    assert f"resuming from {checkpoint.with_name('interrupted.ckpt')}" in output
    trials = load_trials(storage)
    assert [(t.number, t.state) for t in trials] == [
        (0, TrialState.COMPLETE),
        (1, TrialState.COMPLETE),
    ]
    assert trials[0].params == params
    results = json.loads((tmp_path / "sweep" / "0" / "results.json").read_text())
    assert results["global_step"] == step + 2


def test_search_space_syntax_maps_to_optuna_distributions():
    parser = OverridesParser.create()

    def parsed(text: str):
        return parameter(parser.parse_override(text))

    latent = parsed("model.latent_dim=choice(8, 16, 32)")
    assert latent.distribution == CategoricalDistribution([8, 16, 32])
    assert latent.override(16) == "model.latent_dim=16"
    channels = parsed("model.channels=choice([32,64],[64,128])")
    assert channels.distribution.choices == ("[32,64]", "[64,128]")
    assert channels.override("[64,128]") == "model.channels=[64,128]"
    assert parsed("model.beta=interval(0.5, 2.0)").distribution == FloatDistribution(0.5, 2.0)
    lr = parsed("model.optimizer.lr=tag(log, interval(1e-4, 1e-2))")
    assert lr.distribution == FloatDistribution(1e-4, 1e-2, log=True)
    assert lr.override(3e-4) == "model.optimizer.lr=0.0003"
    assert parsed("data.batch_size=range(16, 129, 16)").distribution == IntDistribution(
        16, 128, step=16
    )
    assert parsed("model.num_layers=tag(int, interval(1, 4))").distribution == IntDistribution(1, 4)


def test_pruning_callback_reports_each_validation_and_stops_a_trial_the_pruner_rejects(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="pruned", storage=storage)
    trial = study.ask()
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "upper": 1.0}
    callback = OptunaPruning(storage, "pruned", trial.number, pruner, monitor="val/loss")
    trainer = SimpleNamespace(
        is_global_zero=True,
        sanity_checking=False,
        callback_metrics={},
        strategy=SimpleNamespace(broadcast=lambda value, src: value),
    )
    callback.setup(trainer, None, "fit")
    trainer.callback_metrics = {"val/loss": torch.tensor(0.5)}
    callback.on_validation_end(trainer, None)  # below the threshold: goes on
    trainer.callback_metrics = {"val/loss": torch.tensor(2.0)}
    with pytest.raises(optuna.TrialPruned, match="val/loss=2 at validation 2"):
        callback.on_validation_end(trainer, None)
    assert load_trials(storage, "pruned")[0].intermediate_values == {1: 0.5, 2: 2.0}


# A grid sweep through submitit -------------------------------------------------------------


def test_grid_sweep_through_submitit_runs_each_job_and_summarises_at_the_root(slow_runs):
    run = slow_runs["test_grid_sweep_through_submitit_runs_each_job_and_summarises_at_the_root"]
    run.finish()
    sweep_dir = run.root
    seeds = [json.loads((sweep_dir / job / "results.json").read_text())["seed"] for job in "01"]
    assert seeds == [1, 2]
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2  # through submitit
    leaderboard = (sweep_dir / "leaderboard.md").read_text()
    assert "2 runs" in leaderboard and "sorted by val/loss" in leaderboard
    assert "seed=1" in leaderboard and "seed=2" in leaderboard
    assert (sweep_dir / "leaderboard_metrics.png").is_file()


# DDP ---------------------------------------------------------------------------------------


def val_losses(run_dir: Path) -> list[float]:
    """Return the val/loss after each epoch, from the run's CSV log."""
    with open(run_dir / "csv" / "metrics.csv") as file:
        return [float(row["val/loss"]) for row in csv.DictReader(file) if row.get("val/loss")]


def test_ddp_on_two_cpu_processes_matches_one_process_with_the_same_global_batch(
    slow_runs, tmp_path
):
    # trainer=ddp on 2 CPU processes with batch 1024 each (start_ddp), and one process with
    # batch 2048, here: the same SGD steps on the same global batch. What remains is the
    # VAE's sampling noise, which the processes draw separately.
    train_in_process(tmp_path, *FULL_BATCH_SGD, "data.batch_size=2048")
    ddp = slow_runs["test_ddp_on_two_cpu_processes_matches_one_process_with_the_same_global_batch"]
    ddp.finish()
    ddp_dir = ddp.root

    results = json.loads((ddp_dir / "results.json").read_text())
    assert results["global_step"] == 4
    # Only rank 0 wrote: the second process logged to its own file, and nothing else.
    assert sorted(path.name for path in ddp_dir.glob("*.log")) == [
        "train.log",
        "train_ddp_process_1.log",
    ]
    curve, ddp_curve = val_losses(tmp_path), val_losses(ddp_dir)
    assert curve[0] - curve[-1] > 0.01  # it learned...
    assert ddp_curve == pytest.approx(curve, abs=2e-5)  # ...the same on two processes
    weights = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    ddp_weights = torch.load(ddp_dir / "checkpoints" / "last.ckpt", weights_only=True)
    difference = sum(
        (weights["state_dict"][k] - ddp_weights["state_dict"][k]).norm() ** 2
        for k in weights["state_dict"]
    )
    norm = sum(tensor.norm() ** 2 for tensor in weights["state_dict"].values())
    # A different global batch (1024 on one process) differs by 8e-6; these by under 1e-6.
    assert (difference / norm).sqrt() < 3e-6


# Requeue -----------------------------------------------------------------------------------


def test_a_job_started_again_in_its_run_folder_resumes_from_its_last_checkpoint(tmp_path):
    # What a requeued cluster job does: the same job, in the same run folder (resume=auto).
    # (the cosine schedule spans the whole job, as it does for a requeued job's own config)
    cosine = "model.scheduler.total_steps=2"
    train_in_process(tmp_path / "job", *QUICK, "trainer.max_epochs=1", cosine)
    train_in_process(tmp_path / "job", *QUICK, "trainer.max_epochs=2", cosine)
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    assert (results["global_step"], results["epochs"]) == (2, 2)
    # metrics.csv continues, and reads as that of a job never interrupted (exact resume)
    train_in_process(tmp_path / "whole", *QUICK, "trainer.max_epochs=2", cosine)
    resumed = (tmp_path / "job" / "csv" / "metrics.csv").read_text()
    whole = (tmp_path / "whole" / "csv" / "metrics.csv").read_text()
    assert {row["epoch"] for row in csv.DictReader(io.StringIO(resumed))} >= {"0", "1"}
    assert resumed == whole


def test_wandb_logger_gets_one_run_id_kept_in_the_run_folder(tmp_path):
    logger = OmegaConf.create({"_target_": "lightning.pytorch.loggers.WandbLogger", "id": None})
    first = _wandb_resume(logger, tmp_path)["id"]
    assert _wandb_resume(logger, tmp_path) == {"id": first}  # the requeued job's too
    assert (tmp_path / "wandb_id").read_text().strip() == first
    assert _wandb_resume(OmegaConf.create({"_target_": "x.CSVLogger"}), tmp_path) == {}


def test_a_grid_stopped_by_a_failed_job_still_summarises_the_jobs_that_ran(tmp_path):
    # Hydra's grid sweeper stops at the failing job (batch size 0) without ending the
    # multirun; the summary is written when the job fails.
    sweep = ["-m", "data.batch_size=64,0", *QUICK, f"hydra.sweep.dir={tmp_path}"]
    process = start_script("train.py", *sweep)
    output, _ = process.communicate(timeout=300)
    assert process.returncode != 0 and "batch_size" in output
    table = (tmp_path / "leaderboard.md").read_text()
    assert table.startswith("# Leaderboard: 1 runs")  # the job with batch size 64
