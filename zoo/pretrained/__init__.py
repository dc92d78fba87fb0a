"""Pretrained models: the ones zoo ships, and any model saved in the Hugging Face layout.

A saved model is a folder of three files, the layout of the Hugging Face Hub:

    model.safetensors   the weights, as safetensors (tensors only: reading them runs no code);
                        the EMA weights where the run kept them; parameters in float16 where
                        the config says so (they are widened back to float32 on loading)
    config.json         what rebuilds the model: its family (looked up in zoo.models.FAMILIES),
                        the family constructor's hyperparameters (plain values), the data
                        record; and what describes it: zoo's version, the train command, metrics
                        with their units, the parameter count, the data's licence
    README.md           the model card, written from config.json

The models zoo ships are such folders inside this package (``zoo/pretrained/<name>/``),
listed in ``zoo/pretrained/index.json``; ``bench/make_pretrained.py`` trains each from its
preset and writes both. The environment variable ``ZOO_PRETRAINED_DIR`` names another folder
of the same shape to read the shipped models from instead. Nothing a saved folder holds
makes zoo fetch, write or run anything: the family is looked up in zoo's own table, the only
code a config may name is an optimizer or a learning-rate schedule of torch.optim or
zoo.nn.schedules (used when training resumes), and the data record's locations are dropped.

This module imports only the standard library: listing the models is instant, and
``import zoo`` stays cheap. torch and the families are imported when a model is loaded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError

if TYPE_CHECKING:
    from zoo.models import GenerativeModule

FORMAT = "zoo-pretrained"  # config.json's "format"
FORMAT_VERSION = 1  # config.json's "format_version": raised when the layout changes
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
FILES = (WEIGHTS, CONFIG, CARD)
INDEX = "index.json"  # {"models": [names]}: the shipped models, in the order they are listed
ENVIRONMENT = "ZOO_PRETRAINED_DIR"
NAME = re.compile(r"[a-z][a-z0-9_]*")  # a shipped model's name: a Python identifier, a folder
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")  # a Hugging Face Hub repository: owner/name
REBUILD = "python bench/make_pretrained.py {name}"  # the command that rebuilds a shipped model


# Where the shipped models are --------------------------------------------------------------


def package_dir() -> Path:
    """Return the folder of the models that ship inside the installed package."""
    return Path(__file__).resolve().parent


def registry_dir() -> Path:
    """Return the folder shipped models are read from: ``$ZOO_PRETRAINED_DIR`` when set,
    else the package's own (:func:`package_dir`)."""
    override = os.environ.get(ENVIRONMENT)
    return Path(override) if override else package_dir()


def shipped_names(root: str | Path | None = None) -> list[str]:
    """Return the names of the shipped models listed in ``<root>/index.json`` (the registry
    folder by default); [] when there is no index. Raises ZooError for an index that is not
    a list of names (lower-case identifiers)."""
    path = Path(root or registry_dir()) / INDEX
    if not path.is_file():
        return []
    try:
        names = json.loads(path.read_text(encoding="utf-8"))["models"]
    except (ValueError, KeyError, TypeError) as error:
        raise ZooError(
            f"{path} is not an index of shipped models ({error}): rewrite it with "
            "`python bench/make_pretrained.py`"
        ) from None
    bad = [name for name in names if not (isinstance(name, str) and NAME.fullmatch(name))]
    if not isinstance(names, list) or bad:
        raise ZooError(
            f"{path} lists names that are not model names (lower-case identifiers): {bad}; "
            "rewrite it with `python bench/make_pretrained.py`"
        )
    return names


def shipped_path(name: str, root: str | Path | None = None) -> Path:
    """Return the folder of the shipped model ``name``; raises ZooError naming the shipped
    models when there is none of that name."""
    names = shipped_names(root)
    if name not in names:
        listed = ", ".join(names) if names else "none in this install"
        raise ZooError(f"no shipped model is named {name!r}; the shipped models: {listed}")
    return Path(root or registry_dir()) / name


def shipped_judge(data_name: str) -> Path | None:
    """Return the folder of the shipped judge of a data set, the model
    ``classifier_<data_name>``; None when none ships."""
    name = f"classifier_{data_name}"
    if NAME.fullmatch(name) and name in shipped_names():
        return shipped_path(name)
    return None


def write_index(root: str | Path, names: list[str]) -> Path:
    """Return ``<root>/index.json`` after writing ``names`` there as the shipped models."""
    from zoo.outputs import write_json

    bad = [name for name in names if not NAME.fullmatch(name)]
    if bad:
        raise ZooError(f"model names must be lower-case identifiers, got {bad}")
    return write_json(Path(root) / INDEX, {"models": list(dict.fromkeys(names))})


def read_config(directory: str | Path) -> dict[str, Any]:
    """Return a saved model's config.json as plain values.

    Raises ZooError when the folder or its config is missing, not JSON, not zoo's, or of a
    newer format than this zoo reads.
    """
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise ZooError(
            f"{directory} is not a saved zoo model: it has no {CONFIG}. Pass a folder written "
            "by zoo.save_pretrained or `python -m zoo.export`, a shipped model's name, or a "
            "run's .ckpt"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ZooError(f"{path} is not valid JSON ({error}): the folder is damaged") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ZooError(f'{path} is not the config of a zoo model (no "format": "{FORMAT}")')
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ZooError(
            f"{path} is of format version {version!r}, and this zoo reads up to "
            f"{FORMAT_VERSION}: upgrade zoo to load it"
        )
    return config


# Listing -----------------------------------------------------------------------------------


def list_models(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Return one row per shipped model: ``name``, ``family``, ``data``, ``parameters`` and the
    headline ``metric`` with its ``value`` and ``unit`` (None where the card records none).

    Reads only the JSON configs (no torch). Raises ZooError for a listed model whose folder
    is missing or whose config cannot be read.
    """
    rows = []
    for name in shipped_names(root):
        config = read_config(shipped_path(name, root))
        headline = config.get("headline_metric")
        entry = (config.get("metrics") or {}).get(headline) or {}
        rows.append(
            {
                "name": name,
                "family": config.get("family"),
                "data": (config.get("data") or {}).get("name"),
                "parameters": config.get("num_parameters"),
                "metric": headline,
                "value": entry.get("value"),
                "unit": entry.get("unit"),
            }
        )
    return rows


def format_models(rows: list[dict[str, Any]]) -> str:
    """Return the rows of :func:`list_models` as an aligned text table."""
    if not rows:
        return (
            "no pretrained models ship with this install (build them with "
            "`python bench/make_pretrained.py`)"
        )
    header = ["name", "family", "data", "parameters", "metric"]
    lines = [header]
    for row in rows:
        value = "" if row["value"] is None else f"{row['metric']} = {row['value']:.4g}"
        unit = f" {row['unit']}" if row["unit"] and row["unit"] != "fraction" else ""
        parameters = f"{row['parameters']:,}" if row["parameters"] is not None else "?"
        lines.append([row["name"], row["family"], str(row["data"]), parameters, value + unit])
    widths = [max(len(line[i]) for line in lines) + 2 for i in range(len(header))]
    return "\n".join(
        "".join(f"{c:<{w}}" for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


# Loading -----------------------------------------------------------------------------------


def _is_saved_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file()


def load(name_or_path: str | Path, device: str = "cpu") -> GenerativeModule:
    """Return a model in eval mode on ``device``, with its EMA weights where it has them.

    ``name_or_path``: a shipped model's name (:func:`list_models`), a run's ``.ckpt``, or a
    folder written by :func:`save_pretrained`. Sample with ``model.sample(16, generator=…)``.
    Raises ZooError (one line) for a name that is none of these, a damaged file, or a shipped
    model that no longer fits the code (naming the command that rebuilds it).
    """
    from zoo.pretrained import folder

    path = Path(name_or_path)
    if path.is_file():
        return folder.load_run_checkpoint(path, device)
    name = str(name_or_path)
    if not _is_saved_folder(path) and NAME.fullmatch(name) and name in shipped_names():
        path = shipped_path(name)
    if _is_saved_folder(path):
        who, remedy = _provenance(path)
        return folder.load_folder(path, device, who=who, remedy=remedy)
    if path.is_dir():
        read_config(path)  # says what the folder lacks
    names = ", ".join(shipped_names()) or "none in this install"
    raise ZooError(
        f"{name!r} is no shipped model, checkpoint or saved folder; the shipped models: "
        f"{names}. Or pass a run's .ckpt, or a folder written by zoo.save_pretrained"
    )


def _provenance(directory: Path) -> tuple[str, str]:
    """Return how messages name a saved model, and how to fix one that no longer fits the
    code: a shipped model is rebuilt from its preset, any other exported again."""
    directory = Path(directory).resolve()
    for root in {registry_dir().resolve(), package_dir()}:
        if directory.parent == root and directory.name in shipped_names(root):
            rebuild = REBUILD.format(name=directory.name)
            return f"the shipped model {directory.name}", f"rebuild it with `{rebuild}`"
    return str(directory), (
        "export it again from its run's checkpoint with this zoo "
        f"(`python -m zoo.export ckpt_path=<run>/checkpoints/last.ckpt out={directory}`)"
    )


def from_pretrained(
    dir_or_repo_id: str | Path, device: str = "cpu", revision: str | None = None
) -> GenerativeModule:
    """Return the model saved in a folder, or in a Hugging Face Hub repository (``owner/name``,
    fetched with huggingface_hub's ``snapshot_download`` into its cache: ``pip install
    "zoo[hub]"``), in eval mode on ``device``. A local folder is always preferred to a
    repository of the same name. Raises ZooError for neither, or a failed download.
    """
    from zoo.pretrained import folder

    path = Path(dir_or_repo_id)
    if path.is_dir():
        who, remedy = _provenance(path)
        return folder.load_folder(path, device, who=who, remedy=remedy)
    if not REPO_ID.fullmatch(str(dir_or_repo_id)):
        raise ZooError(
            f"{dir_or_repo_id} is neither a folder nor a Hugging Face Hub repository id "
            "(owner/name); for a shipped model or a .ckpt use zoo.load"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ZooError(
            f"loading {dir_or_repo_id} from the Hugging Face Hub needs huggingface_hub: "
            'pip install "zoo[hub]"'
        ) from None
    try:
        local = snapshot_download(str(dir_or_repo_id), revision=revision, allow_patterns=FILES)
    except Exception as error:  # offline, not found, gated: huggingface_hub raises many types
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ZooError(
            f"could not fetch {dir_or_repo_id} from the Hugging Face Hub: {reason}"
        ) from None
    return folder.load_folder(
        Path(local),
        device,
        who=str(dir_or_repo_id),
        remedy=f"load it with the zoo version that saved it, or ask {dir_or_repo_id}'s owner "
        "to export it again",
    )


# Saving ------------------------------------------------------------------------------------


def save_pretrained(
    source: GenerativeModule | str | Path | dict[str, Any],
    directory: str | Path,
    *,
    name: str | None = None,
    half: bool = False,
    description: dict[str, Any] | None = None,
) -> Path:
    """Return ``directory`` after writing ``model.safetensors``, ``config.json`` and the model
    card ``README.md`` there (each file written whole, or not at all).

    ``source``: a family module (as trained, or loaded), a run's ``.ckpt`` path or its loaded
    contents (the EMA weights replace the live ones where the run kept them). ``half`` stores
    the parameters in float16 (buffers keep their precision). ``description`` adds what
    the card records: ``train_command``, ``train_time_s``, ``metrics`` ({name: {"value",
    "unit"}}), ``headline_metric``, ``check``, ``judge``, ``seed``, ``notes``, ``data_licence``.
    Raises ZooError for non-finite weights or hyperparameters JSON cannot hold.
    """
    from zoo.pretrained import folder

    return folder.save(source, directory, name=name, half=half, description=description or {})


def push_to_hub(
    source: GenerativeModule | str | Path | dict[str, Any],
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload a zoo model",
) -> str:
    """Return the URL of the commit that uploads a model to the Hugging Face Hub repository
    ``repo_id`` (created when missing): a saved folder as it is, or anything
    :func:`save_pretrained` takes, saved first to a temporary folder. Needs huggingface_hub
    (``pip install "zoo[hub]"``) and a login (``hf auth login``) or ``token``.
    """
    import tempfile

    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ZooError(
            'pushing to the Hugging Face Hub needs huggingface_hub: pip install "zoo[hub]"'
        ) from None
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="zoo-push-") as scratch:
        if isinstance(source, (str, Path)) and _is_saved_folder(Path(source)):
            folder_path = Path(source)
            read_config(folder_path)
        else:
            folder_path = save_pretrained(source, scratch)
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder_path),
            allow_patterns=list(FILES),
            commit_message=commit_message,
        )
    return str(getattr(commit, "commit_url", commit))


# torch.hub ---------------------------------------------------------------------------------


def hub_entry_points(root: str | Path | None = None) -> dict[str, Callable[..., Any]]:
    """Return one torch.hub entry point per shipped model, by name: ``entry(device="cpu")``
    loads it (:func:`load`). hubconf.py at the repository's root publishes them."""
    entries = {}
    for row in list_models(root):
        entries[row["name"]] = _hub_entry(row, root)
    return entries


def _hub_entry(row: dict[str, Any], root: str | Path | None) -> Callable[..., Any]:
    name = row["name"]

    def entry(device: str = "cpu"):
        return load(Path(root) / name if root else name, device=device)

    headline = (
        f"; {row['metric']} {row['value']:.4g} {row['unit'] or ''}".rstrip()
        if row["value"] is not None
        else ""
    )
    parameters = f"{row['parameters']:,}" if row["parameters"] is not None else "?"
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (
        f"zoo's {row['family']} model trained on {row['data']} ({parameters} "
        f"parameters{headline}).\n\nReturns it in eval mode on ``device``, with its EMA weights "
        "where it has them; draw with ``model.sample(16, generator=torch.Generator())``."
    )
    return entry
