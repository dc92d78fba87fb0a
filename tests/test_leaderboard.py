"""The leaderboard on folders as users have them: runs without the sort metric, and runs whose
results.json or config is broken (left out with a warning; the others are still ranked)."""

import json
import logging
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT
from PIL import Image

from zoo.errors import ZooError
from zoo.leaderboard import collect_runs, write_leaderboard


def write_run(folder, test: dict, family: str = "vae", config: dict | None = None) -> None:
    """Write a run folder as train.py leaves it: results.json and .hydra/config.yaml."""
    (folder / ".hydra").mkdir(parents=True)
    results = {
        "name": f"{family}_digits",
        "family": family,
        "data": "digits",
        "seed": 0,
        "val": {"val/loss": 1.0},
        "test": test,
        "num_parameters": 1234,
        "train_time_s": 5.0,
    }
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    config = config or {"seed": 0, "model": {"latent_dim": 8, "optimizer": {"lr": 1e-3}}}
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


def text_runs(root) -> None:
    """Two char-RNN runs: nats/char and perplexity, no FID (a text family has no judge)."""
    for index, loss in enumerate((1.6, 1.5)):
        write_run(root / f"rnn{index}", {"test/loss": loss, "test/perplexity": 2.7**loss}, "rnn")


def test_sorting_by_a_metric_no_run_has_names_the_metrics_there_are(tmp_path):
    text_runs(tmp_path)
    with pytest.raises(ZooError) as raised:
        write_leaderboard(tmp_path, "test/fid")
    assert str(raised.value) == (
        f"no run under {tmp_path} has test/fid; sort by one of: test/loss, test/perplexity, "
        "val/loss"
    )
    assert not (tmp_path / "leaderboard.md").exists()
    written = write_leaderboard(tmp_path, "test/loss")
    assert written["table"].read_text().index("rnn1") < written["table"].read_text().index("rnn0")


def test_the_default_sort_on_text_runs_exits_with_one_line(tmp_path):
    text_runs(tmp_path)
    process = subprocess.run(
        [sys.executable, "leaderboard.py", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 1 and process.stdout == ""
    assert process.stderr.splitlines() == [
        f"leaderboard.py: no run under {tmp_path} has test/fid; sort by one of: test/loss, "
        "test/perplexity, val/loss"
    ]


BROKEN_RESULTS = {
    "truncated": '{"family": "vae", "test": {"test/fid": 3.',
    "list": "[1, 2, 3]",
    "no_family": '{"test": {"test/fid": 3.0}}',
    "test_not_a_mapping": '{"family": "vae", "test": [3.0]}',
    "metric_not_a_number": '{"family": "vae", "test": {"test/fid": "low"}}',
    "not_utf8": b'{"family": "vae\xff"}',
}
BROKEN_CONFIGS = {
    "config_truncated": "model: {latent_dim: 8\n",
    "config_a_list": "- 1\n- 2\n",
    "config_model_a_string": "model: vae\nseed: 0\n",
}


def folder_with_broken_runs(root) -> None:
    """Two good runs, and one broken run for each fault above."""
    write_run(root / "good_a", {"test/fid": 5.0})
    write_run(root / "good_b", {"test/fid": 4.0}, config={"model": {"latent_dim": 16}})
    for name, text in BROKEN_RESULTS.items():
        (root / name).mkdir()
        path = root / name / "results.json"
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    for name, text in BROKEN_CONFIGS.items():
        write_run(root / name, {"test/fid": 1.0})
        (root / name / ".hydra" / "config.yaml").write_text(text)


def test_broken_runs_are_left_out_with_a_warning_and_the_table_is_written(tmp_path, caplog):
    folder_with_broken_runs(tmp_path)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        written = write_leaderboard(tmp_path, "test/fid")
    table = written["table"].read_text()
    assert table.startswith(f"# Leaderboard: 2 runs under {tmp_path}, sorted by test/fid")
    assert table.index("good_b") < table.index("good_a")  # FID 4 before 5
    assert "latent_dim=16" in table
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == len(BROKEN_RESULTS) + len(BROKEN_CONFIGS)
    for name in [*BROKEN_RESULTS, *BROKEN_CONFIGS]:
        assert any(
            message.startswith(f"run {tmp_path / name} left out of the leaderboard: ")
            for message in warnings
        ), name
    assert any("results.json cannot be read: " in message for message in warnings)
    assert any("'low', not a number" in message for message in warnings)
    assert any("names no family" in message for message in warnings)


def test_the_leaderboard_script_warns_in_one_line_per_broken_run_and_ranks_the_rest(tmp_path):
    write_run(tmp_path / "good", {"test/fid": 5.0})
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "results.json").write_text('{"family": "va')
    process = subprocess.run(
        [sys.executable, "leaderboard.py", str(tmp_path), "--out", str(tmp_path / "board")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    [warning] = process.stderr.splitlines()
    assert warning.startswith(f"leaderboard.py: run {tmp_path / 'cut'} left out of the leaderboard")
    assert "| good |" in (tmp_path / "board" / "leaderboard.md").read_text()


def test_a_damaged_sample_grid_leaves_its_panel_empty(tmp_path, caplog):
    write_run(tmp_path / "a", {"test/fid": 5.0})
    write_run(tmp_path / "b", {"test/fid": 4.0})
    for name in "ab":
        (tmp_path / name / "samples").mkdir()
        Image.new("RGB", (16, 16)).save(tmp_path / name / "samples" / "epoch_001.png")
    (tmp_path / "a" / "samples" / "epoch_002.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # cut short
    with caplog.at_level(logging.WARNING, logger="zoo"):
        written = write_leaderboard(tmp_path, "test/fid")
    assert "epoch_002.png left out of the figure" in caplog.text
    with Image.open(written["samples"]) as figure:
        assert figure.width > 300


def test_an_unwritable_output_folder_is_one_line_and_nothing_is_written(tmp_path):
    write_run(tmp_path / "a", {"test/fid": 5.0})
    (tmp_path / "taken").write_text("a file where the folder should go")
    with pytest.raises(ZooError, match=r"cannot write the leaderboard in .*taken.*--out"):
        write_leaderboard(tmp_path, "test/fid", tmp_path / "taken")
    assert [run.path.name for run in collect_runs(tmp_path)] == ["a"]
