"""Image generators side by side at equal CPU wall time: pixel DDPM (UNet), pixel flow
matching (UNet) and latent flow matching (a spatial VAE, then a DiT flow on its latents).

    python bench/image_generators_mnist5k.py --minutes 20            # the recorded run
    python bench/image_generators_mnist5k.py --minutes 0.2 --data digits --num-samples 200 \\
        --judges-dir /tmp/judges                                     # a smoke run, ≈ 3 min

Each contender trains through train.py, from its preset, for the same wall-clock budget
(Lightning's ``max_time``; the generators' epoch bound lifted, so time alone stops them).
The latent flow's budget covers BOTH of its stages: ``--first-stage-share`` of it trains
the VAE, the rest the flow. Every last checkpoint (its EMA weights) then draws
``--num-samples`` samples with the same seed at each number of network calls in
``--calls`` (the DDPM with its preset's sampler, the flows with Heun), judged against the
held-out test images in the judge's feature space (zoo's evaluation: train the judge once
with ``python train.py experiment=classifier_mnist5k``). The DDPM is also judged with
ancestral sampling through all its 1,000 steps with ``--ddpm-full`` (slow on a CPU).

The networks' parameters and training throughput are bench/step_times.py's.

Prints Markdown tables and writes everything measured to ``<out>/results.json``. Set
OMP_NUM_THREADS to the cores to use (the recorded figures: 2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from zoo.checkpoints import datamodule_from_checkpoint, load_checkpoint, model_from_checkpoint
from zoo.evaluation import Evaluation
from zoo.models.base import draw_samples

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {  # per data set: the preset of each contender
    "mnist5k": {
        "ddpm": "diffusion_mnist5k",
        "flow": "flow_mnist5k",
        "first_stage": "vae_spatial_mnist5k",
        "latent": "latent_flow_mnist5k",
    },
    "digits": {
        "ddpm": "diffusion_digits",
        "flow": "flow_digits",
        "first_stage": "vae_spatial_digits",
        "latent": "latent_flow_digits",
    },
}
UNBOUNDED_EPOCHS = "trainer.max_epochs=1000000"  # time is the bound


def max_time(seconds: float) -> str:
    """Return Lightning's max_time string DD:HH:MM:SS for ``seconds`` (at least one)."""
    seconds = max(1, round(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{seconds:02d}"


def train(preset: str, run_dir: Path, seconds: float, *overrides: str) -> tuple[Path, dict]:
    """Return the last checkpoint and results.json of ``train.py experiment=preset`` stopped
    after ``seconds`` of training."""
    command = [
        sys.executable,
        "train.py",
        f"experiment={preset}",
        f"hydra.run.dir={run_dir}",
        f"++trainer.max_time={max_time(seconds)}",
        "test=false",
        "evaluation.enabled=false",
        *overrides,
    ]
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"{preset} failed:\n{process.stderr[-3000:]}")
    results = json.loads((run_dir / "results.json").read_text())
    results["wall_s"] = round(time.perf_counter() - start, 1)
    return run_dir / "checkpoints" / "last.ckpt", results


def judge(
    path: Path, calls: list[int], evaluation: Evaluation, num_samples: int, batch_size: int
) -> list[dict]:
    """Return, per number of network calls, the FID (and friends) of ``num_samples`` samples
    of a checkpoint and the images per second it drew them at."""
    checkpoint = load_checkpoint(path)
    model = model_from_checkpoint(checkpoint)
    datamodule = datamodule_from_checkpoint(checkpoint)
    rows = []
    for count in calls:
        options = {"steps": count} if count else {"sampler": "ddpm"}
        images, seconds = draw_samples(
            model, num_samples, seed=evaluation.seed, batch_size=batch_size, **options
        )
        made = getattr(model, "last_network_calls", None)
        if made is None:  # a family that does not count: its steps (or all T for ddpm)
            made = count or model.noise_schedule.num_steps
        scores = evaluation.judge_images(images, datamodule, model.data_record)
        rows.append(
            {
                "network_calls": made,
                "images_per_second": num_samples / seconds,
                **{name: scores[name] for name in ("fid", "kid", "precision", "recall")},
                "classes": scores["classes"],
            }
        )
        print(f"  {path.parent.parent.name}: {rows[-1]}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget of each")
    parser.add_argument("--data", choices=sorted(PRESETS), default="mnist5k")
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--first-stage-share", type=float, default=0.25)
    parser.add_argument("--ddpm-full", action="store_true", help="also DDPM with all T steps")
    parser.add_argument("--judges-dir", default="judges")
    parser.add_argument("--out", default="outputs/bench_image_generators")
    arguments = parser.parse_args()

    presets = PRESETS[arguments.data]
    out = Path(arguments.out).resolve()
    budget = arguments.minutes * 60
    judges = f"paths.judges_dir={arguments.judges_dir}"
    print(f"torch threads: {torch.get_num_threads()}; {arguments.minutes} min of training each")

    runs: dict[str, tuple[Path, dict]] = {}
    runs["ddpm"] = train(presets["ddpm"], out / "ddpm", budget, UNBOUNDED_EPOCHS, judges)
    runs["flow"] = train(presets["flow"], out / "flow", budget, UNBOUNDED_EPOCHS, judges)
    first_seconds = budget * arguments.first_stage_share
    first, first_results = train(presets["first_stage"], out / "first_stage", first_seconds, judges)
    runs["latent"] = train(
        presets["latent"],
        out / "latent",
        budget - first_seconds,
        UNBOUNDED_EPOCHS,
        f"model.stage_one={first}",
        judges,
    )

    evaluation = Evaluation(judges_dir=arguments.judges_dir)
    calls = list(arguments.calls)
    judged = {
        name: judge(
            path,
            calls + ([0] if name == "ddpm" and arguments.ddpm_full else []),
            evaluation,
            arguments.num_samples,
            arguments.batch_size,
        )
        for name, (path, _) in runs.items()
    }
    names = {
        "ddpm": f"pixel DDPM, UNet ({presets['ddpm']})",
        "flow": f"pixel flow, UNet ({presets['flow']})",
        "latent": f"latent flow, DiT ({presets['first_stage']} + {presets['latent']})",
    }
    print(f"\n### {arguments.minutes:g} minutes of training each, {arguments.num_samples} samples")
    print(
        "\n| model | steps trained | network calls | FID | KID | precision | recall | classes "
        "| images/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in judged.items():
        steps = runs[name][1]["global_step"]
        if name == "latent":
            steps = f"{first_results['global_step']} + {steps}"
        for row in rows:
            print(
                f"| {names[name]} | {steps} | {row['network_calls']} | {row['fid']:.2f} | "
                f"{row['kid']:.3f} | {row['precision']:.2f} | {row['recall']:.2f} | "
                f"{row['classes']} | {row['images_per_second']:.1f} |"
            )
    record = {
        "minutes": arguments.minutes,
        "data": arguments.data,
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "first_stage": first_results,
        "runs": {name: results for name, (_, results) in runs.items()},
        "judged": judged,
    }
    (out / "results.json").write_text(json.dumps(record, indent=2))
    print(f"\nwritten: {out / 'results.json'}")


if __name__ == "__main__":
    main()
