"""Our gpt_shakespeare_cpu preset against nanoGPT's CPU "baby" run, side by side, same corpus.

    python bench/gpt_vs_nanogpt.py --nanogpt path/to/nanoGPT [--corpus input.txt] [--repeats 2]

``--nanogpt`` is a checkout of karpathy/nanoGPT (not shipped with zoo). The corpus (by
default the shipped Shakespeare plays; ``--corpus`` any text file, e.g. tinyshakespeare's
input.txt) is written into nanoGPT's ``data/shakespeare_char`` exactly as its
prepare.py does (sorted characters, first 90% train, last 10% val, uint16 ids); our run
reads the same text with the same 90/10 split (``data=text_file`` for ``--corpus``).

Then, alternating which goes first over ``--repeats`` repeats, each run alone:

  nanoGPT: python train.py config/train_shakespeare_char.py --device=cpu --compile=False
           --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4
           --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0
  zoo:     python train.py experiment=gpt_shakespeare_cpu

Printed per run: the process's wall time, the training loop's time (nanoGPT: the sum of its
per-iteration times, evaluations included; zoo: trainer.fit, validations and sample grids
included), tokens/s of that loop (2,000 × 12 × 64 tokens), and the final val loss
(nanoGPT: its step-2000 estimate over 20 random batches; zoo: val/loss over 240 fixed
windows). Then the medians and the ratio zoo/nanoGPT.

``--generation`` adds sampling speed: nanoGPT's ``GPT.generate`` (no KV cache: the whole
window each token) against ours with and without the cache, on the same configuration
(random weights: speed does not depend on them), one sample, from a one-token prompt:
63 new tokens (the context never slides) and 500 (it slides after 63), in one process,
alternating, ``--repeats`` × 3 times.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 2000 * 12 * 64
NANOGPT_COMMAND = [
    "train.py",
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--max_iters=2000",
    "--lr_decay_iters=2000",
    "--dropout=0.0",
]


def prepare(nanogpt: Path, text: str) -> None:
    """Write nanoGPT's shakespeare_char data set from ``text`` as its prepare.py does."""
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = len(ids)
    folder = nanogpt / "data" / "shakespeare_char"
    folder.mkdir(parents=True, exist_ok=True)
    ids[: int(n * 0.9)].tofile(folder / "train.bin")
    ids[int(n * 0.9) :].tofile(folder / "val.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    (folder / "meta.pkl").write_bytes(pickle.dumps(meta))


def run_nanogpt(nanogpt: Path) -> dict[str, float]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *NANOGPT_COMMAND], cwd=nanogpt, check=True, capture_output=True, text=True
    ).stdout
    wall = time.perf_counter() - start
    times = [float(t) for t in re.findall(r"^iter \d+: .* time ([\d.]+)ms", out, re.M)]
    val = float(re.findall(r"^step 2000: .* val loss ([\d.]+)", out, re.M)[-1])
    loop = sum(times) / 1000
    return {
        "wall_s": wall,
        "loop_s": loop,
        "tokens_per_s": TOKENS / loop,
        "median_ms_per_iter": statistics.median(times),
        "val_loss": val,
    }


def run_zoo(corpus: Path | None, run_dir: Path, extra: list[str]) -> dict[str, float]:
    overrides = ["experiment=gpt_shakespeare_cpu", f"hydra.run.dir={run_dir}", "resume=never"]
    overrides += extra
    if corpus:
        overrides += ["data=text_file", f"data.path={corpus}"]
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "train.py", *overrides], cwd=ROOT, check=True, capture_output=True
    )
    wall = time.perf_counter() - start
    results = json.loads((run_dir / "results.json").read_text())
    loop = results["train_time_s"]
    return {
        "wall_s": wall,
        "loop_s": loop,
        "tokens_per_s": TOKENS / loop,
        "val_loss": results["val"]["val/loss"],
    }


def generation_rates(nanogpt: Path, repeats: int) -> None:
    """Print tokens/s of nanoGPT's sampler and of ours with and without the KV cache."""
    import torch

    from zoo.data.spec import DataSpec
    from zoo.models import GPT

    sys.path.insert(0, str(nanogpt))
    import model as nanogpt_model  # nanoGPT's model.py

    size = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64}
    torch.manual_seed(0)
    config = nanogpt_model.GPTConfig(vocab_size=70, dropout=0.0, bias=False, **size)
    theirs = nanogpt_model.GPT(config).eval()
    chars = [chr(33 + i) for i in range(70)]
    spec = DataSpec("text", vocab_size=70, tokenizer={"kind": "char", "chars": chars})
    ours = GPT(spec.to_dict(), dropout=0.0, bias=False, **size).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long)
    samplers = {
        "nanoGPT (no cache)": lambda n: theirs.generate(prompt, n),
        "zoo, KV cache": lambda n: ours.generate(prompt, n, use_cache=True),
        "zoo, no cache": lambda n: ours.generate(prompt, n, use_cache=False),
    }
    print("\n| new tokens | sampler | tokens/s (median) | min–max | vs nanoGPT |")
    print("|---|---|---|---|---|")
    for new_tokens in (63, 500):
        rates: dict[str, list[float]] = {name: [] for name in samplers}
        for repeat in range(3 * repeats):
            names = list(samplers) if repeat % 2 == 0 else list(samplers)[::-1]
            for name in names:
                start = time.perf_counter()
                samplers[name](new_tokens)
                rates[name].append(new_tokens / (time.perf_counter() - start))
        baseline = statistics.median(rates["nanoGPT (no cache)"])
        for name, values in rates.items():
            median = statistics.median(values)
            print(
                f"| {new_tokens} | {name} | {median:,.0f} | {min(values):,.0f}–{max(values):,.0f} "
                f"| {median / baseline:.2f}× |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a karpathy/nanoGPT checkout")
    parser.add_argument("--corpus", type=Path, default=None, help="a text file (default: ours)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--root", type=Path, default=ROOT / "outputs" / "bench_gpt_vs_nanogpt")
    parser.add_argument("--generation", action="store_true", help="also time sampling")
    parser.add_argument("--set", nargs="*", default=[], help="overrides for our run")
    parser.add_argument("--skip-training", action="store_true", help="time sampling only")
    args = parser.parse_args()
    if args.generation or args.skip_training:
        generation_rates(args.nanogpt.resolve(), args.repeats)
    if args.skip_training:
        return
    if args.corpus:
        text = args.corpus.read_text(encoding="utf-8")
    else:
        from zoo.data.shakespeare import shakespeare_text

        text = shakespeare_text()
    prepare(args.nanogpt.resolve(), text)
    print(f"corpus: {args.corpus or 'the shipped Shakespeare plays'}, {len(text):,} characters")
    runs: dict[str, list[dict[str, float]]] = {"nanoGPT": [], "zoo": []}
    for repeat in range(args.repeats):
        order = ["nanoGPT", "zoo"] if repeat % 2 == 0 else ["zoo", "nanoGPT"]
        for name in order:
            if name == "nanoGPT":
                result = run_nanogpt(args.nanogpt.resolve())
            else:
                corpus = args.corpus.resolve() if args.corpus else None
                result = run_zoo(corpus, args.root / f"run{repeat}", args.set)
            runs[name].append(result)
            shown = ", ".join(f"{k}={v:.4g}" for k, v in result.items())
            print(f"repeat {repeat} {name:<8} {shown}", flush=True)
    print("\n| run | wall s | loop s | tokens/s (loop) | val loss |")
    print("|---|---|---|---|---|")
    medians = {}
    for name, results in runs.items():
        medians[name] = {k: statistics.median(r[k] for r in results) for k in results[0]}
        m = medians[name]
        spread = [r["tokens_per_s"] for r in results]
        print(
            f"| {name} | {m['wall_s']:.0f} | {m['loop_s']:.0f} | {m['tokens_per_s']:,.0f} "
            f"({min(spread):,.0f}–{max(spread):,.0f}) | {m['val_loss']:.3f} |"
        )
    ratio = medians["zoo"]["tokens_per_s"] / medians["nanoGPT"]["tokens_per_s"]
    print(f"\nzoo / nanoGPT tokens/s: {ratio:.2f}×")


if __name__ == "__main__":
    main()
