"""Diffusion: the schedule's numbers, the samplers' guarantees, guidance, training, sample.py."""

import importlib.util
import math
import re
import sys

import pytest
import torch
from conftest import run_script, train_run

from zoo.data import DigitsDataModule
from zoo.errors import ConfigError
from zoo.models import Diffusion
from zoo.models.diffusion import (
    GRIDS,
    LOGSNR_MIN,
    NoiseSchedule,
    ddim_sample,
    ddpm_sample,
    diffusers_sample,
    diffusers_scheduler,
    dpm_solver_sample,
    timestep_grid,
    unipc_sample,
)
from zoo.nn.distributions import discretized_gaussian_log_prob
from zoo.nn.dit import DiT

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


def counted(denoise):
    """Return the denoiser wrapped to count its calls, and the list holding the count."""
    count = [0]

    def wrapped(x_t, t):
        count[0] += 1
        return denoise(x_t, t)

    return wrapped, count


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
        unipc_sample(oracle_denoiser(point), schedule, noise, steps=10),
    ):
        assert torch.allclose(images, point.expand_as(images), atol=1e-4)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("grid", GRIDS)
def test_every_grid_gives_as_many_distinct_timesteps_as_calls_from_t_minus_1(kind, grid):
    schedule = NoiseSchedule(kind, num_steps=1000)
    for count in (1, 2, 5, 17, 20, 50, 999, 1000):
        timesteps = timestep_grid(schedule, count, grid)
        assert len(timesteps) == count and timesteps[0] == 999
        assert all(a > b >= 0 for a, b in zip(timesteps, timesteps[1:], strict=False))
    assert timestep_grid(schedule, 1000, grid) == list(range(999, -1, -1))


def test_logsnr_grid_keeps_out_of_the_cosine_plunge_and_ends_at_t_zero():
    # λ falls from −5 to −10 over t ≥ 990 on the cosine schedule; one step from T−1 crosses it.
    schedule = NoiseSchedule("cosine", num_steps=1000)
    timesteps = timestep_grid(schedule, 50, "logsnr")
    assert timesteps[-1] == 0 and timesteps[1] < 990
    log_snr = schedule.log_snr[timesteps[1:]]
    assert log_snr[0].item() >= LOGSNR_MIN
    assert timestep_grid(schedule, 4, "trailing") == [999, 749, 499, 249]
    assert timestep_grid(schedule, 5, "time_uniform") == [999, 749, 500, 250, 0]


@pytest.mark.parametrize("steps", [1, 2, 5, 20, 50, 1000])
def test_steps_is_the_number_of_network_calls_of_every_sampler(steps):
    schedule = NoiseSchedule("cosine", num_steps=1000)
    noise = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    point = torch.zeros(1, 1, 2, 2)
    for sampler in (ddim_sample, dpm_solver_sample, unipc_sample):
        for grid in GRIDS:
            denoise, count = counted(oracle_denoiser(point))
            sampler(denoise, schedule, noise, steps=steps, grid=grid)
            assert count[0] == steps, (sampler.__name__, grid)
    denoise, count = counted(oracle_denoiser(point))
    ddpm_sample(denoise, NoiseSchedule("cosine", num_steps=50), noise)
    assert count[0] == 50


def test_steps_outside_one_to_t_are_refused():
    schedule = NoiseSchedule("linear", num_steps=100)
    noise = torch.zeros(1, 1, 2, 2)
    for steps in (0, -3, 101):
        with pytest.raises(ConfigError, match="network calls"):
            unipc_sample(oracle_denoiser(noise), schedule, noise, steps=steps)
    with pytest.raises(ConfigError, match="grid must be one of"):
        timestep_grid(schedule, 10, "leading")


# Gaussian data N(0, s²): the exact denoiser is x̂₀ = α s² x_t / (α² s² + σ²), and the
# probability-flow ODE is linear, so it scales x_{T−1} by √(v₀/v_{T−1}) on the way to t = 0,
# v_t = α_t² s² + σ_t² being the marginal variance. Every sampler ends with the denoiser's x̂₀ at
# its last timestep, so the exact answer is E[x₀ | x₀'s ODE value at t = 0], the limit of every
# sampler as its calls grow (bench/diffusion_gaussian.py prints the full table).
DATA_STD = 0.5


def gaussian_denoiser(schedule):
    def denoise(x_t, t):
        alpha, sigma = schedule.alpha_sigma(t, x_t)
        return alpha * DATA_STD**2 * x_t / (alpha**2 * DATA_STD**2 + sigma**2)

    return denoise


def gaussian_error(schedule, sample) -> float:
    """Return the median relative error of ``sample(denoise, noise)`` against the exact answer."""
    noise = torch.randn(16, 1, 2, 2, generator=torch.Generator().manual_seed(0)).double()
    variance = schedule.alphas_cumprod * DATA_STD**2 + 1 - schedule.alphas_cumprod
    x_0 = noise * math.sqrt(variance[0] / variance[-1])
    exact = gaussian_denoiser(schedule)(x_0, torch.zeros(16, dtype=torch.long))
    images = sample(gaussian_denoiser(schedule), noise)
    return ((images - exact).abs() / exact.abs()).median().item()


# The configurations a user of diffusers would try: each scheduler's timestep spacings and
# σ grids. The per-cell best of these is the bar.
DIFFUSERS_CONFIGURATIONS = [
    ("DDIMScheduler", {"timestep_spacing": "leading"}),
    ("DDIMScheduler", {"timestep_spacing": "trailing"}),
    ("DDIMScheduler", {"timestep_spacing": "linspace"}),
    ("DPMSolverMultistepScheduler", {}),
    ("DPMSolverMultistepScheduler", {"timestep_spacing": "leading"}),
    ("DPMSolverMultistepScheduler", {"timestep_spacing": "trailing"}),
    ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    ("DPMSolverMultistepScheduler", {"use_lu_lambdas": True}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "timestep_spacing": "leading"}),
    ("UniPCMultistepScheduler", {}),
    ("UniPCMultistepScheduler", {"timestep_spacing": "leading"}),
    ("UniPCMultistepScheduler", {"timestep_spacing": "trailing"}),
    ("DEISMultistepScheduler", {}),
    ("PNDMScheduler", {"skip_prk_steps": True}),
    ("LMSDiscreteScheduler", {}),
]


def diffusers_gaussian_error(schedule, name, config, calls) -> float:
    scheduler = diffusers_scheduler(name, schedule, "epsilon", config)

    def sample(denoise, noise):
        denoise, count = counted(denoise)
        images = diffusers_sample(scheduler, denoise, schedule, noise, calls, "epsilon")
        assert count[0] == calls
        return images

    try:
        return gaussian_error(schedule, sample)
    except (ValueError, IndexError, AssertionError):  # fails on this schedule (e.g. Karras σ)
        return math.inf


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_default_sampler_is_at_least_as_accurate_as_the_best_diffusers_scheduler(kind):
    pytest.importorskip("diffusers")
    schedule = NoiseSchedule(kind, num_steps=1000)
    errors = {
        calls: gaussian_error(
            schedule,
            lambda denoise, noise, calls=calls: unipc_sample(denoise, schedule, noise, calls),
        )
        for calls in (5, 10, 20, 50)
    }
    assert errors[5] >= errors[10] >= errors[20] >= errors[50]  # more calls, never worse
    for calls in (10, 20, 50):
        best = min(
            diffusers_gaussian_error(schedule, name, config, calls)
            for name, config in DIFFUSERS_CONFIGURATIONS
        )
        assert errors[calls] <= 1.1 * best, (calls, errors[calls], best)
    # At 5 calls every method's error hangs on where its few calls fall (over grids it
    # ranges from 1e-4 to 0.3: bench/diffusion_gaussian.py --five-call-search); against each
    # scheduler at its defaults:
    for name in ("DDIMScheduler", "DPMSolverMultistepScheduler", "UniPCMultistepScheduler"):
        assert errors[5] <= diffusers_gaussian_error(schedule, name, {}, 5)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_each_sampler_error_never_grows_with_more_calls(kind):
    schedule = NoiseSchedule(kind, num_steps=1000)
    for sampler in (ddim_sample, dpm_solver_sample, unipc_sample):
        errors = [
            gaussian_error(schedule, lambda d, x, n=n, f=sampler: f(d, schedule, x, steps=n))
            for n in (5, 10, 20, 50)
        ]
        assert errors == sorted(errors, reverse=True), (sampler.__name__, errors)
    # DPM-Solver++(2M) is second order, UniPC third: far ahead of first-order DDIM at 20 calls
    ddim, dpm, unipc = (
        gaussian_error(schedule, lambda d, noise, f=f: f(d, schedule, noise, steps=20))
        for f in (ddim_sample, dpm_solver_sample, unipc_sample)
    )
    assert dpm < ddim / 8 and unipc < dpm / 20


def stepping(scheduler):
    """Return a sampler that steps a diffusers scheduler (prediction_type "sample") through
    its timesteps as they stand."""

    def sample(denoise, noise):
        x = noise
        for t in scheduler.timesteps:
            x = scheduler.step(denoise(x, torch.full((len(x),), int(t))), t, x).prev_sample
        return x

    return sample


def test_dpm_solver_equals_diffusers_dpm_solver_plus_plus_2m_on_the_same_timesteps():
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule("cosine", num_steps=1000)
    timesteps = timestep_grid(schedule, 10, "logsnr")
    # x̂₀ handed over as is ("sample"): diffusers turns ε into x̂₀ in float32, which at t = 999
    # of the cosine schedule (α = 5e-5) costs it 2e-4 of the sample.
    scheduler = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, trained_betas=schedule.betas.tolist(), prediction_type="sample"
    )
    scheduler.set_timesteps(timesteps=timesteps)

    ours = gaussian_error(schedule, lambda d, noise: dpm_solver_sample(d, schedule, noise, 10))
    assert ours == pytest.approx(gaussian_error(schedule, stepping(scheduler)), rel=1e-4)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_unipc_equals_diffusers_unipc_of_order_three_on_the_same_timesteps(kind):
    diffusers = pytest.importorskip("diffusers")
    schedule = NoiseSchedule(kind, num_steps=1000)
    timesteps = timestep_grid(schedule, 10, "logsnr")
    scheduler = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000,
        trained_betas=schedule.betas.tolist(),
        prediction_type="sample",
        solver_order=3,
    )
    scheduler.set_timesteps(10)  # then our timesteps: UniPC's set_timesteps takes no list
    alphas_cumprod = schedule.alphas_cumprod[timesteps]
    scheduler.timesteps = torch.tensor(timesteps)
    scheduler.sigmas = torch.cat([((1 - alphas_cumprod) / alphas_cumprod).sqrt(), torch.zeros(1)])
    scheduler.sigmas = scheduler.sigmas.float()

    ours = gaussian_error(schedule, lambda d, noise: unipc_sample(d, schedule, noise, 10))
    assert ours == pytest.approx(gaussian_error(schedule, stepping(scheduler)), rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("prediction", ["epsilon", "x0", "v"])
def test_a_zoo_model_through_diffusers_ddim_equals_zoos_ddim(prediction):
    # DDIM on trailing timesteps is the same algorithm in both libraries: equal samples show
    # that the schedule, the prediction type, guidance and clipping reach diffusers intact.
    pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = Diffusion(DIGITS, conditional=True, prediction=prediction, **TINY).eval()
    schedule = model.noise_schedule
    denoise = model.denoiser(torch.full((3,), 4), 2.0, "clip")
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    scheduler = diffusers_scheduler(
        "DDIMScheduler", schedule, prediction, {"timestep_spacing": "trailing"}
    )
    with torch.no_grad():
        theirs = diffusers_sample(scheduler, denoise, schedule, noise, 8, prediction)
        ours = ddim_sample(denoise, schedule, noise, steps=8, grid="trailing")
    assert torch.allclose(theirs, ours, atol=2e-4)


# The model -------------------------------------------------------------------------------------


def test_guidance_scale_one_equals_the_conditional_model():
    torch.manual_seed(0)
    model = Diffusion(DIGITS, conditional=True, **TINY).eval()
    with torch.no_grad():  # give the label embedding some effect
        model.network.class_embedding.weight.normal_()
        for p in model.network.parameters():
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
    samplers = [("ddpm", None), ("ddim", 10), ("dpm_solver", 10), ("unipc", 10)]
    if importlib.util.find_spec("diffusers"):
        samplers += [("diffusers:DDPMScheduler", 10), ("diffusers:UniPCMultistepScheduler", 5)]
    for sampler, steps in samplers:
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


def losses_on_one_batch(model, x, y, lr: float, steps: int) -> list[float]:
    """Return the losses of ``steps`` Adam steps on one batch, each with the same timesteps
    and noise."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        torch.manual_seed(1)
        loss = model._loss(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_one_batch_of_training_lowers_the_loss():
    torch.manual_seed(0)
    model = Diffusion(DIGITS, num_steps=100, **TINY)
    datamodule = DigitsDataModule(batch_size=64)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    losses = losses_on_one_batch(model, x, y, lr=2e-3, steps=40)
    assert losses[-1] < 0.5 * losses[0]


DIT = {"backbone": "dit", "patch_size": 2, "hidden_size": 16, "depth": 2, "num_heads": 2}


def test_a_dit_backbone_denoises_trains_and_samples_as_the_unet_does():
    torch.manual_seed(0)
    model = Diffusion(DIGITS, conditional=True, num_steps=100, **DIT)
    assert isinstance(model.network, DiT) and model.network.patch_size == 2
    datamodule = DigitsDataModule(batch_size=32)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    losses = losses_on_one_batch(model, x, y, lr=1e-2, steps=15)
    assert losses[-1] < 0.7 * losses[0]
    model.eval()
    count = unet_calls(model)
    images = model.sample(3, sampler="unipc", steps=5, labels=[4], guidance=2.0)
    assert images.shape == (3, 1, 8, 8) and count[0] == model.last_network_calls == 5


def test_a_checkpoint_from_before_the_backbone_choice_loads_its_unet_weights():
    model = Diffusion(DIGITS, **TINY)
    old = {name.replace("network.", "unet.", 1): t + 1 for name, t in model.state_dict().items()}
    model.load_state_dict(old)  # strict: every "unet." weight found its "network." place
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, old[name.replace("network.", "unet.", 1)])
    ema = {name: t + 1 for name, t in old.items() if name.startswith("unet.")}
    model.load_state_dict(ema, strict=False)  # as the EMA callback swaps its weights in
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ema[name.replace("network.", "unet.", 1)])


def unet_calls(model):
    """Count the network's forward passes from outside; return the list holding the count."""
    count = [0]
    model.network.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    return count


@pytest.mark.parametrize(
    "sampler", ["ddim", "dpm_solver", "unipc", "diffusers:UniPCMultistepScheduler"]
)
def test_steps_twenty_makes_twenty_network_calls_with_or_without_guidance(sampler):
    if sampler.startswith("diffusers:"):
        pytest.importorskip("diffusers")
    model = Diffusion(DIGITS, conditional=True, **TINY).eval()
    count = unet_calls(model)
    model.sample(2, sampler=sampler, steps=20)
    assert count[0] == model.last_network_calls == 20
    model.sample(2, sampler=sampler, steps=20, labels=[3], guidance=2.0)  # one doubled batch
    assert count[0] == 40 and model.last_network_calls == 20


def test_ddpm_makes_one_network_call_per_timestep_and_defaults_to_the_configs_steps():
    model = Diffusion(DIGITS, num_steps=30, sampler="ddpm", sampler_steps=20, **TINY).eval()
    count = unet_calls(model)
    model.sample(2)
    assert count[0] == model.last_network_calls == 30
    model.sample(2, sampler="unipc")  # sampler_steps serves the other samplers
    assert model.last_network_calls == 20


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "must lie in 1 … 50"),
        ({"steps": 51}, "must lie in 1 … 50"),
        ({"sampler": "ddpm", "steps": 20}, "makes all T=50 network calls"),
        ({"sampler": "ddim", "eta": -0.1}, "eta must lie in 0"),
        ({"sampler": "ddim", "eta": 1.5}, "eta must lie in 0"),
        ({"sampler": "unipc", "eta": 0.5}, "ignores it"),
        ({"sampler": "dpm_solver", "grid": "leading"}, "grid must be one of"),
        ({"sampler": "ddpm", "grid": "logsnr"}, "spaces its timesteps itself"),
        ({"sampler": "heun"}, "sampler must be one of"),
        ({"clip": "soft"}, "clip must be none, clip or dynamic"),
    ],
)
def test_bad_sampler_options_are_refused_with_the_fix(options, message):
    with pytest.raises(ConfigError, match="model.sampler_steps=20"):
        Diffusion(DIGITS, num_steps=10, **TINY)
    model = Diffusion(DIGITS, conditional=True, num_steps=50, **TINY).eval()
    with pytest.raises(ConfigError, match=message):
        model.sample(2, **options)


def test_guidance_on_an_unconditional_model_is_refused():
    model = Diffusion(DIGITS, num_steps=50, **TINY).eval()
    with pytest.raises(ConfigError, match="this one is unconditional: leave guidance out"):
        model.sample(2, guidance=3.0)
    with pytest.raises(ConfigError, match="class-conditional"):
        model.sample(2, guidance=3.0, labels=[1])


def test_diffusers_samplers_without_diffusers_say_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers raises ImportError
    model = Diffusion(DIGITS, num_steps=50, **TINY).eval()
    with pytest.raises(ConfigError, match=r'pip install "zoo\[diffusers\]"'):
        model.sample(2, sampler="diffusers:UniPCMultistepScheduler")


def test_diffusers_samplers_that_cannot_work_are_refused():
    pytest.importorskip("diffusers")
    model = Diffusion(DIGITS, num_steps=50, **TINY).eval()
    for sampler, message in [
        ("diffusers:NoSuchScheduler", "no scheduler 'NoSuchScheduler'"),
        ("diffusers:UNet2DModel", "no scheduler"),
        ("diffusers:EDMEulerScheduler", "does not take a DDPM noise schedule"),
    ]:
        with pytest.raises(ConfigError, match=message):
            model.sample(2, sampler=sampler, steps=5)
    with pytest.raises(ConfigError, match="cannot make exactly steps=4 network calls"):
        model.sample(2, sampler="diffusers:HeunDiscreteScheduler", steps=4)  # 2 per step − 1
    with pytest.raises(ConfigError, match="eta= is not an option"):
        model.sample(2, sampler="diffusers:UniPCMultistepScheduler", steps=5, eta=0.5)


def test_labels_need_a_conditional_model():
    model = Diffusion(DIGITS, num_steps=10, sampler_steps=5, **TINY).eval()
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
    for sampler in ("ddpm", "ddim", "dpm_solver", "unipc"):
        out = tmp_path / sampler
        process = run_script(
            "sample.py",
            f"ckpt_path={checkpoint}",
            f"sampler={sampler}",
            *([] if sampler == "ddpm" else ["steps=5"]),
            "num_samples=4",
            "labels=3",
            "guidance=2.0",
            f"output_dir={out}",
        )
        assert "images_per_second" in process.stdout
        calls = 50 if sampler == "ddpm" else 5
        assert re.search(rf"network_calls\s+{calls}\n", process.stdout)
        assert torch.load(out / "samples.pt").shape == (4, 1, 8, 8)
