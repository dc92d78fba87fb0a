"""The family contract and the seams between layers: what a seventh family is written against."""

from __future__ import annotations

import ast
import inspect
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import IMAGE_SPEC, TEXT_SPEC, TINY, checkpoint_of, one_batch_loader, tiny_family
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from zoo.checkpoints import model_from_checkpoint
from zoo.errors import ConfigError
from zoo.models import FAMILIES, GenerativeModule
from zoo.runner import build_model  # importing it registers run_id, choice

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"

# The layers, top to bottom; a module may import only from its own layer or the ones below.
LAYERS = [
    {"zoo.runner", "zoo.export"},
    {"zoo.callbacks"},
    {"zoo.evaluation", "zoo.pretrained", "zoo.leaderboard", "zoo.sweeps"},
    {"zoo.checkpoints", "zoo.loggers"},
    {"zoo.models"},
    {"zoo.nn", "zoo.data", "zoo.metrics"},
    {
        "zoo.checkpoint_format",
        "zoo.outputs",
        "zoo.errors",
        "zoo.rng",
        "zoo.resolvers",
        "zoo",
    },
]


def layer_of(module: str) -> int:
    """Return the index in LAYERS of the layer a zoo module belongs to (its longest prefix)."""
    best, index = -1, None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index is not None, f"{module} belongs to no layer"
    return index


def zoo_imports(path: Path) -> set[str]:
    """Return every zoo module a file imports, at the top or inside a function."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names if alias.name.startswith("zoo")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("zoo"):
            imported |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return imported


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for path in sorted(ZOO.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for imported in zoo_imports(path):
            if layer_of(imported) < layer_of(module):
                upward.append(f"{module} imports {imported}")
    assert upward == []


def test_reading_a_checkpoint_imports_no_callback_and_no_runner():
    import subprocess
    import sys

    code = (
        "import sys, zoo.checkpoints, zoo.evaluation; "
        "print(sorted(m for m in sys.modules if m.startswith(('zoo.callbacks', 'zoo.runner'))))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert output.stdout.strip() == "[]", output.stderr[-2000:]


# One source of truth for defaults ------------------------------------------------------------

MODEL_CONFIGS = sorted(path.stem for path in (ROOT / "conf" / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_a_model_config_holds_exactly_the_constructor_defaults(name):
    data = "data=shakespeare" if name in ("gpt", "char_rnn") else "data=digits"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}", data])
    values = OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=False)
    target = values.pop("_target_")
    if values.get("stage_one") == "???":  # model=latent_flow: flow's, with its first stage asked
        values["stage_one"] = None
    cls = next(c for c in FAMILIES.values() if f"zoo.models.{c.__name__}" == target)
    defaults = {
        parameter.name: parameter.default
        for parameter in inspect.signature(cls.__init__).parameters.values()
        if parameter.name not in ("self", "spec")
    }
    # optimizer=None in Python means the family's default optimizer, which the config spells out
    # (a two-stage family needs a first stage to be built at all)
    first = {"stage_one": TINY[cls.family]["stage_one"]} if "stage_one" in TINY[cls.family] else {}
    built = cls(IMAGE_SPEC if cls.modality == "image" else TEXT_SPEC, **first)
    defaults["optimizer"] = built.hparams.optimizer
    normalised = {k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()}
    assert set(values) == set(normalised), "the config and the constructor take other arguments"
    assert values == normalised


# The contract's common behaviour ---------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_refuses_data_of_the_other_modality_in_one_line(family):
    cls = FAMILIES[family]
    other = TEXT_SPEC if cls.modality == "image" else IMAGE_SPEC
    with pytest.raises(ConfigError, match=f"the {family} family models {cls.modality}"):
        cls(other)


@pytest.mark.parametrize("family", ["pixelcnn", "diffusion", "flow", "gan"])
def test_conditional_families_refuse_unlabelled_data_and_labels_without_conditioning(family):
    unlabelled = {**IMAGE_SPEC, "num_classes": 0}
    with pytest.raises(ConfigError, match="conditional=true needs labelled data"):
        FAMILIES[family](unlabelled, conditional=True)
    model = tiny_family(family)
    with pytest.raises(ConfigError, match="labels= needs a class-conditional model"):
        model.sample(2, labels=3)


def test_every_family_declares_its_sample_options_through_its_sample_signature():
    options = {family: cls.sample_options() for family, cls in FAMILIES.items()}
    assert options["gpt"] == options["char_rnn"]  # one text path
    assert "stop" in options["char_rnn"] and "labels" in options["diffusion"]
    assert options["vae"] == () and "generator" not in options["gan"]


def test_both_text_families_stop_at_a_stop_string():
    for family in ("gpt", "char_rnn"):
        model = tiny_family(family)
        texts = model.sample(3, generator=torch.Generator().manual_seed(0), stop="e")
        for text in texts:
            generated = text[1:]  # after the prompt "\n"
            assert generated.count("e") <= 1 and (generated.endswith("e") or "e" not in generated)


# A schedule that spans the run -----------------------------------------------------------------


def fit_for_learning_rates(model: GenerativeModule, **trainer_options) -> list[float]:
    """Return the learning rate of each optimizer step of a short fit on 4 batches an epoch."""
    rates = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            rates.append(trainer.optimizers[0].param_groups[0]["lr"])

    x = torch.rand(16, 1, 8, 8) * 2 - 1
    loader = DataLoader(TensorDataset(x, torch.zeros(16, dtype=torch.long)), batch_size=4)
    trainer = L.Trainer(
        accelerator="cpu",
        callbacks=[Record()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        **trainer_options,
    )
    trainer.fit(model, loader)
    return rates


def test_a_cosine_over_the_run_reaches_zero_at_the_runs_last_epoch():
    model = tiny_family("vae")
    rates = fit_for_learning_rates(model, max_epochs=4)[::4]  # the rate of each epoch
    lr = model.hparams.optimizer["lr"]
    expected = [lr * 0.5 * (1 + math.cos(math.pi * epoch / 4)) for epoch in range(4)]
    assert rates == pytest.approx(expected)


def test_a_per_epoch_cosine_in_a_run_bounded_by_steps_spans_its_epochs():
    rates = fit_for_learning_rates(tiny_family("vae"), max_steps=8)[::4]
    assert rates[1] == pytest.approx(rates[0] * 0.5)  # epoch 1 of 2: halfway down the cosine


def test_an_unbounded_run_with_a_run_long_schedule_is_refused():
    with pytest.raises(ConfigError, match="the run sets no trainer.max_epochs"):
        fit_for_learning_rates(tiny_family("vae"), max_epochs=-1, max_time="00:00:00:05")


# One compile switch -----------------------------------------------------------------------


@pytest.fixture
def eager_compile(monkeypatch):
    """torch.compile with dynamo's tracing and the eager backend: the switch's whole path
    (tracing every network, state_dict keys, checkpoints) without a C++ build per family."""
    compile_module = torch.nn.Module.compile

    def traced(self, *args, **kwargs):
        return compile_module(self, *args, **{"backend": "eager", **kwargs})

    monkeypatch.setattr(torch.nn.Module, "compile", traced)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_compile_true_trains_one_batch_and_samples_and_its_checkpoint_loads_uncompiled(
    family, eager_compile
):
    model = tiny_family(family, compile=True).train()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, one_batch_loader(model))  # setup() compiles: compile=True
    assert model._compiled and trainer.global_step >= 1
    assert all(getattr(model, name)._compiled_call_impl for name in model.compiled_networks)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    model.eval()
    if family == "cnn_classifier":
        logits = model(torch.rand(4, *IMAGE_SPEC["shape"]) * 2 - 1)
        assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    elif model.generates:
        samples = model.sample(2, generator=torch.Generator().manual_seed(0))
        assert len(samples) == 2
    checkpoint = checkpoint_of(model)
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])
    plain = model_from_checkpoint(checkpoint)  # compile=False
    assert not plain._compiled
    compiled_again = model_from_checkpoint(checkpoint, compile=True)
    assert compiled_again._compiled


def test_compiled_and_uncompiled_models_compute_the_same_outputs(eager_compile):
    model = tiny_family("vae")
    x = torch.rand(3, *IMAGE_SPEC["shape"]) * 2 - 1
    before = model.decoder(model.encoder(x)[0])
    model.compile_networks()
    assert torch.allclose(model.decoder(model.encoder(x)[0]), before, atol=1e-6)


def test_the_fsdp_preset_composes_and_builds_its_strategy():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=fsdp"])
    from hydra.utils import instantiate
    from lightning.pytorch.strategies import FSDPStrategy

    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.accelerator == "gpu"
    model = build_model(cfg.model, {**IMAGE_SPEC})
    assert model.family == "vae"
