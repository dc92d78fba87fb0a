"""FID against network calls for each diffusion sampler, from one checkpoint.

    python bench/diffusion_samplers.py CKPT [--num-samples 1000] [--judge judges/digits.ckpt]

For DDPM with all T calls, zoo's UniPC, DPM-Solver++(2M) and DDIM at 5-50 calls, and
diffusers' schedulers driving the same model through ``sampler=diffusers:<Class>`` (when
diffusers is installed): the network calls each made (counted by the model), images/s on
this machine, FID as a multiple of DDPM's, and the quality of the same number of samples
(same seed) — FID/KID/precision/recall/classes in the judge's feature space (zoo's
evaluation) and the mean confidence of the independent scikit-learn SVM of
bench/judge_digits.py (8×8 digits only). The data set (digits, mnist5k, …) is the
checkpoint's own; pass that data set's judge with --judge (judges/<data set>.ckpt).
"""

import argparse
import importlib.util
import time

import torch
from judge_digits import fit_judge, judge

from zoo.checkpoints import datamodule_from_checkpoint, load_checkpoint, model_from_checkpoint
from zoo.evaluation import Evaluation

SETTINGS = [
    ("ddpm", None),
    ("unipc", 20),
    ("unipc", 10),
    ("unipc", 5),
    ("dpm_solver", 20),
    ("dpm_solver", 10),
    ("ddim", 50),
    ("ddim", 20),
    ("diffusers:UniPCMultistepScheduler", 20),
    ("diffusers:UniPCMultistepScheduler", 10),
    ("diffusers:DPMSolverMultistepScheduler", 20),
    ("diffusers:DPMSolverMultistepScheduler", 10),
    ("diffusers:DDIMScheduler", 50),
]


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
    svm = fit_judge()[0] if tuple(model.spec.shape) == (1, 8, 8) else None  # digits only
    print(f"torch threads: {torch.get_num_threads()}, {arguments.num_samples} samples each, seed 0")
    header = (
        "| sampler | network calls | images/s | FID | FID ÷ DDPM's | KID | precision | recall "
        "| classes | SVM confidence |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|---|---|")
    ddpm_fid = None
    has_diffusers = importlib.util.find_spec("diffusers") is not None
    for sampler, steps in SETTINGS:
        if sampler.startswith("diffusers:") and not has_diffusers:
            print(f"| {sampler} | {steps} | (diffusers not installed) |||||||| ")
            continue
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
        if svm is not None:
            pixels = ((images.reshape(len(images), -1).numpy() + 1) / 2 * 16).clip(0, 16)
            svm_confidence = f"{judge(svm, pixels)['confidence']:.3f}"
        else:
            svm_confidence = "–"
        ddpm_fid = ddpm_fid or (scores["fid"] if sampler == "ddpm" else None)
        ratio = f"{scores['fid'] / ddpm_fid:.2f}" if ddpm_fid else "–"
        print(
            f"| {sampler} | {model.last_network_calls} | {rate:.1f} | {scores['fid']:.3g} | "
            f"{ratio} | {scores['kid']:.3g} | {scores['precision']:.3f} | "
            f"{scores['recall']:.3f} | {scores['classes']} | {svm_confidence} |",
            flush=True,
        )

    if model.num_classes and svm is not None:
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
