"""Peak memory of preparing and training on a text corpus, against the corpus's size.

    python bench/text_memory.py [--size-mb 1024] [--small-mb 8] [--steps 300] [--folder DIR]

For a small corpus (``--small-mb``, the baseline) and a large one (``--size-mb``):

1. writes the corpus: random words of the Shakespeare plays' vocabulary, 12 to a line,
   streamed to disk block by block;
2. prepares it (``data=text_file``, char tokens) in a fresh process, which reports its
   peak resident memory (``getrusage``'s ``ru_maxrss``) and the time taken;
3. trains the gpt_shakespeare_cpu GPT (4 layers, 4 heads, 128 channels, context 64,
   batch 12) for ``--steps`` steps on it in a fresh process, with a validation pass of
   240 windows, reporting the resident memory once the model is built, every 50 steps,
   and at its peak.

Memory that stays flat from the small corpus to the large one is what the token files
promise: training reads windows through ``np.memmap``, preparing streams the text in
chunks. The generated corpora and token files are deleted at the end (``--keep`` keeps
them).
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LINE_WORDS = 12


def resident_mb() -> float:
    """Return this process's resident memory now, in MB (Linux's /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_resident_mb() -> float:
    """Return this process's peak resident memory so far, in MB (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_corpus(path: Path, size_mb: float, seed: int = 0) -> int:
    """Write random lines of Shakespeare's words to ``path`` until it holds ``size_mb`` MB;
    return its size in bytes. Memory stays that of one block of lines."""
    from zoo.data.shakespeare import shakespeare_text

    words = np.array(sorted(set(re.findall(r"[A-Za-z']+", shakespeare_text()))))
    generator = np.random.default_rng(seed)
    target, written = int(size_mb * 2**20), 0
    with open(path, "w", encoding="utf-8") as file:
        while written < target:
            block = words[generator.integers(len(words), size=(5_000, LINE_WORDS))]
            text = "".join(" ".join(line) + "\n" for line in block)
            file.write(text)
            written += len(text)  # ASCII: characters are bytes
    return path.stat().st_size


def data_module(corpus: Path, tokens: Path):
    from zoo.data import TextFileDataModule

    return TextFileDataModule(
        path=str(corpus),
        tokens_dir=str(tokens),
        block_size=64,
        batch_size=12,
        samples_per_epoch=12 * 250,
        val_windows=240,
    )


def prepare(corpus: Path, tokens: Path) -> dict:
    """Prepare the corpus's token files; return the time and this process's peak memory."""
    import zoo.data  # noqa: F401  torch and Lightning: most of the memory, whatever the corpus

    imported = resident_mb()
    start = time.perf_counter()
    data = data_module(corpus, tokens)
    data.prepare_data()
    files = data.prepared
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "imported_mb": round(imported, 1),
        "peak_mb": round(peak_resident_mb(), 1),
        "tokens": files.meta["train_tokens"] + files.meta["val_tokens"],
        "token_file_mb": round(sum(files.path(s).stat().st_size for s in ("train", "val")) / 2**20),
    }


def train(corpus: Path, tokens: Path, steps: int) -> dict:
    """Train the CPU preset's GPT for ``steps`` steps; return the memory along the way."""
    import lightning as L
    import torch

    from zoo.models import GPT

    torch.manual_seed(0)
    data = data_module(corpus, tokens)
    model = GPT(data.spec.to_dict(), n_layer=4, n_head=4, n_embd=128, block_size=64)
    samples = {}

    class Memory(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step % 50 == 0:
                samples[trainer.global_step] = round(resident_mb(), 1)

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        max_epochs=-1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Memory()],
    )
    built = resident_mb()
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    validation = trainer.validate(model, datamodule=data, verbose=False)[0]
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "built_mb": round(built, 1),
        "every_50_steps_mb": samples,
        "peak_mb": round(peak_resident_mb(), 1),
        "val_loss": round(validation["val/loss"], 3),
    }


def in_fresh_process(*arguments: str) -> dict:
    """Return the JSON a phase of this script printed, run in a process of its own."""
    process = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(arguments)} failed:\n{process.stderr[-3000:]}")
    return json.loads(process.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=float, default=1024)
    parser.add_argument("--small-mb", type=float, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/zoo-text-memory"))
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--phase", choices=["prepare", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    tokens = arguments.folder / "tokens"
    if arguments.phase == "prepare":
        print(json.dumps(prepare(arguments.corpus, tokens)))
        return
    if arguments.phase == "train":
        print(json.dumps(train(arguments.corpus, tokens, arguments.steps)))
        return

    arguments.folder.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for size_mb in (arguments.small_mb, arguments.size_mb):
            corpus = arguments.folder / f"corpus-{size_mb:g}mb.txt"
            start = time.perf_counter()
            size = write_corpus(corpus, size_mb)
            written = time.perf_counter() - start
            common = ["--folder", str(arguments.folder), "--corpus", str(corpus)]
            prepared = in_fresh_process("--phase", "prepare", *common)
            trained = in_fresh_process("--phase", "train", "--steps", str(arguments.steps), *common)
            rows.append(
                {
                    "corpus_mb": round(size / 2**20),
                    "write_s": round(written, 1),
                    "prepare": prepared,
                    "train": trained,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if not arguments.keep:
            shutil.rmtree(arguments.folder, ignore_errors=True)

    print(
        f"\n| corpus | prepare: time | prepare: RSS after imports → peak | token files "
        f"| train ({arguments.steps} steps + validation): RSS built → every 50 steps → peak |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        prepared, trained = row["prepare"], row["train"]
        along = ", ".join(f"{value:.0f}" for value in trained["every_50_steps_mb"].values())
        print(
            f"| {row['corpus_mb']:,} MB | {prepared['seconds']} s "
            f"| {prepared['imported_mb']:.0f} → {prepared['peak_mb']:.0f} MB "
            f"| {prepared['token_file_mb']:,} MB ({prepared['tokens']:,} tokens) "
            f"| {trained['built_mb']:.0f} → {along} → {trained['peak_mb']:.0f} MB |"
        )


if __name__ == "__main__":
    main()
