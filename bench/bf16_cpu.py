"""bfloat16 on the CPU: where attention loses, and what bf16-mixed does to reported figures.

    python bench/bf16_cpu.py --attention [--repeats 10]
    python bench/bf16_cpu.py --checkpoint outputs/pixelcnn_mnist5k/<run>/checkpoints/last.ckpt

``--attention`` times the forward and backward pass of attention on zoo's shapes (the DiT on
mnist5k: 128 × 6 heads × 49 tokens × 32; the CPU GPT: 12 × 4 × 64 × 32, causal; a larger
causal case: 64 × 6 × 256 × 64) four ways: float32; under bf16 autocast through SDPA's
flash kernel; through SDPA's math kernel; and as ``zoo.nn.attention`` does it (float32
attention with autocast off). Median milliseconds of ``--repeats`` after 3 warm-ups.

``--checkpoint`` runs the test split of a checkpoint's data through its model (EMA weights)
twice, with ``precision=32-true`` and ``bf16-mixed``, and prints both sets of test figures:
how far a figure measured under bf16-mixed (as validation and test are, in a run that trains
under it) is from the float32 one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning as L
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from zoo.checkpoints import datamodule_from_checkpoint, load_checkpoint, model_from_checkpoint
from zoo.nn.attention import scaled_dot_product_attention

SHAPES = {
    "DiT mnist5k (128, 6, 49, 32)": (128, 6, 49, 32, False),
    "GPT CPU (12, 4, 64, 32), causal": (12, 4, 64, 32, True),
    "larger (64, 6, 256, 64), causal": (64, 6, 256, 64, True),
}
WAYS = ("float32", "bf16 flash", "bf16 math", "bf16 zoo")


def attention_ms(shape: tuple, way: str, repeats: int) -> float:
    """Median milliseconds of one forward and backward pass of attention done ``way``."""
    *size, causal = shape
    q, k, v = (torch.randn(*size, requires_grad=True) for _ in range(3))

    def once() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=way != "float32"):
            inputs = [x.to(torch.bfloat16) if way != "float32" else x for x in (q, k, v)]
            if way == "bf16 zoo":
                y = scaled_dot_product_attention(*inputs, is_causal=causal)
            elif way == "bf16 math":
                with sdpa_kernel(SDPBackend.MATH):
                    y = F.scaled_dot_product_attention(*inputs, is_causal=causal)
            else:
                y = F.scaled_dot_product_attention(*inputs, is_causal=causal)
        y.float().sum().backward()

    for _ in range(3):
        once()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def test_figures(path: str) -> None:
    checkpoint = load_checkpoint(path)
    for precision in ("32-true", "bf16-mixed"):
        model = model_from_checkpoint(checkpoint, use_ema=True, path=path)
        trainer = L.Trainer(
            accelerator="cpu",
            precision=precision,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        (figures,) = trainer.test(model, datamodule_from_checkpoint(checkpoint), verbose=False)
        shown = ", ".join(f"{name}={value:.5f}" for name, value in sorted(figures.items()))
        print(f"{precision:<10} {shown}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attention", action="store_true")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--checkpoint", default=None)
    arguments = parser.parse_args()
    if arguments.attention:
        print(f"threads: {torch.get_num_threads()}")
        print("| shape | " + " | ".join(f"{way} ms" for way in WAYS) + " |")
        print("|---|" + "---|" * len(WAYS))
        for name, shape in SHAPES.items():
            times = [attention_ms(shape, way, arguments.repeats) for way in WAYS]
            print(f"| {name} | " + " | ".join(f"{t:.2f}" for t in times) + " |", flush=True)
    if arguments.checkpoint:
        test_figures(arguments.checkpoint)
    if not (arguments.attention or arguments.checkpoint):
        parser.error("give --attention, --checkpoint PATH, or both")


if __name__ == "__main__":
    main()
