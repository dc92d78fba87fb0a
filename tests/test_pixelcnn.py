"""PixelCNN: causal without a blind spot, proper likelihoods, exact bits/dim, the same samples
on the fast and the naive path, class conditioning, training and sampling end to end."""

import json
import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from zoo.data.spec import DataSpec
from zoo.models import PixelCNN
from zoo.nn.distributions import (
    discretized_logistic_mixture_log_prob,
    index_to_levels,
    inverse_cdf_sample,
    levels_to_index,
)

DIGITS_SPEC = DataSpec(modality="image", shape=(1, 8, 8), num_levels=17, num_classes=10).to_dict()
RGB_SPEC = DataSpec(modality="image", shape=(3, 4, 4), num_levels=256, num_classes=10).to_dict()
SMALL = {"channels": 12, "num_layers": 3}


def random_images(spec: dict, n: int, seed: int = 0) -> torch.Tensor:
    """Return n images on the spec's level grid."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, spec["num_levels"], (n, *spec["shape"]), generator=generator)
    return index_to_levels(index, spec["num_levels"])


def dependence(model: PixelCNN, spec: dict) -> torch.Tensor:
    """Return D (C, H·W, C, H·W): D[c, i, c', j] = |∂ params of subpixel (i, c) / ∂ x[c', j]|.

    One backward pass: batch element k holds the same image and asks about subpixel k.
    """
    c, h, w = spec["shape"]
    num_subpixels = c * h * w
    x = random_images(spec, 1).expand(num_subpixels, c, h, w).clone().requires_grad_(True)
    params = model(x).view(num_subpixels, c, -1, h * w)  # (N, C, P, H·W)
    k = torch.arange(num_subpixels)
    channel, pixel = k // (h * w), k % (h * w)  # element k asks about subpixel (pixel, channel)
    params[k, channel, :, pixel].sum().backward()
    return x.grad.abs().view(c, h * w, c, h * w)


# Receptive field -------------------------------------------------------------------


def test_each_pixel_depends_on_every_earlier_pixel_and_on_no_later_one():
    # 6 layers reach 3 + 5 = 8 pixels each side: the whole 8×8 image, so no blind spot.
    torch.manual_seed(0)
    model = PixelCNN(DIGITS_SPEC, channels=16, num_layers=6).eval()
    grads = dependence(model, DIGITS_SPEC)[0, :, 0, :]  # (output pixel, input pixel)
    earlier = torch.ones(64, 64).tril(diagonal=-1).bool()  # input pixel j < output pixel i
    assert (grads[~earlier] == 0).all(), "a pixel sees itself or a later pixel"
    assert (grads[earlier] > 0).all(), "a blind spot: some earlier pixel is never seen"


def test_a_colour_subpixel_sees_earlier_pixels_and_the_earlier_colours_of_its_own_pixel():
    torch.manual_seed(0)
    model = PixelCNN(RGB_SPEC, likelihood="discretized_logistic_mixture", num_mixtures=2, **SMALL)
    grads = dependence(model.eval(), RGB_SPEC)  # (C, 16, C, 16)
    pixel_before = torch.ones(16, 16).tril(diagonal=-1).bool()
    for out_channel in range(3):
        for in_channel in range(3):
            seen = pixel_before.clone()
            if in_channel < out_channel:  # R before G before B within a pixel
                seen |= torch.eye(16, dtype=torch.bool)
            block = grads[out_channel, :, in_channel, :]
            assert (block[~seen] == 0).all(), f"channel {out_channel} sees {in_channel} too early"
            assert (block[seen] > 0).all(), f"channel {out_channel} misses {in_channel}"


def test_masks_hide_the_current_pixel_by_colour_group():
    model = PixelCNN(RGB_SPEC, **SMALL)
    first = model.network.layers[0].horizontal.mask[:, :, 0, -1]  # (2·12 out, 3 in): mask A
    groups = torch.arange(12) * 3 // 12
    assert torch.equal(first, (torch.arange(3).view(1, 3) < groups.repeat(2).view(-1, 1)).float())
    later = model.network.layers[1].horizontal.mask[:, :, 0, -1]  # (2·12, 12): mask B
    assert torch.equal(later, (groups.view(1, -1) <= groups.repeat(2).view(-1, 1)).float())
    # Pixels to the left are always visible.
    assert (model.network.layers[1].horizontal.mask[:, :, 0, :-1] == 1).all()


# Likelihoods ------------------------------------------------------------------------


@pytest.mark.parametrize("likelihood", ["categorical", "discretized_logistic_mixture"])
@pytest.mark.parametrize("spec", [DIGITS_SPEC, RGB_SPEC], ids=["17 levels", "256 levels"])
def test_subpixel_distribution_sums_to_one_and_is_the_one_trained(likelihood, spec):
    torch.manual_seed(0)
    model = PixelCNN(spec, likelihood=likelihood, **SMALL).eval()
    x = random_images(spec, 3)
    params = model(x) * 3  # larger than at init: sharper distributions
    c, h, w = spec["shape"]
    per_subpixel = params.view(3, c, -1, h, w).permute(0, 1, 3, 4, 2)  # (B, C, H, W, P)
    log_probs = model.subpixel_log_probs(per_subpixel)  # (B, C, H, W, L)
    total = log_probs.double().exp().sum(dim=-1)
    assert torch.allclose(total, torch.ones_like(total), atol=1e-5)
    # The training likelihood is the sampling distribution at the data's levels.
    index = levels_to_index(x, spec["num_levels"]).unsqueeze(-1)
    expected = log_probs.gather(-1, index).flatten(1).sum(dim=1)
    assert torch.allclose(model.log_likelihood(x, params), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("num_levels", [2, 17, 256])
def test_logistic_mixture_sums_to_one_over_all_levels_even_when_sharp(num_levels):
    levels = torch.linspace(-1, 1, num_levels).view(-1, 1)  # (L, 1): one row per level
    logit_weights = torch.tensor([[0.3, -2.0, 1.0, 5.0]])
    means = torch.tensor([[-1.3, 0.02, 0.5, 0.999]])
    log_scales = torch.tensor([[-9.0, -5.0, 0.0, -2.0]])  # -9 is clamped to the minimum
    log_prob = discretized_logistic_mixture_log_prob(
        levels.squeeze(1), logit_weights, means, log_scales, num_levels
    )
    assert log_prob.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_inverse_cdf_sampling_inverts_the_cdf_and_takes_the_mode_at_zero_temperature():
    log_probs = torch.tensor([0.1, 0.2, 0.3, 0.4]).log().expand(5, 4)
    uniform = torch.tensor([0.0, 0.09, 0.11, 0.55, 0.999])
    assert inverse_cdf_sample(log_probs, uniform).tolist() == [0, 0, 1, 2, 3]
    assert inverse_cdf_sample(log_probs, uniform, temperature=0).tolist() == [3] * 5
    # T → small sharpens towards the mode: p^(1/T) with T = 0.1 puts > 0.9 on the last level.
    assert inverse_cdf_sample(log_probs[:1], torch.tensor([0.1]), temperature=0.1).item() == 3


def zero_output(model: PixelCNN) -> PixelCNN:
    """Return the model with its last layer zeroed: the same parameters for every subpixel."""
    with torch.no_grad():
        model.network.head[-1].weight.zero_()
        model.network.head[-1].bias.zero_()
    return model


def test_bits_per_dim_of_uniform_logits_is_log2_of_the_levels_through_the_test_loop():
    model = zero_output(PixelCNN(DIGITS_SPEC, **SMALL))
    x, y = random_images(DIGITS_SPEC, 20), torch.zeros(20, dtype=torch.long)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    (metrics,) = trainer.test(model, DataLoader(TensorDataset(x, y), batch_size=8), verbose=False)
    assert metrics["test/bpd"] == pytest.approx(math.log2(17), abs=1e-5)
    assert metrics["test/loss"] == metrics["test/bpd"]


def test_bits_per_dim_of_a_fixed_logistic_matches_its_closed_form():
    # Zero parameters: every subpixel is one logistic (equal weights, the same component)
    # of mean 0 and scale 1, so P(level v) = σ(v + 1/16) - σ(v - 1/16), tails at the ends.
    model = zero_output(PixelCNN(DIGITS_SPEC, likelihood="discretized_logistic_mixture", **SMALL))
    x = random_images(DIGITS_SPEC, 4)
    sigmoid = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731

    def probability(v: float) -> float:
        upper = 1.0 if v > 1 - 1 / 16 else sigmoid(v + 1 / 16)
        lower = 0.0 if v < -1 + 1 / 16 else sigmoid(v - 1 / 16)
        return upper - lower

    expected = [
        -sum(math.log2(probability(v)) for v in image.flatten().tolist()) / 64 for image in x
    ]
    bpd = -model.log_likelihood(x, model(x)) / (64 * math.log(2))
    assert bpd.tolist() == pytest.approx(expected, rel=1e-5)


# Sampling --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,options",
    [
        (DIGITS_SPEC, {"likelihood": "categorical", "conditional": True}),
        (RGB_SPEC, {"likelihood": "discretized_logistic_mixture", "num_mixtures": 3}),
    ],
    ids=["grey categorical conditional", "rgb logistic mixture"],
)
def test_fast_sampling_draws_the_same_images_as_naive_sampling(spec, options):
    torch.manual_seed(0)
    model = PixelCNN(spec, **SMALL, **options).eval()

    def draw(fast: bool, seed: int = 0) -> torch.Tensor:
        return model.sample(5, generator=torch.Generator().manual_seed(seed), fast=fast)

    fast, naive = draw(True), draw(False)
    assert fast.shape == (5, *spec["shape"])
    assert torch.equal(fast, naive)
    assert torch.equal(
        index_to_levels(levels_to_index(fast, spec["num_levels"]), spec["num_levels"]), fast
    )
    assert not torch.equal(fast, draw(True, seed=1))
    sharp = model.sample(5, generator=torch.Generator().manual_seed(0), temperature=0.5)
    naive_sharp = model.sample(
        5, generator=torch.Generator().manual_seed(0), temperature=0.5, fast=False
    )
    assert torch.equal(sharp, naive_sharp) and not torch.equal(sharp, fast)


def test_conditional_samples_depend_on_the_label():
    torch.manual_seed(0)
    model = PixelCNN(DIGITS_SPEC, conditional=True, **SMALL).eval()

    def draw(labels) -> torch.Tensor:
        return model.sample(4, generator=torch.Generator().manual_seed(0), labels=labels)

    threes, fives = draw([3]), draw(5)
    assert not torch.equal(threes, fives)
    assert torch.equal(threes, draw([3, 3, 3, 3]))  # one label fills every sample
    mixed = draw([3, 5])  # a list repeats in turn: 3, 5, 3, 5
    assert torch.equal(mixed[0::2], threes[0::2]) and torch.equal(mixed[1::2], fives[1::2])
    assert model.sample_labels(None, 12).tolist() == list(range(10)) + [0, 1]  # unlabelled: in turn


def test_labels_are_refused_by_an_unconditional_model_and_must_be_classes():
    unconditional = PixelCNN(DIGITS_SPEC, **SMALL)
    with pytest.raises(ValueError, match="class-conditional"):
        unconditional.sample(2, labels=[3])
    with pytest.raises(ValueError, match="classes 0 … 9"):
        PixelCNN(DIGITS_SPEC, conditional=True, **SMALL).sample(2, labels=[10])


def test_a_conditional_model_needs_labelled_data():
    unlabelled = DataSpec(modality="image", shape=(1, 8, 8), num_levels=17).to_dict()
    with pytest.raises(ValueError, match="needs labelled data"):
        PixelCNN(unlabelled, conditional=True)


# Training --------------------------------------------------------------------------


def test_lightning_training_on_one_batch_lowers_the_bits_per_dim():
    torch.manual_seed(0)
    model = PixelCNN(
        DIGITS_SPEC,
        conditional=True,
        **SMALL,
        optimizer={"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-2},
    )
    x, y = torch.full((32, 1, 8, 8), -1.0), torch.arange(32) % 10  # blank images
    x[:, :, 2:6, 3:5] = 1.0  # a bar in every image: easy to learn
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    before = -model.log_likelihood(x, model(x, y)).mean().item() / (64 * math.log(2))
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=15,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader, loader)
    assert before == pytest.approx(math.log2(17), abs=0.3)  # near uniform at init
    assert trainer.callback_metrics["val/bpd"] < before / 2
    assert trainer.callback_metrics["train/loss"] < before / 2


@pytest.mark.slow  # the real train.py and sample.py, each in its own process
def test_train_and_sample_scripts_end_to_end(tmp_path):
    from conftest import run_script, train_run

    results = train_run(
        tmp_path / "run",
        "experiment=pixelcnn_digits",
        "debug=smoke",
        "trainer.accelerator=cpu",
        "model.channels=8",
        "model.num_layers=2",
        "model.conditional=true",
        "evaluation.enabled=false",
    )
    assert results["family"] == "pixelcnn" and results["name"] == "pixelcnn_digits"
    assert 0 < results["test"]["test/bpd"] < 2 * math.log2(17)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["zoo"]["family"] == "pixelcnn"
    run_script(
        "sample.py",
        f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
        "num_samples=6",
        "labels=[3]",
        "temperature=0.9",
        f"output_dir={tmp_path / 'out'}",
    )
    samples = torch.load(tmp_path / "out" / "samples.pt")
    assert samples.shape == (6, 1, 8, 8) and samples.min() >= -1 and samples.max() <= 1
    assert torch.equal(index_to_levels(levels_to_index(samples, 17), 17), samples)
    assert (tmp_path / "out" / "samples.png").is_file()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["num_parameters"] > 0
