"""Sample quality of the GAN on the digits, per loss and regulariser, trained as a user trains.

    python bench/gan_losses_digits.py [--epochs 150] [--only hinge_sn_translation ...]

Each setting is ``python train.py experiment=gan_digits <overrides>`` run in a subprocess
(one at a time: on 2 cores a second busy process slows torch many times). Its last
checkpoint then draws 1,000 samples through sample.py's code, judged twice: in zoo's judge
space (FID, precision/recall, classes: the end-of-training evaluation, needs
judges/digits.ckpt) and by the independent SVM of bench/judge_digits.py (confidence, class
coverage, share of the most common class). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_digits import fit_judge, judge  # noqa: E402

from zoo.checkpoints import load_checkpoint, model_from_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SETTINGS = {
    "hinge_sn": [],  # the gan_digits preset
    "hinge_sn_translation": ["model.augment=translation"],
    "non_saturating": [
        "model.loss=non_saturating",
        "model.spectral_norm=false",
        "model.augment=''",
    ],
    "non_saturating_r1_translation": [
        "model.loss=non_saturating",
        "model.spectral_norm=false",
        "model.r1_gamma=1.0",
        "model.augment=translation",
    ],
    "wgan_gp_translation": [
        "model.loss=wgan_gp",
        "model.spectral_norm=false",
        "model.n_critic=5",
        "model.optimizer.lr=1e-4",
        "model.discriminator_optimizer.lr=1e-4",
        "model.augment=translation",
    ],
    "resnet_hinge_sn_translation": ["model.architecture=resnet", "model.augment=translation"],
}


def train(name: str, overrides: list[str], epochs: int, root: Path) -> tuple[dict, float]:
    run_dir = root / name
    command = [
        sys.executable,
        "train.py",
        "experiment=gan_digits",
        f"trainer.max_epochs={epochs}",
        "+trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "resume=never",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return json.loads((run_dir / "results.json").read_text()), time.perf_counter() - start


def svm_scores(checkpoint_path: str, classifier) -> dict[str, float]:
    model = model_from_checkpoint(load_checkpoint(checkpoint_path)).eval()
    samples = model.sample(1000, generator=torch.Generator().manual_seed(0))
    pixels = ((samples.reshape(len(samples), -1).numpy() + 1) / 2 * 16).clip(0, 16)
    return judge(classifier, pixels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--only", nargs="*", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--root", type=Path, default=ROOT / "outputs" / "bench_gan_losses")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    classifier, _, held_out = fit_judge()
    real = judge(classifier, held_out)
    print(f"epochs: {args.epochs}; SVM on real held-out digits: {real}")
    header = (
        "| setting | wall s | FID | KID | precision | recall | classes | top class "
        "| SVM confidence | SVM classes | SVM top class |"
    )
    rows = [header, "|" + "---|" * 11]
    for name in args.only:
        results, seconds = train(name, SETTINGS[name], args.epochs, args.root)
        test, svm = results["test"], svm_scores(results["checkpoints"]["last"], classifier)
        row = (
            f"| {name} | {seconds:.0f} | {test.get('test/fid', float('nan')):.2f} "
            f"| {test.get('test/kid', float('nan')):.3f} | {test.get('test/precision', 0):.2f} "
            f"| {test.get('test/recall', 0):.2f} | {test.get('test/classes', 0):.0f} "
            f"| {test.get('test/top_class_share', 0):.3f} | {svm['confidence']:.3f} "
            f"| {svm['classes']} | {svm['top_class_share']:.3f} |"
        )
        rows.append(row)
        print(row, flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
