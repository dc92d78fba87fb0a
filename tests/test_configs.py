"""Every preset in conf/ composes the way train.py composes it, and every object it names builds."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import checkpoint_of
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import (
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.profilers import SimpleProfiler
from omegaconf import DictConfig, OmegaConf, open_dict

from zoo.callbacks import EMA, CurvePlotter, SampleWriter
from zoo.models import FAMILIES
from zoo.outputs import save_tensor
from zoo.runner import build_model, sample_options  # importing it registers run_id, choice

CONFIG_DIR = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))
DEBUG_PRESETS = sorted(path.stem for path in (CONFIG_DIR / "debug").glob("*.yaml"))
TRAINERS = sorted(path.stem for path in (CONFIG_DIR / "trainer").glob("*.yaml"))

# What each data set looks like, (C, H, W), levels and classes: known before any file is read.
IMAGE_SPECS = {
    "digits": ((1, 8, 8), 17, 10),
    "mnist": ((1, 28, 28), 256, 10),
    "mnist5k": ((1, 28, 28), 256, 10),
    "fashion_mnist": ((1, 28, 28), 256, 10),
    "cifar10": ((3, 32, 32), 256, 10),
}
TEXT_DATA = {"shakespeare"}
# A model config is named after its family (conf/model/<family>.yaml); latent_flow is the flow
# family's config with a first stage required.
FAMILY_CLASSES = {**FAMILIES, "latent_flow": FAMILIES["flow"]}
PLAIN_TYPES = (dict, list, str, int, float, bool, type(None))


@pytest.fixture
def compose_train(tmp_path):
    """Return a function that composes train.yaml as train.py does, writing under tmp_path.

    The Hydra run config is installed so that ``${hydra:...}`` resolves (``name`` reads
    the chosen groups); the run folder and the data folder lie in tmp_path, and the data
    folder does not exist, so nothing can be read from (or written to) a real one.
    """

    def compose_train_(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.data_dir = str(tmp_path / "data")
        return cfg

    yield compose_train_
    HydraConfig.instance().cfg = None  # leave no run config behind for other tests


def instantiate_group(group: DictConfig | None) -> dict[str, Any]:
    """Return the objects of a ``name: {_target_: ...}`` group by name, skipping nulls."""
    return {name: instantiate(entry) for name, entry in (group or {}).items() if entry is not None}


def instantiate_cpu_trainer(cfg: DictConfig, callbacks=(), loggers=()) -> Trainer:
    """Return the configured Trainer with the GPU presets' accelerator and precision made CPU's
    (FSDP, which runs on GPUs only, becomes the default strategy; test_contract builds it)."""
    strategy = OmegaConf.select(cfg, "trainer.strategy._target_") or ""
    gpu_only = {"strategy": "auto"} if strategy.endswith("FSDPStrategy") else {}
    return instantiate(
        cfg.trainer,
        accelerator="cpu",
        precision="32-true",
        **gpu_only,
        callbacks=list(callbacks),
        logger=list(loggers) or False,
    )


def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
    """Return the leaf values of a nested container by dotted key."""
    if not isinstance(node, dict):
        return {prefix: node}
    flat = {}
    for key, value in node.items():
        flat.update(leaves(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def preset_values(group: str, name: str) -> dict[str, Any]:
    """Return the values a preset file sets, by dotted key, without its defaults list."""
    values = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / group / f"{name}.yaml"))
    values.pop("defaults", None)
    return leaves(values)


def non_plain_values(value: Any, where: str = "hparams") -> list[str]:
    """Return where ``value`` holds anything but dict, list, str, int, float, bool or None."""
    if type(value) not in PLAIN_TYPES:
        return [f"{where}: {type(value).__name__}"]
    if isinstance(value, dict):
        return [
            problem
            for key, item in value.items()
            for problem in (
                ([f"{where} key {key!r}"] if type(key) is not str else [])
                + non_plain_values(item, f"{where}.{key}")
            )
        ]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in non_plain_values(item, f"{where}[{i}]")]
    return []


# Each two-stage preset and the preset of its first stage (a new one must be added here).
STAGE_ONE_PRESETS = {
    "vq_gpt_digits": "vqvae_digits",
    "vq_gpt_mnist5k": "vqvae_mnist5k",
    "vq_gpt_cifar10": "vqvae_cifar10",
    "latent_flow_digits": "vae_spatial_digits",
    "latent_flow_mnist5k": "vae_spatial_mnist5k",
    "latent_flow_cifar10": "vae_spatial_cifar10",
}


def stage_one_of(compose_train, experiment: str) -> list[str]:
    """Return ``model.stage_one=PATH`` for a two-stage preset, PATH a checkpoint of a model
    of its first stage's preset as train.py writes it (untrained); [] for other presets."""
    first = STAGE_ONE_PRESETS.get(experiment)
    if first is None:
        return []
    cfg = compose_train(f"experiment={first}")
    model = build_model(cfg.model, instantiate(cfg.data).spec.to_dict())
    path = save_tensor(checkpoint_of(model), Path(cfg.paths.output_dir) / f"{first}.ckpt")
    return [f"model.stage_one={path}"]


# Experiments -------------------------------------------------------------------------------


def test_experiment_folder_holds_presets_of_both_families():
    # Guards the glob below: an emptied or moved folder would otherwise test nothing.
    assert {"vae_digits", "vae_mnist", "char_rnn_shakespeare"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_is_named_after_its_file_and_its_values_win(compose_train, experiment):
    cfg = compose_train(f"experiment={experiment}")
    assert cfg.name == experiment
    assert cfg.hydra.run.dir.startswith(f"outputs/{experiment}/")
    composed = leaves(OmegaConf.to_container(cfg, resolve=False))
    for key, value in preset_values("experiment", experiment).items():
        assert composed[key] == value, f"experiment={experiment} sets {key}={value!r}"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_two_stage_preset_names_the_preset_of_its_first_stage_on_the_same_data(
    compose_train, experiment
):
    cfg = compose_train(f"experiment={experiment}")
    cls = get_class(cfg.model._target_)
    # A family that needs a first stage (vq_prior), or a config that asks for one of a family
    # that also works on pixels (model=latent_flow, of the flow family).
    asked = OmegaConf.is_missing(cfg.model, "stage_one")
    two_stage = asked or (bool(cls.stage_one_families) and cls.family != "flow")
    assert two_stage == (experiment in STAGE_ONE_PRESETS)
    if two_stage:
        first = compose_train(f"experiment={STAGE_ONE_PRESETS[experiment]}")
        assert first.hydra.runtime.choices.data == cfg.hydra.runtime.choices.data


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_data_spec_is_static_and_needs_no_files(compose_train, tmp_path, experiment):
    cfg = compose_train(f"experiment={experiment}")
    data = cfg.hydra.runtime.choices.data
    spec = instantiate(cfg.data).spec
    if data in IMAGE_SPECS:
        shape, num_levels, num_classes = IMAGE_SPECS[data]
        if cfg.data.get("image_size"):  # a preset may resize (e.g. MNIST padded to 32×32)
            shape = (shape[0], cfg.data.image_size, cfg.data.image_size)
        assert (spec.modality, spec.shape) == ("image", shape)
        assert (spec.num_levels, spec.num_classes) == (num_levels, num_classes)
    elif data in TEXT_DATA:
        assert spec.modality == "text"
        assert spec.vocab_size > 60  # letters of both cases, digits, punctuation, newline
        if cfg.data.tokenizer == "char":
            assert len(spec.tokenizer["chars"]) == spec.vocab_size
        else:  # learned from the text, prepared once into the token cache (paths.cache_dir)
            assert spec.tokenizer["kind"] == "bpe" and spec.vocab_size == cfg.data.vocab_size
    else:
        pytest.fail(f"data={data} is new: add the spec it must have to IMAGE_SPECS or TEXT_DATA")
    assert not (tmp_path / "data").exists(), "reading the spec touched the data folder"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_builds_its_model_callbacks_loggers_and_cpu_trainer(
    compose_train, tmp_path, experiment
):
    cfg = compose_train(f"experiment={experiment}", *stage_one_of(compose_train, experiment))
    datamodule = instantiate(cfg.data)
    model = build_model(cfg.model, datamodule.spec.to_dict())
    assert isinstance(model, FAMILY_CLASSES[cfg.hydra.runtime.choices.model])
    assert model.spec == datamodule.spec
    assert model.hparams.optimizer["lr"] == cfg.model.optimizer.lr
    # The cosine schedule spans the experiment's own length (total_steps null: planned from
    # the trainer's epochs, or its steps for a per-step one, when training starts).
    if model.hparams.scheduler:  # (the diffusion and GAN presets keep a constant rate)
        assert model.hparams.scheduler["total_steps"] is None

    callbacks = instantiate_group(cfg.callbacks)
    assert isinstance(callbacks["model_checkpoint"], ModelCheckpoint)
    assert callbacks["model_checkpoint"].dirpath == str(tmp_path / "run" / "checkpoints")
    # GANs have no held-out likelihood to select by: their last checkpoint is the model.
    expected_monitor = None if model.family == "gan" else "val/loss"
    assert callbacks["model_checkpoint"].monitor == cfg.monitor == expected_monitor
    if model.generates or hasattr(model, "reconstruct"):  # samples, or an autoencoder's grids
        assert isinstance(callbacks["sample_writer"], SampleWriter)
        assert callbacks["sample_writer"].dirpath == tmp_path / "run" / "samples"
        assert callbacks["sample_writer"].options == dict(cfg.callbacks.sample_writer.options)
    else:  # the classifier presets export their judge instead of writing samples
        assert "sample_writer" not in callbacks and "export_judge" in callbacks
    assert isinstance(callbacks["curves"], CurvePlotter)
    assert callbacks["curves"].title == experiment
    assert isinstance(callbacks["lr_monitor"], LearningRateMonitor)
    assert isinstance(callbacks["progress_bar"], TQDMProgressBar)
    loggers = instantiate_group(cfg.logger)
    assert isinstance(loggers["csv"], CSVLogger)
    assert Path(loggers["csv"].log_dir) == tmp_path / "run" / "csv"

    assert cfg.trainer.accelerator in ("auto", "cpu", "gpu")
    trainer = instantiate_cpu_trainer(cfg, callbacks.values(), loggers.values())
    assert trainer.max_epochs == cfg.trainer.max_epochs
    assert trainer.gradient_clip_val == cfg.trainer.gradient_clip_val
    assert trainer.default_root_dir == str(tmp_path / "run")
    assert trainer.checkpoint_callback is callbacks["model_checkpoint"]
    assert trainer.loggers == [loggers["csv"]]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_model_hyperparameters_are_plain_data_so_checkpoints_load_weights_only(
    compose_train, experiment
):
    cfg = compose_train(f"experiment={experiment}", *stage_one_of(compose_train, experiment))
    model = build_model(cfg.model, instantiate(cfg.data).spec.to_dict())
    hparams = dict(model.hparams)
    assert non_plain_values(hparams) == []
    buffer = io.BytesIO()
    torch.save({"hyper_parameters": hparams}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["hyper_parameters"] == hparams


def test_vae_and_char_rnn_hyperparameters_rebuild_the_same_architecture(compose_train):
    # What sample.py does with a checkpoint: the family's class, called on the stored hparams.
    for experiment in ("vae_digits", "char_rnn_shakespeare"):
        cfg = compose_train(f"experiment={experiment}")
        model = build_model(cfg.model, instantiate(cfg.data).spec.to_dict())
        rebuilt = type(model)(**dict(model.hparams))
        shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
        assert {name: t.shape for name, t in rebuilt.state_dict().items()} == shapes


# The default run and the debug presets -----------------------------------------------------


def test_default_run_is_the_vae_on_the_shipped_digits(compose_train):
    cfg = compose_train()
    assert cfg.name == "vae_digits"
    assert cfg.data._target_ == "zoo.data.DigitsDataModule"
    assert cfg.model._target_ == "zoo.models.VAE"
    assert list(cfg.logger) == ["csv"]
    assert (cfg.monitor, cfg.monitor_mode, cfg.seed) == ("val/loss", "min", 42)


@pytest.mark.parametrize("debug", DEBUG_PRESETS)
def test_debug_preset_overrides_the_default_run_and_its_trainer_builds(compose_train, debug):
    cfg = compose_train(f"debug={debug}")
    assert cfg.name == "vae_digits"
    composed = leaves(OmegaConf.to_container(cfg, resolve=False))
    for key, value in preset_values("debug", debug).items():
        assert composed[key] == value, f"debug={debug} sets {key}={value!r}"
    trainer = instantiate_cpu_trainer(cfg)
    assert trainer.max_epochs == cfg.trainer.max_epochs


def test_smoke_preset_runs_one_batch_of_each_stage(compose_train):
    trainer = instantiate_cpu_trainer(compose_train("debug=smoke"))
    assert trainer.max_epochs == 1
    assert trainer.limit_train_batches == trainer.limit_val_batches == 1
    assert trainer.limit_test_batches == 1
    assert trainer.num_sanity_val_steps == 0


def test_profiler_preset_writes_its_report_into_the_run_folder(compose_train, tmp_path):
    trainer = instantiate_cpu_trainer(compose_train("debug=profiler"))
    assert isinstance(trainer.profiler, SimpleProfiler)
    assert trainer.profiler.dirpath == str(tmp_path / "run")


def test_ema_callbacks_compose_beside_the_default_callbacks(compose_train):
    cfg = compose_train("callbacks=[default,ema]")
    callbacks = instantiate_group(cfg.callbacks)
    assert {"model_checkpoint", "sample_writer", "curves", "ema"} <= set(callbacks)
    assert isinstance(callbacks["ema"], EMA)
    assert (callbacks["ema"].decay, callbacks["ema"].warmup) == (0.999, True)


def test_a_default_callback_set_to_null_is_dropped(compose_train):
    cfg = compose_train("callbacks.lr_monitor=null")
    assert "lr_monitor" not in instantiate_group(cfg.callbacks)


@pytest.mark.parametrize("trainer", TRAINERS)
def test_trainer_option_extends_the_default_trainer_and_builds(compose_train, tmp_path, trainer):
    cfg = compose_train(f"trainer={trainer}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    assert cfg.trainer.max_epochs == 150  # inherited from trainer/default.yaml
    assert instantiate_cpu_trainer(cfg).default_root_dir == str(tmp_path / "run")


def test_cpu_and_gpu_trainers_name_their_accelerator(compose_train):
    assert compose_train("trainer=cpu").trainer.accelerator == "cpu"
    gpu = compose_train("trainer=gpu").trainer
    assert (gpu.accelerator, gpu.precision) == ("gpu", "bf16-mixed")


def test_sample_config_names_no_model_and_leaves_every_family_option_unset():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("sample")
    assert cfg.ckpt_path is None and cfg.pretrained is None  # the user names one of them
    assert (cfg.num_samples, cfg.seed, cfg.use_ema, cfg.device) == (64, 0, True, "auto")
    # sample.py reads these names; each must exist so that `name=value` overrides it.
    assert {name: cfg[name] for name in sample_options()} == dict.fromkeys(sample_options())


# Loggers -----------------------------------------------------------------------------------


def test_three_loggers_compose_and_build_without_starting_a_wandb_run(
    compose_train, tmp_path, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = compose_train("logger=[csv,tensorboard,wandb]")
    assert list(cfg.logger) == ["csv", "tensorboard", "wandb"]
    loggers = instantiate_group(cfg.logger)
    run = str(tmp_path / "run")
    assert isinstance(loggers["csv"], CSVLogger)
    assert Path(loggers["csv"].log_dir) == tmp_path / "run" / "csv"
    assert isinstance(loggers["tensorboard"], TensorBoardLogger)
    assert Path(loggers["tensorboard"].log_dir) == tmp_path / "run" / "tensorboard"
    assert isinstance(loggers["wandb"], WandbLogger)
    assert cfg.logger.wandb.offline is True
    assert loggers["wandb"].save_dir == run
    assert loggers["wandb"].name == "zoo"  # WandbLogger's name is the project
    trainer = instantiate_cpu_trainer(cfg, loggers=loggers.values())
    csv_logger, tensorboard_logger, wandb_logger = trainer.loggers  # in this order
    assert isinstance(csv_logger, CSVLogger)  # zoo's continues metrics.csv on resume
    assert isinstance(tensorboard_logger, TensorBoardLogger)
    assert isinstance(wandb_logger, WandbLogger)
    # The wandb run starts only when a metric is first logged: nothing is written yet.
    assert not (tmp_path / "wandb_dir").exists()
    assert not (tmp_path / "run" / "wandb").exists()


# Sweeps and launchers ----------------------------------------------------------------------

# Each hparams_search config and the experiment it searches (a new search must be added here).
SEARCHED_EXPERIMENTS = {
    "vae_optuna": "vae_digits",
    "char_rnn_optuna": "char_rnn_shakespeare",
    "classifier_optuna": "classifier_digits",
}


@pytest.mark.parametrize(
    "search", sorted(path.stem for path in (CONFIG_DIR / "hparams_search").glob("*.yaml"))
)
def test_hparams_search_builds_its_sweeper_over_keys_its_experiment_has(compose_train, search):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.zoo_optuna_sweeper.optuna_sweeper import ZooOptunaSweeper, parameter

    experiment = SEARCHED_EXPERIMENTS[search]
    cfg = compose_train(f"experiment={experiment}", f"hparams_search={search}")
    sweeper = cfg.hydra.sweeper
    # One study per experiment, in a database outside the timestamped sweep folders.
    assert (sweeper.study_name, sweeper.storage) == (
        experiment,
        f"sqlite:///multirun/{experiment}/optuna.db",
    )
    assert sweeper.direction == cfg.monitor_mode and cfg.monitor.startswith("val/")
    assert cfg.callbacks.model_checkpoint.monitor == cfg.monitor
    assert sweeper.sampler.seed is None  # workers sharing a study must not draw alike
    assert isinstance(instantiate(sweeper), ZooOptunaSweeper)  # sampler and pruner build
    parser = OverridesParser.create()
    for key, value in sweeper.params.items():
        assert OmegaConf.select(cfg, key) is not None, f"{search} searches {key}, not in config"
        parameter(parser.parse_override(f"{key}={value}"))  # a space Optuna can sample


def test_slurm_launcher_runs_one_task_per_gpu_and_lets_lightning_requeue(compose_train):
    launcher = compose_train("hydra/launcher=slurm").hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node
    # SLURM warns with USR1, which Lightning's SLURMEnvironment answers: save, then requeue.
    assert launcher.additional_parameters.signal == f"USR1@{launcher.signal_delay_s}"
    local = compose_train("hydra/launcher=local").hydra.launcher
    assert local._target_.endswith("submitit_launcher.LocalLauncher")


def test_ddp_trainer_runs_two_cpu_processes_without_a_gpu(compose_train):
    trainer = compose_train("trainer=ddp").trainer
    assert (trainer.strategy, trainer.accelerator, trainer.num_nodes) == ("ddp", "auto", 1)
    assert trainer.devices == ("auto" if torch.cuda.is_available() else 2)
