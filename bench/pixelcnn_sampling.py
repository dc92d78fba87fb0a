"""PixelCNN sampling speed on the CPU: the naive path against the fast path, same process.

    python bench/pixelcnn_sampling.py [--ckpt outputs/pixelcnn_digits/<run>/checkpoints/last.ckpt]
        [--num-samples 100] [--repeats 3] [--threads N] [--evaluation]

The model has the sizes of ``experiment=pixelcnn_digits`` (random weights: the cost
does not depend on them), or is read from ``--ckpt``. Prints images/s of each path
(median over the repeats), their ratio, and checks that both drew the same images.
``--evaluation`` also times what train.py's evaluation draws at the end of a run:
1,000 samples in batches of 500 on the fast path.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from zoo.checkpoints import load_checkpoint, model_from_checkpoint
from zoo.data.spec import DataSpec
from zoo.models import PixelCNN

CONF = Path(__file__).resolve().parents[1] / "conf"
DIGITS_SPEC = DataSpec(modality="image", shape=(1, 8, 8), num_levels=17, num_classes=10)


def digits_preset() -> PixelCNN:
    """Return a PixelCNN with the sizes of conf/experiment/pixelcnn_digits.yaml."""
    model = OmegaConf.merge(
        OmegaConf.load(CONF / "model" / "pixelcnn.yaml"),
        OmegaConf.load(CONF / "experiment" / "pixelcnn_digits.yaml").get("model", {}),
    )
    values = OmegaConf.to_container(model)  # unresolved: the scheduler reads trainer settings
    for key in ("_target_", "optimizer", "scheduler"):
        values.pop(key)
    return PixelCNN(DIGITS_SPEC.to_dict(), **values)


def timed(model: PixelCNN, num_samples: int, fast: bool, batch_size: int) -> tuple[float, list]:
    """Return the seconds to draw ``num_samples`` images in batches, and the images."""
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    images = [
        model.sample(min(batch_size, num_samples - first), generator=generator, fast=fast)
        for first in range(0, num_samples, batch_size)
    ]
    return time.perf_counter() - start, images


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", help="a pixelcnn checkpoint (default: the preset, untrained)")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--evaluation", action="store_true", help="also time 1,000 fast samples")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    model = (
        model_from_checkpoint(load_checkpoint(arguments.ckpt))
        if arguments.ckpt
        else digits_preset().eval()
    )
    hparams = {k: model.hparams[k] for k in ("channels", "num_layers", "likelihood")}
    print(f"model {hparams}, {sum(p.numel() for p in model.parameters()):,} parameters")
    print(f"torch threads {torch.get_num_threads()}, {arguments.num_samples} images per draw")
    model.sample(2)  # warm-up: first-call allocations and kernel choices
    seconds = {True: [], False: []}
    same = True
    for _ in range(arguments.repeats):
        drawn = {}
        for fast in (False, True):
            elapsed, drawn[fast] = timed(model, arguments.num_samples, fast, arguments.num_samples)
            seconds[fast].append(elapsed)
        same &= all(torch.equal(a, b) for a, b in zip(drawn[True], drawn[False], strict=True))
    rate = {fast: arguments.num_samples / statistics.median(seconds[fast]) for fast in seconds}
    print(f"naive  {rate[False]:10.1f} images/s  (median of {arguments.repeats})")
    print(f"fast   {rate[True]:10.1f} images/s")
    print(f"ratio  {rate[True] / rate[False]:10.1f}×   same images: {same}")
    if arguments.evaluation:
        elapsed, _ = timed(model, 1000, fast=True, batch_size=500)
        print(
            f"1,000 images, batches of 500, fast: {elapsed:.1f} s ({1000 / elapsed:.1f} images/s)"
        )


if __name__ == "__main__":
    main()
