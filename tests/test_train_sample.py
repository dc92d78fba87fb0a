"""train.py → checkpoint → sample.py, run as a user runs them: the real scripts in subprocesses."""

import codecs
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, SMOKE, run_script, train_run
from hydra import compose, initialize_config_dir
from PIL import Image

from zoo.errors import ZooError
from zoo.runner import sample


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory) -> Path:
    """A VAE trained for two epochs of two batches on the digits."""
    run_dir = tmp_path_factory.mktemp("vae") / "run"
    train_run(run_dir, *SMOKE, "trainer.max_epochs=2", "trainer.limit_train_batches=2")
    return run_dir


@pytest.fixture(scope="module")
def char_rnn_run(tmp_path_factory) -> Path:
    """A small char-RNN trained on one batch of Shakespeare, with all three loggers on."""
    run_dir = tmp_path_factory.mktemp("char_rnn") / "run"
    train_run(
        run_dir,
        "experiment=char_rnn_shakespeare",
        *SMOKE,
        "model.hidden_size=32",
        "model.num_layers=1",
        "logger=[csv,tensorboard,wandb]",
        "callbacks.sample_writer.options.max_new_tokens=40",
    )
    return run_dir


def test_train_writes_every_promised_output(vae_run):
    results = json.loads((vae_run / "results.json").read_text())
    assert results["family"] == "vae" and results["name"] == "vae_digits"
    assert results["global_step"] == 4 and results["epochs"] == 2
    assert {"test/bpd", "test/nll_iw_bpd"} <= results["test"].keys()
    assert (
        0 < results["test"]["test/nll_iw_bpd"] < 8
    )  # bits/dim of 17-level data: at most log2(17)·2
    assert Path(results["checkpoints"]["last"]).is_file()
    assert Path(results["checkpoints"]["best"]).is_file()
    assert (
        (vae_run / "csv" / "metrics.csv").read_text().startswith(("epoch", "lr", "step", "train"))
    )
    assert (vae_run / ".hydra" / "config.yaml").is_file()
    for png in ["curves.png", "samples/epoch_001.png", "samples/reconstructions_epoch_001.png"]:
        with Image.open(vae_run / png) as image:
            assert image.width > 32 and image.height > 32


def test_checkpoints_are_plain_data_that_load_with_weights_only(vae_run, char_rnn_run):
    for run_dir in (vae_run, char_rnn_run):
        for path in (run_dir / "checkpoints").glob("*.ckpt"):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            assert checkpoint["zoo"]["family"] in ("vae", "char_rnn")
            assert checkpoint["hyper_parameters"]["spec"]["modality"] in ("image", "text")


def test_resume_continues_from_the_saved_step(vae_run, tmp_path):
    resumed_dir = tmp_path / "resumed"
    results = train_run(
        resumed_dir,
        *SMOKE,
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=2",
        f"ckpt_path={vae_run / 'checkpoints' / 'last.ckpt'}",
    )
    assert results["global_step"] == 6 and results["epochs"] == 3
    saved = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 6 and saved["epoch"] == 2
    # The curve history travelled in the checkpoint: the resumed plot starts at step 2, not 6.
    history = next(v for k, v in saved["callbacks"].items() if "CurvePlotter" in k)["history"]
    assert [step for step, _ in history["val/loss"]] == [2, 4, 6]


def test_sample_script_writes_a_grid_and_a_tensor_repeatably(vae_run, tmp_path):
    checkpoint = vae_run / "checkpoints" / "last.ckpt"
    for name, seed in [("a", 3), ("b", 3), ("c", 4)]:
        run_script(
            "sample.py",
            f"ckpt_path={checkpoint}",
            "num_samples=10",
            f"seed={seed}",
            f"output_dir={tmp_path / name}",
        )
    samples = {name: torch.load(tmp_path / name / "samples.pt") for name in "abc"}
    assert samples["a"].shape == (10, 1, 8, 8) and samples["a"].dtype == torch.float32
    assert samples["a"].min() >= -1 and samples["a"].max() <= 1
    assert torch.equal(samples["a"], samples["b"])
    assert not torch.equal(samples["a"], samples["c"])
    with Image.open(tmp_path / "a" / "samples.png") as grid:
        assert grid.width >= 4 * 32


def test_text_run_logs_everywhere_and_samples_continue_the_prompt(char_rnn_run, tmp_path):
    assert list((char_rnn_run / "tensorboard").glob("events.out.tfevents.*"))
    assert list((char_rnn_run / "wandb").glob("offline-run-*"))
    assert (char_rnn_run / "samples" / "epoch_000.txt").read_text().count("===== sample") == 4
    run_script(
        "sample.py",
        f"ckpt_path={char_rnn_run / 'checkpoints' / 'last.ckpt'}",
        "num_samples=3",
        "prompt=ROMEO:",
        "max_new_tokens=25",
        "temperature=0.8",
        "top_k=5",
        f"output_dir={tmp_path}",
    )
    text = (tmp_path / "samples.txt").read_text()
    assert text.count("===== sample") == 3
    assert text.count("ROMEO:") >= 3


def test_prompts_lose_a_byte_order_mark_and_an_undecodable_prompt_file_is_named(
    char_rnn_run, tmp_path
):
    checkpoint = char_rnn_run / "checkpoints" / "last.ckpt"
    options = {"ckpt_path": checkpoint, "num_samples": 1, "max_new_tokens": 5, "seed": 3}
    (tmp_path / "bom.txt").write_bytes(codecs.BOM_UTF8 + b"ROMEO:")
    from_file = sample(
        sample_config(**options, prompt_file=tmp_path / "bom.txt", output_dir=tmp_path / "a")
    )
    # A BOM pasted into the command line (Hydra's grammar takes it quoted) is dropped too.
    from_string = sample(
        sample_config(**options, prompt="'\ufeffROMEO:'", output_dir=tmp_path / "b")
    )
    texts = [(tmp_path / d / "samples.txt").read_text(encoding="utf-8") for d in ("a", "b")]
    assert texts[0] == texts[1] and "\ufeff" not in texts[0]
    assert texts[0].startswith("===== sample 0 =====\nROMEO:")
    assert from_file["num_samples"] == from_string["num_samples"] == 1
    (tmp_path / "latin1.txt").write_bytes("ROMEO: caf\u00e9".encode("latin-1"))
    with pytest.raises(ZooError, match=r"latin1.txt is not UTF-8 text: byte 10 \(0xe9\)"):
        sample(sample_config(ckpt_path=checkpoint, prompt_file=tmp_path / "latin1.txt"))


def sample_config(**overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("sample", overrides=[f"{k}={v}" for k, v in overrides.items()])


@pytest.mark.parametrize(
    "make_file,message",
    [
        (lambda path: None, "checkpoint not found"),
        (lambda path: path.write_bytes(b"not a checkpoint at all"), "cannot be read"),
        (lambda path: torch.save({"state_dict": {}}, path), "not a zoo checkpoint"),
        (lambda path: torch.save({"zoo": {"family": "vae"}, "f": print}, path), "plain values"),
    ],
    ids=["missing", "corrupt", "foreign", "pickled-code"],
)
def test_sample_names_the_cause_of_a_bad_checkpoint(tmp_path, make_file, message):
    path = tmp_path / "model.ckpt"
    make_file(path)
    with pytest.raises(ZooError, match=message):
        sample(sample_config(ckpt_path=path, output_dir=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_sample_refuses_an_option_the_family_does_not_take(vae_run, tmp_path):
    config = sample_config(ckpt_path=vae_run / "checkpoints" / "last.ckpt", prompt="hello")
    with pytest.raises(ZooError, match="prompt= is not an option of the vae family"):
        sample(config)


def test_sample_script_reports_errors_in_one_line_without_a_traceback(tmp_path):
    process = run_script("sample.py", f"ckpt_path={tmp_path / 'nothing.ckpt'}", check=False)
    assert process.returncode != 0
    assert "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines() == [
        f"sample.py: checkpoint not found: {tmp_path / 'nothing.ckpt'}. Pass ckpt_path= a .ckpt "
        "written by train.py (it prints them; e.g. outputs/<run>/checkpoints/last.ckpt)"
    ]


def test_run_ids_differ_between_processes():
    code = (
        "from omegaconf import OmegaConf; from zoo.resolvers import register_resolvers; "
        "register_resolvers(); print(OmegaConf.create({'d': '${run_id:}'}).d)"
    )
    ids = {
        subprocess.check_output([sys.executable, "-c", code], text=True).strip() for _ in range(3)
    }
    assert len(ids) == 3 and all(len(i) == 6 for i in ids)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_checkpoint_trained_on_gpu_samples_on_cpu(tmp_path):
    run_dir = tmp_path / "gpu"
    train_run(run_dir, "debug=smoke", "trainer.accelerator=gpu")
    run_script(
        "sample.py",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "device=cpu",
        "num_samples=4",
        f"output_dir={tmp_path / 'out'}",
    )
    assert torch.load(tmp_path / "out" / "samples.pt").shape == (4, 1, 8, 8)


def test_train_script_reports_a_missing_data_folder_in_one_line(tmp_path):
    process = run_script(
        "train.py",
        "data=image_folder",
        f"data.root={tmp_path / 'none'}",
        f"hydra.run.dir={tmp_path / 'run'}",  # the run's log stays out of the repository
        check=False,
    )
    assert process.returncode != 0 and "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines()[-1] == (
        f"train.py: image folder not found: {tmp_path / 'none'}; "
        "pass data.root=<a folder of images>"
    )
