"""GPT throughput on this machine: Lightning's overhead, torch.compile, and the KV cache.

    python bench/gpt_throughput.py [--steps 200] [--warmup 20] [--repeats 3] [--threads N]

All three use the gpt_shakespeare_cpu model (4 layers, 4 heads, 128 channels, context 64,
batch 12 windows of Shakespeare, AdamW with the warm-up + cosine schedule, clipping at 1.0):

(a) Lightning overhead: the same GPT trained for ``--steps`` steps (timed after ``--warmup``
    untimed ones) through our LightningModule + Trainer (no logger, checkpoints, progress
    bar or validation; our data module) and through a plain PyTorch loop over the same
    data module's loader (the model's forward, cross-entropy, AdamW, clipping, the same
    schedule). Both start from the same seed, so they draw the same batches and should
    end on the same loss, which the table shows as a check.
(b) eager vs ``torch.compile`` in the plain loop (compilation falls in the warm-up steps).
(c) generation, batch 1, 500 new tokens, with and without the KV cache, from random weights
    (speed does not depend on training): at the preset's context of 64, where the window
    soon slides and the cache is rebuilt every step, and at a context of 512, where it never
    slides.

Each pair runs in the same process on the same number of threads, alternating which goes
first over ``--repeats`` repeats; the table gives the median tokens/s, the spread (min-max)
and the ratio of medians. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import lightning as L
import torch
import torch.nn.functional as F

from zoo.data import ShakespeareDataModule
from zoo.models import GPT

BATCH_SIZE, BLOCK_SIZE = 12, 64
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0, "bias": False}
OPTIMIZER = {
    "_target_": "torch.optim.AdamW",
    "_partial_": True,
    "lr": 1e-3,
    "betas": [0.9, 0.99],
    "weight_decay": 0.1,
}
NEW_TOKENS = 500


def schedule(total_steps: int) -> dict:
    return {
        "_target_": "zoo.nn.schedules.warmup_cosine",
        "_partial_": True,
        "warmup_steps": min(100, total_steps - 1),
        "total_steps": total_steps,
        "min_lr_ratio": 0.1,
    }


def build(spec: dict, total_steps: int, *, compile: bool = False, block_size: int = BLOCK_SIZE):
    """Return the benchmark GPT, its weights drawn from seed 0."""
    torch.manual_seed(0)
    return GPT(
        spec,
        **MODEL,
        block_size=block_size,
        compile=compile,
        optimizer=OPTIMIZER,
        scheduler=schedule(total_steps),
    )


def data_module(total_steps: int) -> ShakespeareDataModule:
    data = ShakespeareDataModule(
        block_size=BLOCK_SIZE, batch_size=BATCH_SIZE, samples_per_epoch=BATCH_SIZE * total_steps
    )
    data.setup("fit")
    return data


# (a) and (b): training -------------------------------------------------------------------------


class StepTimer(L.Callback):
    """Times the batches from index ``warmup`` to the last; keeps the last loss."""

    def __init__(self, warmup: int, total_steps: int):
        self.warmup, self.total_steps = warmup, total_steps
        self.start = self.end = 0.0
        self.last_loss = float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == self.total_steps - 1:
            self.end = time.perf_counter()
            self.last_loss = float(outputs["loss"])


def train_lightning(data: ShakespeareDataModule, warmup: int, steps: int) -> tuple[float, float]:
    """Return tokens/s over the timed steps and the last loss, trained by Lightning."""
    total = warmup + steps
    model = build(data.spec.to_dict(), total)
    timer = StepTimer(warmup, total)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=total,
        max_epochs=-1,
        gradient_clip_val=1.0,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    torch.manual_seed(1)  # the batches' offsets
    trainer.fit(model, datamodule=data)
    return steps * BATCH_SIZE * BLOCK_SIZE / (timer.end - timer.start), timer.last_loss


def train_plain(
    data: ShakespeareDataModule, warmup: int, steps: int, *, compile: bool = False
) -> tuple[float, float]:
    """Return tokens/s over the timed steps and the last loss, trained by a plain loop."""
    total = warmup + steps
    model = build(data.spec.to_dict(), total, compile=compile).train()
    configured = model.configure_optimizers()  # the same AdamW groups and schedule
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    torch.manual_seed(1)  # the batches' offsets
    start = 0.0
    for step, (x, y) in enumerate(data.train_dataloader()):
        if step == warmup:
            start = time.perf_counter()
        logits, _ = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step == total - 1:
            break
    end = time.perf_counter()
    return steps * BATCH_SIZE * BLOCK_SIZE / (end - start), loss.item()


# (c): generation -----------------------------------------------------------------------------


def generation(spec: dict, block_size: int, use_cache: bool) -> float:
    """Return generated tokens/s: batch 1, NEW_TOKENS new tokens after a newline."""
    model = build(spec, 2, block_size=block_size).eval()
    model.sample(1, max_new_tokens=8, use_cache=use_cache)  # warm-up
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.sample(1, generator=generator, max_new_tokens=NEW_TOKENS, use_cache=use_cache)
    return NEW_TOKENS / (time.perf_counter() - start)


# Running and reporting -------------------------------------------------------------------------


def alternate(repeats: int, first, second) -> tuple[list, list]:
    """Return the results of ``first()`` and ``second()`` over repeats, alternating the order."""
    results: tuple[list, list] = ([], [])
    for repeat in range(repeats):
        order = [(0, first), (1, second)] if repeat % 2 == 0 else [(1, second), (0, first)]
        for index, run in order:
            results[index].append(run())
    return results


def row(name: str, values: list[float], reference: list[float] | None, versus: str) -> str:
    median = statistics.median(values)
    ratio = f"{median / statistics.median(reference):.2f}× {versus}" if reference else ""
    return f"| {name} | {median:,.0f} | {min(values):,.0f}–{max(values):,.0f} | {ratio} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-compile", action="store_true", help="leave out (b)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)  # the same for every measurement
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-fit banners

    data = data_module(args.warmup + args.steps)
    spec = data.spec.to_dict()
    runs = (args.repeats, args.warmup, args.steps)

    lightning, plain = alternate(
        args.repeats,
        lambda: train_lightning(data, args.warmup, args.steps),
        lambda: train_plain(data, args.warmup, args.steps),
    )
    rows = [
        row(
            "(a) Lightning Trainer + GPT module",
            [r[0] for r in lightning],
            [r[0] for r in plain],
            "plain loop",
        ),
        row("(a) plain PyTorch loop", [r[0] for r in plain], None, ""),
    ]
    losses = f"Lightning {lightning[-1][1]:.4f}, plain loop {plain[-1][1]:.4f}"
    if not args.skip_compile:
        eager, compiled = alternate(
            args.repeats,
            lambda: train_plain(data, args.warmup, args.steps)[0],
            lambda: train_plain(data, args.warmup, args.steps, compile=True)[0],
        )
        rows += [
            row("(b) plain loop, eager", eager, None, ""),
            row("(b) plain loop, torch.compile", compiled, eager, "eager"),
        ]
    for block_size in (BLOCK_SIZE, 512):
        cached, uncached = alternate(
            args.repeats,
            lambda block_size=block_size: generation(spec, block_size, use_cache=True),
            lambda block_size=block_size: generation(spec, block_size, use_cache=False),
        )
        rows += [
            row(f"(c) generation, context {block_size}, KV cache", cached, uncached, "no cache"),
            row(f"(c) generation, context {block_size}, no cache", uncached, None, ""),
        ]

    print(
        f"GPT throughput: {args.threads} threads, torch {torch.__version__}, "
        f"{runs[0]} repeats of {runs[2]} timed steps after {runs[1]} warm-up steps "
        f"(batch {BATCH_SIZE} × {BLOCK_SIZE} tokens); generation: batch 1, {NEW_TOKENS} tokens\n"
    )
    print("| measurement | tokens/s (median) | spread (min–max) | ratio of medians |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nlast training loss (same batches, same start): {losses}")


if __name__ == "__main__":
    main()
