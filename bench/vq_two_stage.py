"""Report a VQ-VAE run and the run of its prior side by side, with the two-stage bound.

    python bench/vq_two_stage.py outputs/vqvae_mnist5k/<run> outputs/vq_gpt_mnist5k/<run>

Reads each run's results.json (train.py writes it) and prints, on the test split: the
VQ-VAE's codebook usage (share of codes used) and code perplexity, its reconstruction
error (bits/dim of the decoder given the codes, and the mean squared error in [-1, 1]
units), the prior's nats per code and perplexity, the figures of the prior's
end-of-training evaluation when a judge was there (FID, KID, the judge's classes, the
images/s of its 1,000 samples), the two-stage bound on the test images' negative
log-likelihood, reconstruction bits/dim + the prior's nats per code × codes / (C·H·W ·
ln 2), and each run's training time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from zoo import checkpoint_format as keys
from zoo.models.vq_prior import two_stage_bits_per_dim


def results(run: Path) -> dict:
    """Return the run's results.json."""
    return json.loads((run / "results.json").read_text())


def main(vqvae_run: str, prior_run: str) -> None:
    first, second = results(Path(vqvae_run)), results(Path(prior_run))
    checkpoint = torch.load(second["checkpoints"]["last"], weights_only=True)
    hyper_parameters = checkpoint[keys.HYPER_PARAMETERS]
    spec = hyper_parameters["spec"]
    c, h, w = spec["shape"]
    stage_one = hyper_parameters["stage_one"]["hyper_parameters"]
    halvings = len(stage_one["channels"])
    num_codes = (h >> halvings) * (w >> halvings)
    test_1, test_2 = first["test"], second["test"]
    bound = two_stage_bits_per_dim(
        test_1["test/reconstruction_bpd"], test_2["test/loss"], num_codes, c * h * w
    )
    rows = [
        ("codebook usage (share of codes used)", test_1["test/codebook_usage"]),
        ("code perplexity (of the codes' frequencies)", test_1["test/perplexity"]),
        ("reconstruction, bits/dim given the codes", test_1["test/reconstruction_bpd"]),
        ("reconstruction, mean squared error", test_1["test/mse"]),
        (f"prior, nats per code ({num_codes} codes)", test_2["test/loss"]),
        ("prior, perplexity", test_2["test/perplexity"]),
        ("two-stage bound, bits/dim", bound),
    ]
    rows += [
        (name, value)
        for name, value in sorted(test_2.items())
        if name.startswith(
            ("test/fid", "test/kid", "test/classes", "test/top_class_share", "test/samples_per")
        )
    ]
    rows += [
        ("VQ-VAE training, s", first["train_time_s"]),
        ("prior training, s", second["train_time_s"]),
    ]
    for name, value in rows:
        print(f"{name:<48} {value:.4g}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
