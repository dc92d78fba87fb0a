"""Time the training steps of presets, to size a preset for a wall-time budget.

    python bench/step_times.py vae_mnist5k gan_mnist5k [--steps 30] [--set KEY=VALUE ...]
    python bench/step_times.py diffusion_digits diffusion_mnist5k --set model.base_channels=32
    python bench/step_times.py latent_flow_mnist5k --set model.stage_one=<vae_spatial_mnist5k.ckpt>

For each experiment: its model on its data, trained by a Lightning Trainer for
``--warmup`` + ``--steps`` batches (no validation, logging or checkpoints; the preset's
EMA and gradient clipping kept), and the median seconds a training step takes after the
warm-up, in wall time and in CPU time of this process; then the CPU seconds to draw
``--samples`` samples, and the count of trained parameters (a frozen first stage's are
not). A second stage trains, as train.py has it, on the data encoded once by its first
stage (not timed). ``--set`` overrides apply to every experiment; ``--precision`` is the Trainer's
(``bf16-mixed`` autocasts the steps to bfloat16). On a machine that is
not quiet, wall times mean little: run with OMP_NUM_THREADS=1, read the CPU times, and
time beside the new presets a digits preset whose wall time alone is recorded in
bench/RESULTS.md; the ratio of CPU times carries over.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from zoo.data.encoded import EncodedDataModule
from zoo.runner import build_model

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")


class StepTimer(L.Callback):
    """Records the wall time and the CPU time of this process for every training batch
    (forward, backward, optimizer steps)."""

    def __init__(self):
        self.seconds: list[float] = []
        self.cpu_seconds: list[float] = []
        self._start = (0.0, 0.0)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seconds.append(time.perf_counter() - self._start[0])
        self.cpu_seconds.append(time.process_time() - self._start[1])


def time_experiment(
    experiment: str,
    overrides: list[str],
    steps: int,
    warmup: int,
    samples: int,
    precision: str = "32-true",
) -> dict[str, float]:
    """Return the median step time (s), the sampling time (s) and the size of a preset."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *overrides])
    torch.manual_seed(0)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg.model, datamodule.spec.to_dict())
    data = EncodedDataModule(datamodule, model) if model.two_stage else datamodule
    callbacks: list[L.Callback] = [StepTimer()]
    ema = OmegaConf.select(cfg, "callbacks.ema")
    if ema is not None:
        callbacks.append(instantiate(ema))
    trainer = L.Trainer(
        accelerator="cpu",
        precision=precision,
        max_epochs=1,
        limit_train_batches=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(model, data)
    step = statistics.median(callbacks[0].seconds[warmup:])
    model.eval()
    start = time.process_time()
    if samples and model.generates:
        model.sample(samples, generator=torch.Generator().manual_seed(0))
    sampling = time.process_time() - start
    epoch_steps = len(data.train_dataloader())
    return {
        "step_s": step,
        "step_cpu_s": statistics.median(callbacks[0].cpu_seconds[warmup:]),
        "steps_per_epoch": epoch_steps,
        "sample_cpu_s": sampling,
        "parameters_M": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("experiments", nargs="+")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--samples", type=int, default=0, help="samples to time drawing")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every experiment")
    parser.add_argument("--precision", default="32-true", help="e.g. bf16-mixed")
    arguments = parser.parse_args()
    print("| experiment | parameters (M) | s/step | CPU s/step | steps/epoch | sampling CPU s |")
    print("|---|---|---|---|---|---|")
    for experiment in arguments.experiments:
        result = time_experiment(
            experiment,
            arguments.set,
            arguments.steps,
            arguments.warmup,
            arguments.samples,
            arguments.precision,
        )
        print(
            f"| {experiment} {' '.join(arguments.set)} {arguments.precision} | "
            f"{result['parameters_M']:.2f} | "
            f"{result['step_s']:.3f} | {result['step_cpu_s']:.3f} | "
            f"{result['steps_per_epoch']} | {result['sample_cpu_s']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
