"""Speed and quality of each diffusion sampler from one checkpoint, on the digits.

    python bench/diffusion_samplers.py CKPT [--num-samples 1000] [--judge judges/digits.ckpt]

For DDPM with all T steps, DDIM at 50 and 20 steps and DPM-Solver++(2M) at 20 and
10 steps: images/s on this machine, and the quality of the same number of samples
(same seed) — FID/KID/precision/recall/classes in the judge's feature space
(zoo's evaluation) and the mean confidence of the independent scikit-learn SVM of
bench/judge_digits.py.
"""

import argparse
import time

import torch
from judge_digits import fit_judge, judge

from zoo.checkpoints import datamodule_from_checkpoint, load_checkpoint, model_from_checkpoint
from zoo.evaluation import Evaluation

SETTINGS = [("ddpm", None), ("ddim", 50), ("ddim", 20), ("dpm_solver", 20), ("dpm_solver", 10)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--judge", default="judges/digits.ckpt")
    parser.add_argument("--threads", type=int, default=None)
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    checkpoint = load_checkpoint(arguments.checkpoint)
    model = model_from_checkpoint(checkpoint)
    datamodule = datamodule_from_checkpoint(checkpoint)
    evaluation = Evaluation(classifier_ckpt=arguments.judge, cache_dir=".cache/zoo")
    svm, _, _ = fit_judge()
    print(f"torch threads: {torch.get_num_threads()}, {arguments.num_samples} samples each, seed 0")
    header = (
        "| sampler | steps | images/s | FID | KID | precision | recall | classes | SVM confidence |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|---|")
    for sampler, steps in SETTINGS:
        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        images = torch.cat(
            [
                model.sample(
                    min(arguments.batch_size, arguments.num_samples - first),
                    generator=generator,
                    sampler=sampler,
                    steps=steps,
                )
                for first in range(0, arguments.num_samples, arguments.batch_size)
            ]
        )
        rate = arguments.num_samples / (time.perf_counter() - start)
        scores = evaluation.judge_images(images, datamodule, model.data_record)
        pixels = ((images.reshape(len(images), -1).numpy() + 1) / 2 * 16).clip(0, 16)
        svm_scores = judge(svm, pixels)
        shown_steps = steps or model.noise_schedule.num_steps
        print(
            f"| {sampler} | {shown_steps} | {rate:.1f} | {scores['fid']:.3g} | "
            f"{scores['kid']:.3g} | {scores['precision']:.3f} | {scores['recall']:.3f} | "
            f"{scores['classes']} | "
            f"{svm_scores['confidence']:.3f} |",
            flush=True,
        )

    if model.num_classes:
        guided_labels(model, svm, arguments.judge)


def guided_labels(model, svm, judge_path: str, per_label: int = 100) -> None:
    """Print, per guidance scale, how often samples asked for label k are judged to be k."""
    from zoo.evaluation import Judge

    judge_model = Judge(judge_path)
    print("\n| guidance | judge says the asked label | SVM says the asked label |")
    print("|---|---|---|")
    for guidance in (1.0, 2.0, 4.0):
        hits_judge = hits_svm = 0
        for label in range(model.num_classes):
            generator = torch.Generator().manual_seed(label)
            images = model.sample(per_label, generator=generator, labels=[label], guidance=guidance)
            _, probabilities = judge_model(images)
            hits_judge += int((probabilities.argmax(1) == label).sum())
            pixels = ((images.reshape(len(images), -1).numpy() + 1) / 2 * 16).clip(0, 16)
            hits_svm += int((svm.predict(pixels) == label).sum())
        total = per_label * model.num_classes
        print(f"| {guidance} | {hits_judge / total:.3f} | {hits_svm / total:.3f} |", flush=True)


if __name__ == "__main__":
    main()
