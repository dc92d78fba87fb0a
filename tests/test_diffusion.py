"""Diffusion: the schedule's numbers, the samplers' guarantees, guidance, training, sample.py."""

import math

import pytest
import torch
from conftest import run_script, train_run

from zoo.data import DigitsDataModule
from zoo.models import Diffusion
from zoo.models.diffusion import (
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
    dpm_solver_sample,
)
from zoo.nn.distributions import discretized_gaussian_log_prob

DIGITS = DigitsDataModule().spec.to_dict()
TINY = {
    "base_channels": 16,
    "channel_multipliers": [1, 2],
    "num_res_blocks": 1,
    "attention_resolutions": [4],
}


# The schedule ------------------------------------------------------------------------------


def test_linear_schedule_alphas_cumprod_is_the_product_of_one_minus_betas():
    schedule = NoiseSchedule("linear", num_steps=1000, beta_start=1e-4, beta_end=0.02)
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]
    for t in (0, 1, 10, 500, 999):
        assert schedule.alphas_cumprod[t].item() == pytest.approx(
            math.prod(1 - b for b in betas[: t + 1]), rel=1e-10
        )
    assert schedule.alphas_cumprod[-1].item() == pytest.approx(4.0358e-5, rel=1e-3)  # DDPM's ᾱ_T


def test_cosine_schedule_ends_match_improved_ddpm():
    schedule = NoiseSchedule("cosine", num_steps=1000)
    s = 0.008
    f = lambda u: math.cos((u / 1000 + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    assert schedule.alphas_cumprod[0].item() == pytest.approx(f(1) / f(0), rel=1e-10)
    assert schedule.alphas_cumprod[-1].item() < 1e-4  # x_T is (almost) pure noise
    assert schedule.betas.max().item() <= 0.999


def test_forward_noising_has_the_promised_mean_and_variance():
    schedule = NoiseSchedule("linear", num_steps=1000)
    x0 = torch.full((200_000,), 0.7)
    t = torch.full((200_000,), 300)
    x_t = schedule.add_noise(
        x0.view(-1, 1), torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0)), t
    )
    alpha_bar = schedule.alphas_cumprod[300].item()
    assert x_t.mean().item() == pytest.approx(math.sqrt(alpha_bar) * 0.7, abs=5e-3)
    assert x_t.var().item() == pytest.approx(1 - alpha_bar, rel=1e-2)


@pytest.mark.parametrize("kind", ["epsilon", "x0", "v"])
def test_prediction_conversions_invert_each_other(kind):
    schedule = NoiseSchedule("cosine", num_steps=100)
    generator = torch.Generator().manual_seed(1)
    x0, noise = (
        torch.randn(16, 1, 4, 4, generator=generator),
        torch.randn(16, 1, 4, 4, generator=generator),
    )
    t = torch.randint(0, 100, (16,), generator=generator)
    x_t = schedule.add_noise(x0, noise, t)
    target = schedule.target(kind, x0, noise, t)
    assert torch.allclose(schedule.to_x0(kind, target, x_t, t), x0, atol=1e-4)


def test_min_snr_weights_are_min_snr_gamma_over_the_targets_snr_factor():
    schedule = NoiseSchedule("cosine", num_steps=1000)
    t = torch.tensor([0, 500, 999])
    snr = schedule.snr(t)
    assert torch.allclose(
        schedule.loss_weight("epsilon", t, "min_snr", 5.0), (snr.clamp(max=5) / snr).float()
    )
    assert torch.allclose(schedule.loss_weight("x0", t, "min_snr", 5.0), snr.clamp(max=5).float())
    assert torch.allclose(
        schedule.loss_weight("v", t, "min_snr", 5.0), (snr.clamp(max=5) / (snr + 1)).float()
    )


def test_discretized_gaussian_sums_to_one_over_the_levels():
    levels = torch.linspace(-1, 1, 17)
    log_prob = discretized_gaussian_log_prob(
        levels, torch.full((17,), 0.3), torch.full((17,), -1.5), 17
    )
    assert log_prob.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


# The samplers ---------------------------------------------------------------------------------


def oracle_denoiser(point: torch.Tensor):
    """A model of a single known point: it predicts that point's true noise, so x̂₀ = point."""
    return lambda x_t, t: point.expand_as(x_t)


@pytest.mark.parametrize("steps", [1, 10, 50])
def test_ddim_with_eta_zero_is_deterministic_and_lands_on_the_known_point(steps):
    schedule = NoiseSchedule("linear", num_steps=1000)
    point = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    noise = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    first = ddim_sample(oracle_denoiser(point), schedule, noise, steps=steps, eta=0.0)
    second = ddim_sample(oracle_denoiser(point), schedule, noise, steps=steps, eta=0.0)
    assert torch.equal(first, second)
    assert torch.allclose(first, point.expand_as(first), atol=1e-5)


def test_every_sampler_lands_on_the_known_point():
    schedule = NoiseSchedule("cosine", num_steps=200)
    point = torch.linspace(-1, 1, 16).view(1, 1, 4, 4)
    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    for images in (
        ddpm_sample(oracle_denoiser(point), schedule, noise, generator),
        ddim_sample(
            oracle_denoiser(point), schedule, noise, steps=20, eta=1.0, generator=generator
        ),
        dpm_solver_sample(oracle_denoiser(point), schedule, noise, steps=10),
    ):
        assert torch.allclose(images, point.expand_as(images), atol=1e-4)


def test_dpm_solver_is_a_second_order_solver_of_the_ode_of_a_gaussian():
    # Data N(0, s²): the exact denoiser is x̂₀ = √ᾱ s² x_t / (ᾱ s² + 1 − ᾱ), and the probability-flow
    # ODE maps x_T to x₀ = s · x_T / √(ᾱ_T s² + 1 − ᾱ_T) (same quantile). DDIM is its first-order
    # solver; DPM-Solver++(2M) must be far closer at 20 steps and shrink its error ~quadratically.
    schedule = NoiseSchedule("cosine", num_steps=1000)
    s2 = 0.25

    def denoise(x_t, t):
        alpha_bar = schedule.at(schedule.alphas_cumprod, t, x_t)
        return alpha_bar.sqrt() * s2 * x_t / (alpha_bar * s2 + 1 - alpha_bar)

    noise = torch.randn(
        200, 1, 1, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    alpha_bar_T = schedule.alphas_cumprod[-1].item()
    exact = math.sqrt(s2) * noise / math.sqrt(alpha_bar_T * s2 + 1 - alpha_bar_T)

    def relative_error(images):
        return ((images - exact).abs() / exact.abs()).median().item()

    error_20 = relative_error(dpm_solver_sample(denoise, schedule, noise, steps=20))
    error_50 = relative_error(dpm_solver_sample(denoise, schedule, noise, steps=50))
    ddim_20 = relative_error(ddim_sample(denoise, schedule, noise, steps=20))
    assert error_20 < 0.03 and error_50 < 0.01 and error_50 < error_20 / 2.5
    assert error_20 < ddim_20 / 2.5


# The model -------------------------------------------------------------------------------------


def test_guidance_scale_one_equals_the_conditional_model():
    torch.manual_seed(0)
    model = Diffusion(DIGITS, conditional=True, **TINY).eval()
    with torch.no_grad():  # give the label embedding some effect
        model.unet.class_embedding.weight.normal_()
        for p in model.unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    labels = torch.full((4,), 3)
    x_t, t = torch.randn(4, 1, 8, 8), torch.full((4,), 500)
    conditional = model.denoiser(labels, 1.0, "none")(x_t, t)
    plain = model.noise_schedule.to_x0("epsilon", model(x_t, t, labels), x_t, t)
    assert torch.allclose(conditional, plain, atol=1e-6)
    guided = model.denoiser(labels, 3.0, "none")(x_t, t)
    assert not torch.allclose(guided, conditional, atol=1e-4)


def test_samples_are_reproducible_images_for_every_sampler():
    model = Diffusion(DIGITS, conditional=True, num_steps=50, **TINY).eval()
    for sampler, steps in [("ddpm", None), ("ddim", 10), ("dpm_solver", 10)]:
        a = model.sample(
            3, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=steps, labels=[7]
        )
        b = model.sample(
            3, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=steps, labels=[7]
        )
        assert a.shape == (3, 1, 8, 8) and torch.equal(a, b) and a.abs().max() <= 1


def test_variational_bound_of_an_untrained_model_is_a_finite_positive_bits_per_dim():
    model = Diffusion(DIGITS, num_steps=20, **TINY).eval()
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    x, _ = next(iter(datamodule.test_dataloader()))
    bpd = model.variational_bound_bpd(x[:8])
    assert bpd.shape == (8,) and torch.isfinite(bpd).all() and (bpd > 0).all()


def test_one_batch_of_training_lowers_the_loss():
    torch.manual_seed(0)
    model = Diffusion(DIGITS, num_steps=100, **TINY)
    datamodule = DigitsDataModule(batch_size=64)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        torch.manual_seed(1)  # the same timesteps and noise each step
        loss = model._loss(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_labels_need_a_conditional_model():
    model = Diffusion(DIGITS, num_steps=10, **TINY).eval()
    with pytest.raises(ValueError, match="class-conditional"):
        model.sample(2, labels=[1])


@pytest.mark.slow
def test_sample_script_runs_every_sampler_from_a_trained_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    train_run(
        run_dir,
        "experiment=diffusion_digits",
        "debug=smoke",
        "model.num_steps=50",
        "model.base_channels=16",
        "evaluation.enabled=false",
    )
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    for sampler in ("ddpm", "ddim", "dpm_solver"):
        out = tmp_path / sampler
        process = run_script(
            "sample.py",
            f"ckpt_path={checkpoint}",
            f"sampler={sampler}",
            "steps=5",
            "num_samples=4",
            "labels=3",
            "guidance=2.0",
            f"output_dir={out}",
        )
        assert "images_per_second" in process.stdout
        assert torch.load(out / "samples.pt").shape == (4, 1, 8, 8)
