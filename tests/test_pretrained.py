"""Pretrained models: the Hugging Face layout, zoo.load, torch.hub, the shipped models and the
script that makes them."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT, checkpoint_of, run_script, tiny_family
from hydra import compose, initialize_config_dir
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import zoo
from zoo import checkpoint_format as keys
from zoo.errors import ZooError
from zoo.export import export
from zoo.pretrained import (
    ENVIRONMENT,
    FILES,
    from_pretrained,
    list_models,
    load,
    package_dir,
    push_to_hub,
    save_pretrained,
    shipped_names,
    write_index,
)
from zoo.pretrained.check import TOLERANCES, remeasure, within
from zoo.runner import sample

DIGITS_RECORD = {"name": "digits", "config": {"_target_": "zoo.data.DigitsDataModule"}}


def draw(model, seed: int = 0, count: int = 6):
    """Return ``count`` samples of ``model`` drawn with a generator seeded by ``seed`` (texts
    of 20 tokens)."""
    options = {"max_new_tokens": 20} if model.spec.modality == "text" else {}
    return model.sample(count, generator=torch.Generator().manual_seed(seed), **options)


def gan_with_ema(seed: int = 0):
    """Return a tiny GAN on the digits and its checkpoint, whose EMA generator differs from
    the live one."""
    model = tiny_family("gan", seed=seed)
    model.data_record = DIGITS_RECORD
    checkpoint = checkpoint_of(model)
    checkpoint[keys.EMA] = {
        name: tensor + 0.05 * torch.randn_like(tensor)
        for name, tensor in model.state_dict().items()
        if name.startswith("generator.") and tensor.is_floating_point()
    }
    return model, checkpoint


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A folder of shipped models (ZOO_PRETRAINED_DIR) holding a tiny GAN, ``tiny_gan``,
    exported from a checkpoint written to disk."""
    _, checkpoint = gan_with_ema()
    ckpt = tmp_path / "run" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save(checkpoint, ckpt)
    root = tmp_path / "shipped"
    save_pretrained(ckpt, root / "tiny_gan", name="tiny_gan")
    write_index(root, ["tiny_gan"])
    monkeypatch.setenv(ENVIRONMENT, str(root))
    return root, ckpt


# The layout: safetensors + config.json + card, round trips -------------------------------


def test_a_checkpoint_saved_and_loaded_back_draws_the_same_samples_with_its_ema_weights(
    tmp_path,
):
    from zoo.checkpoints import model_from_checkpoint

    live, checkpoint = gan_with_ema()
    ckpt = tmp_path / "last.ckpt"
    torch.save(checkpoint, ckpt)
    saved = save_pretrained(ckpt, tmp_path / "saved")
    loaded = from_pretrained(saved)
    expected = draw(model_from_checkpoint(checkpoint, use_ema=True))
    assert torch.equal(draw(loaded), expected)
    assert not torch.equal(draw(live), expected)  # the EMA weights, not the live ones
    assert torch.equal(draw(load(ckpt)), expected)  # zoo.load of the .ckpt itself
    assert not loaded.training and loaded.device == torch.device("cpu")
    config = json.loads((saved / "config.json").read_text())
    assert config["ema_weights"] is True and config["family"] == "gan"
    assert config["num_parameters"] == sum(p.numel() for p in live.parameters())


def test_every_file_written_is_safetensors_json_or_markdown(tmp_path):
    model, _ = gan_with_ema()
    saved = save_pretrained(
        model,
        tmp_path / "saved",
        name="tiny_gan",
        description={
            "train_command": "python train.py experiment=gan_digits",
            "metrics": {"test/fid": {"value": 4.01, "unit": "Fréchet distance"}},
            "headline_metric": "test/fid",
        },
    )
    assert sorted(path.name for path in saved.iterdir()) == sorted(FILES)
    with safe_open(saved / "model.safetensors", framework="pt") as weights:
        assert set(weights.keys()) == set(model.state_dict())
        assert weights.metadata() == {"format": "pt"}
    config = json.loads((saved / "config.json").read_text())
    assert config["format"] == "zoo-pretrained" and config["zoo_version"] == zoo.__version__
    assert config["data"] == DIGITS_RECORD and "CC BY 4.0" in config["data_licence"]
    card = (saved / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: zoo\n")
    assert "python train.py experiment=gan_digits" in card
    assert "| **test/fid** | 4.01 | Fréchet distance |" in card
    assert 'zoo.load("tiny_gan")' in card


def test_tied_weights_are_stored_once_and_tied_again_on_loading(tmp_path):
    model = tiny_family("gpt")
    saved = save_pretrained(model, tmp_path / "gpt")
    stored = load_file(saved / "model.safetensors")
    assert "transformer.lm_head.weight" not in stored and "transformer.wte.weight" in stored
    loaded = load(saved)
    head, embedding = loaded.transformer.lm_head.weight, loaded.transformer.wte.weight
    assert head.data_ptr() == embedding.data_ptr()  # one tensor, as trained
    assert draw(loaded, count=2) == draw(model, count=2)


def test_half_precision_stores_parameters_in_float16_and_buffers_as_they_were(tmp_path):
    model = tiny_family("diffusion")
    saved = save_pretrained(model, tmp_path / "half", half=True)
    stored = load_file(saved / "model.safetensors")
    parameters = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    assert {stored[name].dtype for name in parameters} == {torch.float16}
    assert all(stored[name].dtype == buffers[name].dtype for name in buffers if name in stored)
    loaded = load(saved)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    weight = next(iter(parameters))
    assert torch.equal(loaded.state_dict()[weight], parameters[weight].half().float())
    full = save_pretrained(model, tmp_path / "full")
    halved = (full / "model.safetensors").stat().st_size - (
        saved / "model.safetensors"
    ).stat().st_size
    # 2 bytes less per parameter, give or take the header's padding to 8 bytes per tensor
    assert halved == pytest.approx(2 * sum(p.numel() for p in model.parameters()), abs=8 * 16)


def test_the_data_record_is_saved_without_locations(tmp_path):
    model = tiny_family("char_rnn")
    model.data_record = {
        "name": "text_file",
        "config": {
            "_target_": "zoo.data.TextFileDataModule",
            "path": "https://example.org/corpus.txt",
            "cache_dir": "/home/someone/cache",
            "block_size": 8,
        },
    }
    saved = save_pretrained(model, tmp_path / "text")
    config = json.loads((saved / "config.json").read_text())
    assert config["data"]["config"] == {"_target_": "zoo.data.TextFileDataModule", "block_size": 8}


# zoo.load, list_models and the registry --------------------------------------------------


def test_zoo_load_takes_a_shipped_name_a_saved_folder_or_a_run_checkpoint(registry):
    root, ckpt = registry
    by_name, by_folder, by_checkpoint = load("tiny_gan"), load(root / "tiny_gan"), load(ckpt)
    assert torch.equal(draw(by_name), draw(by_folder))
    assert torch.equal(draw(by_name), draw(by_checkpoint))
    assert torch.equal(draw(zoo.load("tiny_gan")), draw(by_name))  # the package's lazy name


def test_list_models_gives_name_family_data_parameters_and_headline_metric(registry):
    root, _ = registry
    from zoo.pretrained.folder import describe

    describe(
        root / "tiny_gan",
        metrics={"test/fid": {"value": 4.01, "unit": "Fréchet distance"}},
        headline_metric="test/fid",
    )
    [row] = list_models()
    parameters = sum(p.numel() for p in load("tiny_gan").parameters())
    assert row == {
        "name": "tiny_gan",
        "family": "gan",
        "data": "digits",
        "parameters": parameters,
        "metric": "test/fid",
        "value": 4.01,
        "unit": "Fréchet distance",
    }


def test_an_unknown_name_is_one_line_listing_the_shipped_models(registry):
    with pytest.raises(ZooError, match="the shipped models: tiny_gan") as error:
        load("gan_cifar")
    assert "\n" not in str(error.value)


def test_import_zoo_loads_no_torch_until_a_model_is_asked_for():
    code = "import sys, zoo; zoo.list_models(); print('torch' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert output.stdout.strip() == "False", output.stderr[-2000:]


# A model that no longer fits the code -----------------------------------------------------


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def drop_a_weight(folder: Path) -> None:
    weights = load_file(folder / "model.safetensors")
    weights.pop(sorted(weights)[0])
    save_file(weights, folder / "model.safetensors")


MISFITS = {
    "weights of another shape": (
        lambda folder: edit_config(folder, lambda c: c["hyper_parameters"].update(width=16)),
        "weights of another shape, saved → now: discriminator.",
    ),
    "a missing weight": (drop_a_weight, "weights missing: discriminator."),
    "an unknown family": (
        lambda folder: edit_config(folder, lambda c: c.update(family="normalizing_flow")),
        "of the family 'normalizing_flow', which this zoo does not have",
    ),
    "a hyperparameter the family no longer takes": (
        lambda folder: edit_config(folder, lambda c: c["hyper_parameters"].update(depth=3)),
        "the family no longer takes depth",
    ),
}


@pytest.mark.parametrize("misfit", sorted(MISFITS))
def test_a_shipped_model_that_no_longer_fits_names_itself_and_its_rebuild_command(registry, misfit):
    root, _ = registry
    damage, cause = MISFITS[misfit]
    damage(root / "tiny_gan")
    with pytest.raises(ZooError) as error:
        load("tiny_gan")
    message = str(error.value)
    assert message.startswith("the shipped model tiny_gan ")
    assert cause in message
    assert message.endswith("rebuild it with `python bench/make_pretrained.py tiny_gan`")
    assert "\n" not in message


def test_a_saved_folder_that_no_longer_fits_says_to_export_it_again(tmp_path):
    saved = save_pretrained(tiny_family("vae"), tmp_path / "vae")
    edit_config(saved, lambda c: c["hyper_parameters"].update(latent_dim=3))
    with pytest.raises(ZooError, match=r"weights of another shape.*python -m zoo.export"):
        load(saved)


def test_a_config_that_names_code_to_run_is_refused(tmp_path):
    saved = save_pretrained(tiny_family("vae"), tmp_path / "vae")
    edit_config(saved, lambda c: c["hyper_parameters"]["optimizer"].update(_target_="os.system"))
    with pytest.raises(ZooError, match="names 'os.system' as code to build.*refusing"):
        load(saved)


def test_a_damaged_weights_file_is_one_line(tmp_path):
    saved = save_pretrained(tiny_family("vae"), tmp_path / "vae")
    (saved / "model.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(ZooError, match="model.safetensors cannot be read"):
        load(saved)


# torch.hub and the Hugging Face Hub -------------------------------------------------------


def import_file(path: Path):
    """Return the module of a Python file, imported as torch.hub imports hubconf.py."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_torch_hub_has_one_entry_point_per_shipped_model_and_loads_it(registry):
    hubconf = import_file(ROOT / "hubconf.py")
    # what torch.hub.list shows: the module's public callables
    entries = [name for name in dir(hubconf) if callable(getattr(hubconf, name))]
    assert [name for name in entries if not name.startswith("_")] == ["tiny_gan"]
    assert "gan model trained on digits" in hubconf.tiny_gan.__doc__
    model = torch.hub.load(str(ROOT), "tiny_gan", source="local")
    assert torch.equal(draw(model), draw(load("tiny_gan")))


def test_from_pretrained_fetches_a_repository_id_through_huggingface_hub(tmp_path, monkeypatch):
    import huggingface_hub

    saved = save_pretrained(gan_with_ema()[0], tmp_path / "downloaded")
    asked = {}

    def snapshot_download(repo_id, revision=None, allow_patterns=None):
        asked.update(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns)
        return str(saved)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)
    model = from_pretrained("someone/tiny-gan", revision="v1")
    assert asked == {"repo_id": "someone/tiny-gan", "revision": "v1", "allow_patterns": FILES}
    assert torch.equal(draw(model), draw(load(saved)))


def test_push_to_hub_uploads_the_three_files_of_a_model(tmp_path, monkeypatch):
    import huggingface_hub

    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=None, exist_ok=False):
            uploaded["created"] = (repo_id, exist_ok)

        def upload_folder(self, repo_id, folder_path, allow_patterns, commit_message):
            uploaded["files"] = sorted(path.name for path in Path(folder_path).iterdir())
            uploaded["samples"] = draw(load(folder_path))
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model, _ = gan_with_ema()
    url = push_to_hub(model, "someone/tiny-gan")
    assert url == "https://huggingface.co/someone/tiny-gan/commit/0"
    assert uploaded["created"] == ("someone/tiny-gan", True)
    assert uploaded["files"] == sorted(FILES)
    assert torch.equal(uploaded["samples"], draw(model))


# python -m zoo.export -------------------------------------------------------------------


def test_export_converts_a_run_checkpoint_and_records_the_run_on_the_card(tmp_path):
    _, checkpoint = gan_with_ema()
    run = tmp_path / "outputs" / "gan_digits" / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / ".hydra").mkdir()
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=gan_digits\n- seed=1\n")
    results = {"family": "gan", "test": {"test/fid": 4.01, "test/classes": 10.0}, "seed": 1}
    (run / "results.json").write_text(json.dumps({**results, "train_time_s": 368.2}))
    out = export([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"out={tmp_path / 'gan'}"])
    config = json.loads((out / "config.json").read_text())
    assert config["train_command"] == "python train.py experiment=gan_digits seed=1"
    assert config["metrics"]["test/fid"]["value"] == 4.01
    assert config["metrics"]["test/classes"] == {"value": 10.0, "unit": "classes"}
    assert config["headline_metric"] == "test/fid" and config["train_time_s"] == 368.2
    with pytest.raises(ZooError, match="out= is required"):
        export([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])


# The package carries the shipped models ---------------------------------------------------


def test_a_wheel_of_the_package_carries_the_shipped_models(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("zoo", "hydra_plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    save_pretrained(tiny_family("vae"), source / "zoo" / "pretrained" / "tiny_vae")
    command = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps"]
    command += ["--no-build-isolation", "-q", "-w", str(tmp_path / "wheel")]
    subprocess.run(command, check=True, capture_output=True, cwd=tmp_path)
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"zoo/pretrained/tiny_vae/{name}" for name in FILES} <= names
    assert "zoo/pretrained/index.json" in names


# bench/make_pretrained.py, and sample.py on what it makes ----------------------------------


def test_every_cpu_preset_is_made_by_make_pretrained():
    made = import_file(ROOT / "bench" / "make_pretrained.py")
    presets = {path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml")}
    cpu = {
        name
        for name in presets
        if "override /trainer: gpu"
        not in (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
    }
    assert cpu - set(made.PRESETS) - set(made.NOT_SHIPPED) == set()
    assert not set(made.PRESETS) & set(made.NOT_SHIPPED)
    assert set(made.PRESETS) <= presets
    order = list(made.PRESETS)
    judges = [name for name in order if name.startswith("classifier_")]
    assert order[: len(judges)] == judges  # the judges first: the others' FID uses them


@pytest.fixture(scope="module")
def smoke_models(tmp_path_factory):
    """The judge of the digits and the VAE on them, made by bench/make_pretrained.py --smoke."""
    out = tmp_path_factory.mktemp("smoke_models")
    run_script(
        "bench/make_pretrained.py",
        "classifier_digits",
        "vae_digits",
        "--smoke",
        "--no-half",
        "--out",
        str(out),
    )
    return out


def test_make_pretrained_trains_checks_and_exports_the_judge_before_the_models(smoke_models):
    assert shipped_names(smoke_models) == ["classifier_digits", "vae_digits"]
    vae = json.loads((smoke_models / "vae_digits" / "config.json").read_text())
    assert (
        vae["train_command"]
        == "python train.py experiment=vae_digits debug=smoke test=false evaluation.num_samples=20"
    )
    # train.py judged its samples with the judge made just before, with no warning
    assert "test/fid" in vae["metrics"] and vae["judge"] == "classifier_digits"
    log = (smoke_models / ".runs" / "vae_digits.log").read_text()
    assert "sample-quality metrics skipped" not in log
    assert vae["check"]["metric"] == "fid" and vae["check"]["judge"] == "classifier_digits"
    judge = json.loads((smoke_models / "classifier_digits" / "config.json").read_text())
    assert (
        judge["check"]["metric"] == "test/accuracy" and judge["headline_metric"] == "test/accuracy"
    )
    assert "time to train" in (smoke_models / "vae_digits" / "README.md").read_text()


def test_make_pretrained_reuse_exports_finished_runs_without_training_them_again(
    smoke_models, tmp_path
):
    runs = tmp_path / "runs"  # a copy: the finished runs as train.py left them
    shutil.copytree(smoke_models / ".runs", runs)
    finished = (runs / "vae_digits" / "results.json").stat().st_mtime_ns
    out = tmp_path / "models"
    run_script(
        "bench/make_pretrained.py",
        "classifier_digits",
        "vae_digits",
        "--no-half",
        "--reuse",
        "--work",
        str(runs),
        "--out",
        str(out),
    )
    assert shipped_names(out) == ["classifier_digits", "vae_digits"]
    assert (runs / "vae_digits" / "results.json").stat().st_mtime_ns == finished  # not trained
    first = load_file(out / "vae_digits" / "model.safetensors")
    second = load_file(smoke_models / "vae_digits" / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_make_pretrained_reuse_refuses_a_run_of_another_preset(smoke_models, tmp_path):
    made = import_file(ROOT / "bench" / "make_pretrained.py")
    runs = tmp_path / "runs"
    shutil.copytree(smoke_models / ".runs" / "vae_digits", runs / "gan_digits")
    with pytest.raises(SystemExit, match="is a run of 'vae_digits', not of 'gan_digits'"):
        made.train(["experiment=gan_digits"], runs / "gan_digits", runs, tmp_path, reuse=True)
    with pytest.raises(SystemExit, match="--reuse needs --work"):
        run_main(made, "gan_digits", "--reuse")


def run_main(module, *argv: str) -> None:
    """Run a script module's main() with ``argv`` as its command line."""
    saved = sys.argv
    sys.argv = [module.__file__, *argv]
    try:
        module.main()
    finally:
        sys.argv = saved


def test_a_recorded_check_is_measured_again_within_its_tolerance(
    smoke_models, monkeypatch, tmp_path
):
    monkeypatch.setenv(ENVIRONMENT, str(smoke_models))
    for name in shipped_names():
        check = json.loads((smoke_models / name / "config.json").read_text())["check"]
        value = remeasure(load(name), check, cache_dir=str(tmp_path))
        assert value == pytest.approx(check["value"], rel=1e-6, abs=1e-9)  # same machine: same


def test_sample_script_draws_from_a_pretrained_model_with_no_training(
    smoke_models, tmp_path, monkeypatch
):
    monkeypatch.setenv(ENVIRONMENT, str(smoke_models))
    out = tmp_path / "samples"
    run_script("sample.py", "pretrained=vae_digits", "num_samples=8", f"output_dir={out}")
    assert torch.load(out / "samples.pt", weights_only=True).shape == (8, 1, 8, 8)
    assert (out / "samples.png").is_file()


def sample_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("sample", overrides=list(overrides))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["pretrained=tiny_gan", "ckpt_path=last.ckpt"],
            "pass either ckpt_path= (a run's checkpoint) or pretrained= (a pretrained model), "
            "not both",
        ),
        (
            ["pretrained=gan_cifar"],
            "'gan_cifar' is no shipped model, checkpoint or saved folder; the shipped models: "
            "tiny_gan.",
        ),
        (
            [],
            "ckpt_path= is required: the .ckpt to sample from (train.py prints its path); or "
            "pretrained=NAME, a pretrained model (tiny_gan)",
        ),
    ],
)
def test_sample_takes_one_of_a_checkpoint_and_a_pretrained_name(
    registry, tmp_path, overrides, message
):
    cfg = sample_config(*overrides, f"output_dir={tmp_path / 'out'}", "device=cpu")
    with pytest.raises(ZooError) as error:
        sample(cfg)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.fixture
def judged_registry(tmp_path, monkeypatch):
    """A folder of shipped models holding a tiny VAE on the digits and their judge."""
    root = tmp_path / "shipped"
    for name, family in (("tiny_vae", "vae"), ("classifier_digits", "cnn_classifier")):
        model = tiny_family(family)
        model.data_record = DIGITS_RECORD
        save_pretrained(model, root / name, name=name)
    write_index(root, ["classifier_digits", "tiny_vae"])
    monkeypatch.setenv(ENVIRONMENT, str(root))
    return root


def test_the_shipped_judge_judges_unless_the_user_has_one_of_their_own(judged_registry, tmp_path):
    from zoo.evaluation import Evaluation, Judge

    evaluation = Evaluation(judges_dir=str(tmp_path / "judges"))
    assert evaluation.find_judge("digits") == judged_registry / "classifier_digits"
    assert Judge(evaluation.find_judge("digits")).model.family == "cnn_classifier"
    (tmp_path / "judges").mkdir()
    torch.save(
        checkpoint_of(tiny_family("cnn_classifier", seed=1)), tmp_path / "judges/digits.ckpt"
    )
    assert evaluation.find_judge("digits") == tmp_path / "judges" / "digits.ckpt"


def test_classifier_ckpt_takes_a_shipped_judges_name_a_folder_or_a_checkpoint(
    judged_registry, tmp_path
):
    from zoo.evaluation import Evaluation, JudgeMissingError

    def judge(value):
        return Evaluation(classifier_ckpt=value, judges_dir=str(tmp_path)).find_judge("digits")

    shipped = judged_registry / "classifier_digits"
    assert judge("classifier_digits") == shipped and judge(str(shipped)) == shipped
    ckpt = tmp_path / "judge.ckpt"
    torch.save(checkpoint_of(tiny_family("cnn_classifier", seed=1)), ckpt)
    assert judge(str(ckpt)) == ckpt
    for wrong in ("classifier_mnist", str(tmp_path / "missing.ckpt")):
        with pytest.raises(JudgeMissingError) as error:
            judge(wrong)
        assert str(error.value) == (
            f"evaluation.classifier_ckpt={wrong} is no file, folder or shipped judge: pass a "
            "classifier run's checkpoint (its checkpoints/best.ckpt), a folder written by "
            "zoo.save_pretrained, or a shipped judge's name: classifier_digits"
        )


def test_a_generator_given_as_judge_is_refused_naming_the_shipped_judges(judged_registry, tmp_path):
    from zoo.evaluation import Evaluation, Judge

    generator = tmp_path / "vae.ckpt"
    torch.save(checkpoint_of(tiny_family("vae")), generator)
    for given in (generator, judged_registry / "tiny_vae"):
        path = Evaluation(classifier_ckpt=str(given)).find_judge("digits")
        with pytest.raises(ZooError) as error:
            Judge(path)
        assert str(error.value) == (
            f"{given} is a vae model; the judge must be a cnn_classifier: train one with "
            "experiment=classifier_<data set>, or pass a shipped judge's name (classifier_digits)"
        )


def test_sample_refuses_a_judge_it_cannot_find_before_drawing_anything(judged_registry, tmp_path):
    cfg = sample_config(
        "pretrained=tiny_vae",
        "num_samples=20",
        "evaluate=true",
        "evaluation.classifier_ckpt=classifier_mnist",
        f"output_dir={tmp_path / 'eval'}",
        "device=cpu",
    )
    with pytest.raises(ZooError, match="evaluation.classifier_ckpt=classifier_mnist is no file"):
        sample(cfg)
    assert not (tmp_path / "eval" / "samples.pt").exists()


def test_sample_evaluates_a_pretrained_model_with_the_shipped_judge(judged_registry, tmp_path):
    cfg = sample_config(
        "pretrained=tiny_vae",
        "num_samples=20",
        "evaluate=true",
        f"output_dir={tmp_path / 'eval'}",
        f"evaluation.cache_dir={tmp_path / 'cache'}",
        f"evaluation.judges_dir={tmp_path / 'no_judges'}",
        "device=cpu",
    )
    result = sample(cfg)
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert evaluation["pretrained"] == "tiny_vae"
    assert evaluation["test/fid"] == result["test/fid"] >= 0
    assert evaluation["test/bpd"] > 0 and evaluation["test/classes"] >= 1


def test_sample_draws_from_a_shipped_model_what_zoo_load_draws(registry, tmp_path):
    cfg = sample_config(
        "pretrained=tiny_gan", "num_samples=6", "seed=3", f"output_dir={tmp_path}", "device=cpu"
    )
    result = sample(cfg)
    expected = draw(load("tiny_gan"), seed=3)
    assert torch.equal(torch.load(result["tensor"], weights_only=True), expected)


# Every model that ships -------------------------------------------------------------------

SHIPPED = shipped_names(package_dir())


def test_the_package_folder_holds_exactly_the_listed_models_each_whole():
    folders = {
        path.name
        for path in package_dir().iterdir()
        if path.is_dir() and not path.name.startswith((".", "_"))
    }
    assert folders == set(SHIPPED), "index.json and the model folders disagree"
    for name in SHIPPED:
        assert sorted(p.name for p in (package_dir() / name).iterdir()) == sorted(FILES), name
    made = import_file(ROOT / "bench" / "make_pretrained.py")
    size = sum(made.folder_bytes(package_dir() / name) for name in SHIPPED)
    assert size <= made.BUDGET_MB * 1e6, (
        f"the shipped models take {size / 1e6:.1f} MB, past {made.BUDGET_MB} MB"
    )


@pytest.mark.parametrize(
    "name",
    SHIPPED
    or [
        pytest.param(
            None,
            marks=pytest.mark.skip(
                reason="no pretrained models ship yet: build them with bench/make_pretrained.py"
            ),
        )
    ],
)
def test_a_shipped_model_loads_samples_and_holds_its_recorded_check(name, monkeypatch, tmp_path):
    monkeypatch.setenv(ENVIRONMENT, str(package_dir()))
    config = json.loads((package_dir() / name / "config.json").read_text())
    model = load(name)
    # A FID check draws its own samples. A PixelCNN is checked on its exact likelihood
    # instead: two 28×28 samples alone take minutes to draw a pixel at a time.
    check = config["check"]
    if model.spec.modality == "text":
        [text] = model.sample(1, generator=torch.Generator().manual_seed(0), max_new_tokens=200)
        assert len(text) > 100
    value = remeasure(model, check, cache_dir=str(tmp_path))
    assert within(value, check["value"], TOLERANCES[check["metric"]]), (
        f"{name}: {check['metric']} {value:.4g}, recorded {check['value']:.4g}"
    )
