"""Per-step training times of the VQ presets, scaled by two presets of known wall time.

    python bench/vq_step_times.py [--threads 1] [--rounds 3] [--steps 10]

A training step (forward, backward, AdamW step on a batch of the preset's size) of the
vqvae_mnist5k and vq_gpt_mnist5k models is timed in turn with two reference steps whose
time alone on 2 CPU cores is recorded in bench/RESULTS.md: pixelcnn_digits (≤125 ms a
step: 2,700 steps in 339 s with its validations and evaluation) and gpt_shakespeare_cpu
(≤42 ms: 2,000 steps in 84 s). On a shared machine the ratio holds better than the time:
each candidate's time alone is estimated as its time here × the reference's recorded time
/ the reference's time here. Images are random 28×28 levels and codes random indices:
a step's cost does not depend on the values. Nothing is trained to convergence.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from zoo.data.tokenizers import CharTokenizer
from zoo.models import FAMILIES

MNIST = {"modality": "image", "shape": [1, 28, 28], "num_levels": 256, "num_classes": 10}
DIGITS = {"modality": "image", "shape": [1, 8, 8], "num_levels": 17, "num_classes": 10}
RECORDED_S = {"pixelcnn_digits": 0.125, "gpt_shakespeare_cpu": 0.042}  # a step alone, 2 cores
VQVAE_MNIST5K = {"channels": [32, 64], "codebook_size": 256, "embedding_dim": 32}
PRIOR_MNIST5K = {"n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.1}


def stepper(model, batch):
    """Return a function that takes one optimizer step of ``model`` on ``batch``."""
    model.train()
    model.log = lambda *args, **kwargs: None  # no trainer to log to
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3)

    def step():
        loss = model._step(batch, "train")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def images(spec, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    levels = spec["num_levels"]
    x = torch.randint(0, levels, (count, *spec["shape"])).float() / (levels - 1) * 2 - 1
    return x, torch.randint(0, 10, (count,))


def steppers() -> dict:
    """Return the reference and candidate steps by name."""
    tokenizer = CharTokenizer.from_text("".join(chr(32 + i) for i in range(65)))
    text = {"modality": "text", "vocab_size": 65, "tokenizer": tokenizer.state_dict()}
    tokens = torch.randint(0, 65, (12, 65))
    vqvae = FAMILIES["vqvae"](MNIST, **VQVAE_MNIST5K)
    prior = FAMILIES["vq_prior"](
        MNIST,
        stage_one={"family": "vqvae", "hyper_parameters": dict(vqvae.hparams)},
        **PRIOR_MNIST5K,
    )
    codes = torch.randint(0, vqvae.codebook_size, (64, *vqvae.code_shape))
    return {
        "pixelcnn_digits": stepper(
            FAMILIES["pixelcnn"](DIGITS, channels=64, num_layers=8, dropout=0.3),
            images(DIGITS, 32),
        ),
        "gpt_shakespeare_cpu": stepper(
            FAMILIES["gpt"](text, n_layer=4, n_head=4, n_embd=128, block_size=64),
            (tokens[:, :-1], tokens[:, 1:]),
        ),
        "vqvae_mnist5k (batch 64)": stepper(vqvae, images(MNIST, 64)),
        "vq_gpt_mnist5k (batch 64)": stepper(prior, (codes, torch.randint(0, 10, (64,)))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = steppers()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):  # in turn, so that a change of load touches every one alike
        for name, step in steps.items():
            step()  # warm-up
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append((time.perf_counter() - start) / args.steps)
    median = {name: statistics.median(values) for name, values in times.items()}
    scales = {name: RECORDED_S[name] / median[name] for name in RECORDED_S}
    print(f"{'step':<28}{'here, ms':>10}" + "".join(f"{'alone ≈ (' + n + ')':>36}" for n in scales))
    for name, value in median.items():
        estimates = "".join(f"{value * scale * 1000:>33.0f} ms" for scale in scales.values())
        print(f"{name:<28}{value * 1000:>10.0f}{estimates}")


if __name__ == "__main__":
    main()
