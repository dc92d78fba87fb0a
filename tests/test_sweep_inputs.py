"""Sweep options that cannot work are refused in one line before any trial runs: the storage,
the search space, the counts, the sampler and the pruner. (Sweeps themselves: test_sweeps.py.)"""

import os
import sqlite3
from types import SimpleNamespace

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

# Hydra's plugin scan executes this module again in place, so its names are looked up when
# used (optuna_sweeper.SweepConfigError), never bound here once.
from hydra_plugins.zoo_optuna_sweeper import optuna_sweeper
from zoo.errors import ZooError
from zoo.sweeps import open_storage

AS_ROOT = os.geteuid() == 0  # root writes to read-only files: there is nothing to refuse


def sweeper(tmp_path, **options) -> optuna_sweeper.ZooOptunaSweeper:
    """Return the sweeper as Hydra builds it from conf/hparams_search, with ``options``."""
    defaults = {
        "study_name": "vae_digits",
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "direction": "min",
        "n_trials": 4,
        "n_jobs": 1,
        "sampler": {"_target_": "optuna.samplers.TPESampler", "seed": None},
        "pruner": {"_target_": "optuna.pruners.MedianPruner", "n_warmup_steps": 15},
        "params": {},
        "heartbeat_interval": 60,
        "grace_period": None,
    }
    return optuna_sweeper.ZooOptunaSweeper(**{**defaults, **options})


def refusal(tmp_path, **options) -> str:
    """Return the one-line message with which the sweeper refuses ``options``."""
    with pytest.raises(optuna_sweeper.SweepConfigError) as raised:
        sweeper(tmp_path, **options).check()
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_the_defaults_pass_and_build_the_sampler_and_pruner(tmp_path):
    built = sweeper(tmp_path)
    built.check()
    assert type(built.sampler).__name__ == "TPESampler"
    assert type(built.pruner).__name__ == "MedianPruner"
    assert built.direction == "minimize"
    assert not (tmp_path / "optuna.db").exists()  # checking writes nothing


# The storage -----------------------------------------------------------------------------


def test_a_storage_that_is_not_a_url_is_refused(tmp_path):
    assert refusal(tmp_path, storage="notaurl") == (
        "hydra.sweeper.storage=notaurl: 'notaurl' is not a database URL: use "
        "sqlite:///path/to/optuna.db for a file, or a server's SQLAlchemy URL such as "
        "postgresql://user@host/db"
    )


def test_a_text_file_given_as_sqlite_storage_is_refused_and_left_as_it_was(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes, not a database\n")
    message = refusal(tmp_path, storage=f"sqlite:///{notes}")
    assert message.endswith(
        f"{notes} is not an SQLite database (it begins b'my notes'): name a new file or an "
        "Optuna SQLite database"
    )
    assert notes.read_text() == "my notes, not a database\n"


def test_a_folder_given_as_sqlite_storage_is_refused(tmp_path):
    message = refusal(tmp_path, storage=f"sqlite:///{tmp_path}")
    assert message.endswith(f"is a folder: name a file in it, e.g. sqlite:///{tmp_path}/optuna.db")


def test_an_sqlite_file_whose_folder_cannot_be_created_is_refused(tmp_path):
    (tmp_path / "taken").write_text("a file where a folder should go")
    message = refusal(tmp_path, storage=f"sqlite:///{tmp_path / 'taken' / 'optuna.db'}")
    assert message.endswith(f"cannot be created: {tmp_path / 'taken'} is a file")


@pytest.mark.skipif(AS_ROOT, reason="root may write to read-only files")
def test_a_read_only_sqlite_file_or_folder_is_refused(tmp_path):
    database = tmp_path / "optuna.db"
    sqlite3.connect(database).close()
    database.chmod(0o444)
    assert "optuna.db is read-only" in refusal(tmp_path, storage=f"sqlite:///{database}")
    database.chmod(0o644)
    tmp_path.chmod(0o555)
    try:
        message = refusal(tmp_path, storage=f"sqlite:///{database}")
    finally:
        tmp_path.chmod(0o755)
    assert f"{tmp_path} is read-only: SQLite writes beside the database file" in message


def test_a_database_opened_read_only_is_one_line_not_an_sqlalchemy_traceback(tmp_path):
    # A read-only database as root sees one: opened with SQLite's mode=ro.
    database = tmp_path / "optuna.db"
    sqlite3.connect(database).close()
    with pytest.raises(ZooError, match="cannot be opened: attempt to write a readonly database"):
        open_storage(f"sqlite:///file:{database}?mode=ro&uri=true")


def test_a_server_database_without_its_driver_names_what_to_install(tmp_path, monkeypatch):
    import sqlalchemy.dialects.postgresql.psycopg as psycopg_dialect

    def missing():
        raise ModuleNotFoundError("No module named 'psycopg'")

    monkeypatch.setattr(psycopg_dialect.PGDialect_psycopg, "import_dbapi", missing)
    with pytest.raises(ZooError, match=r"needs a database driver that is not installed .*psycopg"):
        open_storage("postgresql+psycopg://zoo@db-host/zoo")


# Counts, direction, sampler and pruner -----------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_trials": 0}, "hydra.sweeper.n_trials=0: it must be a whole number of at least 1"),
        ({"n_jobs": -1}, "hydra.sweeper.n_jobs=-1: it must be a whole number of at least 1"),
        ({"direction": "up"}, "hydra.sweeper.direction=up is not a direction: use minimize or"),
        ({"heartbeat_interval": 0}, "hydra.sweeper.heartbeat_interval=0: it must be a whole"),
        ({"sampler": None}, "hydra.sweeper.sampler is null: name an Optuna sampler"),
    ],
)
def test_counts_and_directions_that_cannot_work_are_refused(tmp_path, options, message):
    assert refusal(tmp_path, **options).startswith(message)


def test_a_sampler_or_pruner_that_cannot_be_built_is_named_with_an_example(tmp_path):
    missing = refusal(tmp_path, sampler={"_target_": "optuna.samplers.NoSuchSampler"})
    assert missing.startswith(
        "hydra.sweeper.sampler (optuna.samplers.NoSuchSampler) cannot be built: "
    )
    assert missing.endswith("e.g. _target_: optuna.samplers.TPESampler")
    wrong_argument = refusal(
        tmp_path, pruner={"_target_": "optuna.pruners.MedianPruner", "warmup": 3}
    )
    assert "unexpected keyword argument 'warmup'" in wrong_argument
    swapped = refusal(tmp_path, pruner={"_target_": "optuna.samplers.RandomSampler"})
    assert swapped == (
        "hydra.sweeper.pruner: optuna.samplers.RandomSampler is not an Optuna pruner; name a "
        "class of optuna.pruners, e.g. optuna.pruners.MedianPruner"
    )


# The search space ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "model.beta=interval(2, 1)",
            "model.beta=interval(2, 1): the low end 2.0 is above the high end 1.0; "
            "write interval(low, high)",
        ),
        (
            "model.optimizer.lr=tag(log, interval(0, 0.1))",
            "model.optimizer.lr=tag(log, interval(0, 0.1)): ",
        ),
        (
            "model.num_layers=tag(int, interval(1.5, 4))",
            "model.num_layers=tag(int, interval(1.5, 4)): an int interval needs whole-number "
            "ends, got 1.5 and 4",
        ),
        ("data.batch_size=range(64, 16, 16)", "data.batch_size=range(64, 16, 16): the range"),
    ],
)
def test_a_search_space_that_holds_nothing_is_refused_in_one_line(override, message):
    with pytest.raises(optuna_sweeper.SweepConfigError) as raised:
        optuna_sweeper.parameter(OverridesParser.create().parse_override(override))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_an_empty_choice_in_the_config_names_the_parameter(tmp_path):
    searching = sweeper(tmp_path, params={"model.beta": "choice()", "seed": "1"})
    searching.hydra_context = SimpleNamespace(config_loader=None)
    with pytest.raises(optuna_sweeper.SweepConfigError) as raised:
        searching._search_space([])
    assert str(raised.value).startswith(
        "hydra.sweeper.params: model.beta=choice() cannot be parsed (ValueError while "
        "evaluating 'choice()': empty choice is not legal); write choice(a, b), "
    )
