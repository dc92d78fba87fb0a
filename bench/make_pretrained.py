"""Train, check and export the pretrained models zoo ships, each from its own preset.

    python bench/make_pretrained.py                          # every model in PRESETS (hours)
    python bench/make_pretrained.py gan_digits               # one model (its judge must ship)
    python bench/make_pretrained.py classifier_digits vae_digits --smoke --out /tmp/models
    python bench/make_pretrained.py gan_mnist5k --work runs --reuse   # export runs/gan_mnist5k

For each model, in PRESETS' order (the judges first: the other image models' FID is
measured with them):

1. ``python train.py experiment=NAME`` runs in a subprocess into a fresh run folder (under
   ``--work``), with the shipped models read from ``--out`` (ZOO_PRETRAINED_DIR), so its
   end-of-training FID is measured with the judge that ships beside it; a prior over codes
   trains after its VQ-VAE, on that run's checkpoint (``model.stage_one=``).
2. results.json gives its test metrics and wall time; the checkpoint train.py evaluated (the
   best, else the last) is exported, its EMA weights in, to a staging folder.
3. The check (zoo/pretrained/check.py) is measured on the exported weights; with half
   precision the float16 export is kept only where the check moves less than
   HALF_TOLERANCES from float32's.
4. The card records the command, wall time, machine, metrics with units and the check; the
   folder replaces ``<out>/NAME`` and ``<out>/index.json`` lists it.

``--smoke`` trains each preset for one batch (``debug=smoke``; ``test=false``, since the
check measures the test split anyway, and a diffusion model's test bound takes minutes) into
a temporary folder: it checks the whole path, and what it writes is not worth shipping.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.pretrained import (  # noqa: E402 (the repository's zoo, not an installed one)
    ENVIRONMENT,
    load,
    package_dir,
    shipped_names,
    write_index,
)


@dataclass(frozen=True)
class Preset:
    """How one shipped model is made from its preset ``conf/experiment/<name>.yaml``."""

    data: str  # the data set (its judge is classifier_<data>)
    headline: str  # the metric zoo.list_models shows
    # What tests re-measure (None: the family's, see check_kind) and on how many samples. The
    # checks of all models together must stay fast enough to run with the tests: drawing
    # PixelCNN samples a pixel at a time takes minutes, so a PixelCNN is checked on its exact
    # test bits/dim; a diffusion or flow sample costs 20-40 network calls (0.4-1.3 s on 2
    # busy cores), but their ODE samplers turn the same noise into the same images on any
    # machine, up to rounding, so a few dozen make a steady check.
    check: str | None = None
    check_samples: int = 300
    half: bool = True  # try float16 weights (kept where the check holds)
    stage_one: str | None = None  # the preset trained first, whose checkpoint is model.stage_one


# Every CPU preset that ships, judges first. tests/test_pretrained.py checks that every
# CPU preset of conf/experiment is here or in NOT_SHIPPED.
PRESETS = {
    "classifier_digits": Preset("digits", "test/accuracy"),
    "classifier_mnist5k": Preset("mnist5k", "test/accuracy"),
    "vae_digits": Preset("digits", "test/fid"),
    "vae_spatial_digits": Preset("digits", "test/fid"),
    "pixelcnn_digits": Preset("digits", "test/fid", check="test/bpd"),
    "diffusion_digits": Preset("digits", "test/fid", check_samples=64),
    "flow_digits": Preset("digits", "test/fid", check_samples=64),
    "dit_digits": Preset("digits", "test/fid"),
    "gan_digits": Preset("digits", "test/fid"),
    "vq_gpt_digits": Preset("digits", "test/fid", stage_one="vqvae_digits"),
    "latent_flow_digits": Preset("digits", "test/fid", stage_one="vae_spatial_digits"),
    "char_rnn_shakespeare": Preset("shakespeare", "test/loss"),
    "gpt_shakespeare_cpu": Preset("shakespeare", "test/loss"),
    "gpt_shakespeare_bpe": Preset("shakespeare", "test/loss"),
    "vae_mnist5k": Preset("mnist5k", "test/fid"),
    "vae_spatial_mnist5k": Preset("mnist5k", "test/fid"),
    "gan_mnist5k": Preset("mnist5k", "test/fid"),
    "pixelcnn_mnist5k": Preset("mnist5k", "test/fid", check="test/bpd"),
    "diffusion_mnist5k": Preset("mnist5k", "test/fid", check_samples=24),
    "flow_mnist5k": Preset("mnist5k", "test/fid", check_samples=24),
    "vq_gpt_mnist5k": Preset("mnist5k", "test/fid", stage_one="vqvae_mnist5k"),
}
# The CPU presets that ship no model of their own, and why.
NOT_SHIPPED = {
    "vqvae_digits": "a first stage, shipped inside vq_gpt_digits (a VQ-VAE draws no samples)",
    "vqvae_mnist5k": "a first stage, shipped inside vq_gpt_mnist5k",
    "dit_mnist5k": "8.4 MB in float16, past the package's budget: the DiT ships as dit_digits",
    "latent_flow_mnist5k": "8.7 MB in float16, past the package's budget: latent flow ships as "
    "latent_flow_digits",
}
BUDGET_MB = 40  # the shipped models together, as the package carries them
SMOKE = ["debug=smoke", "test=false", "evaluation.num_samples=20"]


def judge_of(name: str) -> str | None:
    """Return the judge whose features a model's FID is measured in (None for a classifier
    or a text model)."""
    preset = PRESETS[name]
    if name.startswith("classifier_") or preset.data == "shakespeare":
        return None
    return f"classifier_{preset.data}"


def folder_bytes(folder: Path) -> int:
    """Return the bytes of the files in a model's folder, as the package carries them."""
    return sum(p.stat().st_size for p in folder.iterdir())


def machine() -> str:
    """Return a line describing this machine and the library versions."""
    import torch

    return (
        f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def train(
    overrides: list[str], run_dir: Path, work: Path, out: Path, reuse: bool = False
) -> tuple[dict, float]:
    """Return results.json of ``python train.py overrides…`` run into ``run_dir``, and its
    wall time in seconds. The console goes to ``<run_dir>.log``.

    With ``reuse``, a run that already finished in ``run_dir`` (its results.json written by
    the same experiment) is returned instead, with its training time (results.json's
    ``train_time_s``); a results.json of another experiment is refused (SystemExit)."""
    experiment = overrides[0].removeprefix("experiment=")
    finished = run_dir / "results.json"
    if reuse and finished.is_file():
        results = json.loads(finished.read_text())
        if results.get("name") != experiment:
            raise SystemExit(
                f"make_pretrained.py: {finished} is a run of {results.get('name')!r}, not of "
                f"{experiment!r}: point --work at a folder whose <name>/ runs are those presets"
            )
        print(f"  reusing the finished run {run_dir}", flush=True)
        return results, results["train_time_s"]
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: never resume an earlier one
    locations = [
        "resume=never",
        f"hydra.run.dir={run_dir}",
        f"paths.judges_dir={work / 'judges'}",  # no user judge: the shipped one in out
        f"paths.cache_dir={work / 'cache'}",
    ]
    command = [sys.executable, "train.py", *overrides, *locations]
    env = {**os.environ, ENVIRONMENT: str(out), "WANDB_MODE": "offline"}
    log_path = run_dir.with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"  $ python train.py {shlex.join(overrides)}   (log: {log_path})", flush=True)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"train.py failed ({process.returncode}); the end of {log_path}:\n{tail}")
    return json.loads((run_dir / "results.json").read_text()), seconds


def tested_checkpoint(results: dict) -> str:
    """Return the checkpoint train.py evaluated: the best, else the last."""
    return results["checkpoints"]["best"] or results["checkpoints"]["last"]


def export(
    name: str,
    results: dict,
    command: str,
    wall_time: float,
    out: Path,
    work: Path,
    half: bool,
    check_samples: int,
) -> dict:
    """Return the config of the model exported from a finished run to ``<out>/<name>``."""
    from zoo.pretrained import save_pretrained
    from zoo.pretrained.card import metrics_with_units
    from zoo.pretrained.check import HALF_TOLERANCES, check_kind, measure, within
    from zoo.pretrained.folder import describe

    preset = PRESETS[name]
    description = {
        "train_command": command,
        "train_time_s": round(wall_time, 1),
        "seed": results.get("seed"),
        "machine": machine(),
        "metrics": metrics_with_units(results["family"], results["test"]),
        "headline_metric": preset.headline,
        "judge": judge_of(name),
    }
    if "evaluation_error" in results:
        raise SystemExit(f"{name}: the run's evaluation failed: {results['evaluation_error']}")
    source = tested_checkpoint(results)
    checks = {}
    for dtype in ("float32", "float16") if half else ("float32",):
        staging = out / f".{name}.{dtype}"
        shutil.rmtree(staging, ignore_errors=True)
        save_pretrained(
            source, staging, name=name, half=dtype == "float16", description=description
        )
        model = load(staging)
        checks[dtype] = measure(
            model,
            preset.check or check_kind(model.family, model.spec.modality),
            num_samples=check_samples,
            judge=judge_of(name),
            cache_dir=str(work / "cache"),
        )
        print(f"  check ({dtype}): {checks[dtype]['metric']} = {checks[dtype]['value']:.4g}")
    kept = "float32"
    notes = f"Checked in float32: {checks['float32']['value']:.4g}."
    if half:
        metric = checks["float32"]["metric"]
        holds = within(
            checks["float16"]["value"], checks["float32"]["value"], HALF_TOLERANCES[metric]
        )
        kept = "float16" if holds else "float32"
        verdict = "kept float16" if holds else "kept float32: float16 moves it too far"
        notes = (
            f"{metric}: {checks['float32']['value']:.4g} with float32 weights, "
            f"{checks['float16']['value']:.4g} with float16 ({verdict})."
        )
    staging = out / f".{name}.{kept}"
    config = describe(staging, check=checks[kept], notes=notes)
    final = out / name
    previous = out / f".{name}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if final.exists():
        final.rename(previous)
    staging.rename(final)
    for leftover in (previous, out / f".{name}.float16", out / f".{name}.float32"):
        shutil.rmtree(leftover, ignore_errors=True)
    names = [*shipped_names(out), name]
    ordered = [n for n in PRESETS if n in names] + [n for n in names if n not in PRESETS]
    write_index(out, ordered)
    return config


def make(
    name: str,
    out: Path,
    work: Path,
    smoke: bool,
    half: bool,
    runs: dict[str, tuple[dict, float]],
    reuse: bool = False,
) -> dict:
    """Return the config of ``name`` after training, checking and exporting it. ``runs`` holds
    this invocation's finished runs (results.json and seconds) by preset: a first stage made
    as a model of its own is not trained again for its second stage."""
    preset = PRESETS[name]
    print(f"{name}", flush=True)
    extra = SMOKE if smoke else []
    commands, wall_time = [], 0.0
    overrides = [f"experiment={name}", *extra]
    if preset.stage_one:
        first = [f"experiment={preset.stage_one}", *extra]
        if preset.stage_one not in runs:
            runs[preset.stage_one] = train(first, work / preset.stage_one, work, out, reuse)
        first_results, first_seconds = runs[preset.stage_one]
        overrides.append(f"model.stage_one={tested_checkpoint(first_results)}")
        commands.append(shlex.join(["python", "train.py", *first]))
        wall_time += first_seconds
    runs[name] = train(overrides, work / name, work, out, reuse)
    results, seconds = runs[name]
    stage_one = f"outputs/{preset.stage_one}/<run>/checkpoints/<best>.ckpt"
    shown = [
        o if not o.startswith("model.stage_one=") else f"model.stage_one={stage_one}"
        for o in overrides
    ]
    commands.append(shlex.join(["python", "train.py", *shown]))
    check_samples = min(preset.check_samples, 20) if smoke else preset.check_samples
    return export(
        name, results, "\n".join(commands), wall_time + seconds, out, work, half, check_samples
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"models to make (default: all): {list(PRESETS)}")
    parser.add_argument(
        "--smoke", action="store_true", help="one batch each, into a temporary folder"
    )
    parser.add_argument("--out", type=Path, help="where the models go (default: zoo/pretrained)")
    parser.add_argument(
        "--work", type=Path, help="where the runs go (default: outputs/pretrained/<time>)"
    )
    parser.add_argument(
        "--half",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="try float16 weights (default: each preset's choice)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="export the runs already finished in --work/<name> instead of training them again",
    )
    args = parser.parse_args()

    unknown = [n for n in args.names if n not in PRESETS]
    if unknown:
        raise SystemExit(
            f"make_pretrained.py: unknown models {unknown}; known: {', '.join(PRESETS)}"
        )
    if args.reuse and not args.work:
        raise SystemExit("make_pretrained.py: --reuse needs --work, the folder of finished runs")
    names = [n for n in PRESETS if n in args.names] if args.names else list(PRESETS)
    out = args.out or (
        Path(tempfile.mkdtemp(prefix="zoo-pretrained-smoke-")) if args.smoke else package_dir()
    )
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    work = args.work or (out / ".runs" if args.smoke else ROOT / "outputs" / "pretrained" / stamp)
    out.mkdir(parents=True, exist_ok=True)
    os.environ[ENVIRONMENT] = str(out)  # the checks judge with the judges made here
    import lightning  # noqa: F401 (it sets its loggers' levels when imported)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # Every FID is measured with a judge that ships: refuse before training what would lack one.
    available = set(shipped_names(out)) | set(names)
    missing = sorted({judge_of(n) for n in names} - {None} - available)
    if missing:
        raise SystemExit(
            f"make_pretrained.py: the judges {missing} are neither in {out} nor listed: "
            f"list them first (python bench/make_pretrained.py {' '.join(missing + names)})"
        )
    print(f"models into {out}; runs into {work}", flush=True)
    rows, runs = [], {}
    for name in names:
        half = PRESETS[name].half if args.half is None else args.half
        config = make(name, out, work, args.smoke, half, runs, args.reuse)
        size = folder_bytes(out / name)
        check = config["check"]
        rows.append(
            (name, config["num_parameters"], config["dtype"], size, check, config["train_time_s"])
        )
    print()
    print(
        f"{'model':<22}{'parameters':>12}  {'dtype':<8}{'size':>12}  {'check':<28}{'wall time':>10}"
    )
    for name, parameters, dtype, size, check, seconds in rows:
        figure = f"{check['metric']} = {check['value']:.4g}"
        size_mb = f"{size / 1e6:.2f} MB"
        print(
            f"{name:<22}{parameters:>12,}  {dtype:<8}{size_mb:>12}  {figure:<28}{seconds:>8.0f} s"
        )
    listed = [out / name for name in shipped_names(out)]
    total = sum(folder_bytes(folder) for folder in listed)
    over = f": over the budget of {BUDGET_MB} MB" if total > BUDGET_MB * 1e6 else ""
    print(f"{len(listed)} models in {out}: {total / 1e6:.2f} MB{over}")


if __name__ == "__main__":
    main()
