"""Flow matching, the DiT and latent generation: closed forms, convergence orders, guidance,
the two-stage checkpoint, train.py and sample.py."""

from __future__ import annotations

import functools
import importlib
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_SPEC, ROOT, checkpoint_of, run_script, tiny_family, train_in_process
from hydra import compose, initialize_config_dir

from zoo import checkpoint_format as keys
from zoo.callbacks import EMA
from zoo.checkpoints import load_checkpoint, model_from_checkpoint
from zoo.data import DigitsDataModule
from zoo.data.spec import DataSpec
from zoo.errors import ConfigError, ZooError
from zoo.models import VAE, Flow
from zoo.models.base import draw_samples
from zoo.models.flow import (
    SAMPLERS,
    euler_sample,
    flow_matching_loss,
    heun_sample,
    interpolate,
    sample_times,
    velocity_target,
)
from zoo.nn.dit import DiT, patchify, sincos_positions, unpatchify
from zoo.nn.guidance import drop_labels, guidance_mix
from zoo.outputs import save_tensor
from zoo.runner import build_model

sample_runner = importlib.import_module("zoo.runner.sample")  # the module, not the function

UNET = {
    "base_channels": 8,
    "channel_multipliers": [1],
    "num_res_blocks": 1,
    "attention_resolutions": [],
    "num_heads": 1,
}
DIT = {"backbone": "dit", "patch_size": 2, "hidden_size": 16, "depth": 2, "num_heads": 2}


def perturbed(model: Flow, scale: float = 0.3) -> Flow:
    """Return ``model`` with every weight nudged at random, so that zero-initialised layers
    (the output, adaLN-Zero) let the inputs, times and labels show in the prediction."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return model


# The path and its loss --------------------------------------------------------------------


def test_the_path_runs_straight_from_data_at_t0_to_noise_at_t1_with_velocity_noise_minus_data():
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 3, 4, 4, generator=generator), torch.randn(2, 3, 4, 4)
    assert torch.equal(interpolate(x0, noise, torch.zeros(2)), x0)
    assert torch.equal(interpolate(x0, noise, torch.ones(2)), noise)
    t = torch.tensor([0.25, 0.6])
    x_t = interpolate(x0, noise, t)
    assert torch.allclose(x_t[0], 0.75 * x0[0] + 0.25 * noise[0])
    assert torch.allclose(x_t[1], 0.4 * x0[1] + 0.6 * noise[1])
    h = 1e-3  # dx_t/dt along the path is the velocity target ε − x₀
    slope = (interpolate(x0, noise, t + h) - x_t) / h
    assert torch.allclose(slope, velocity_target(x0, noise), atol=1e-3)


def test_the_flow_matching_loss_is_the_mean_squared_error_of_the_velocity():
    x0 = torch.tensor([[1.0, -1.0]])
    noise = torch.tensor([[0.5, 0.5]])
    prediction = torch.tensor([[0.0, 2.0]])  # target (−0.5, 1.5): errors 0.5 and 0.5
    assert flow_matching_loss(prediction, x0, noise).tolist() == [0.25]
    assert flow_matching_loss(velocity_target(x0, noise), x0, noise).tolist() == [0.0]


def test_logit_normal_times_have_the_asked_mean_and_spread_of_their_logits():
    generator = torch.Generator().manual_seed(0)
    t = sample_times(200_000, "logit_normal", mean=0.5, std=0.8, generator=generator)
    logits = torch.log(t / (1 - t))
    assert logits.mean().item() == pytest.approx(0.5, abs=0.01)
    assert logits.std().item() == pytest.approx(0.8, abs=0.01)
    uniform = sample_times(200_000, "uniform", generator=generator)
    assert uniform.min() >= 0 and uniform.max() < 1
    assert uniform.mean().item() == pytest.approx(0.5, abs=0.005)
    with pytest.raises(ConfigError, match="uniform or logit_normal"):
        sample_times(3, "cosine")


def test_an_euler_step_moves_by_minus_one_times_the_velocity_from_noise_to_data():
    noise = torch.randn(3, 2)
    constant = torch.tensor([0.5, -2.0])
    x0 = euler_sample(lambda x, t: constant.expand_as(x), noise, calls=1)
    assert torch.allclose(x0, noise - constant)  # x₀ = x₁ + (0 − 1)·v
    seen = []
    euler_sample(lambda x, t: seen.append(t[0].item()) or torch.zeros_like(x), noise, calls=4)
    assert seen == pytest.approx([1.0, 0.75, 0.5, 0.25])


# The exact flow of Gaussian data ------------------------------------------------------------
#
# For x₀ ~ N(μ, s²) and ε ~ N(0, 1), x_t = (1 − t)x₀ + tε is Gaussian with mean m_t = (1 − t)μ
# and variance σ_t² = (1 − t)²s² + t², with Cov(ε, x_t) = t and Cov(x₀, x_t) = (1 − t)s². So
# E[ε | x_t] = t(x_t − m_t)/σ_t² and E[x₀ | x_t] = μ + (1 − t)s²(x_t − m_t)/σ_t², and the
# velocity the flow learns is v(x, t) = −μ + (t − (1 − t)s²)(x − m_t)/σ_t². Its ODE moves the
# quantiles: x_t = m_t + σ_t·z solves dx/dt = v, so noise z at t = 1 lands on μ + s·z at t = 0.

MU, S = 0.7, 0.5


def gaussian_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    mean = (1 - t) * MU
    variance = (1 - t) ** 2 * S**2 + t**2
    return -MU + (t - (1 - t) * S**2) * (x - mean) / variance


def gaussian_noise() -> torch.Tensor:
    return torch.randn(256, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def sampler_error(sampler: str, calls: int) -> float:
    noise = gaussian_noise()
    exact = MU + S * noise
    return (SAMPLERS[sampler](gaussian_velocity, noise, calls) - exact).abs().max().item()


def test_the_gaussian_velocity_is_the_conditional_mean_of_the_target():
    # Monte Carlo: among pairs whose x_t falls near x, the mean of ε − x₀ is v(x, t).
    generator = torch.Generator().manual_seed(1)
    x0 = MU + S * torch.randn(2_000_000, generator=generator, dtype=torch.float64)
    noise = torch.randn(2_000_000, generator=generator, dtype=torch.float64)
    t = 0.4
    x_t = (1 - t) * x0 + t * noise
    for x in (-0.3, 0.4, 1.0):
        near = (x_t - x).abs() < 0.01
        empirical = (noise - x0)[near].mean().item()
        exact = gaussian_velocity(torch.tensor([x], dtype=torch.float64), torch.tensor([t]))
        assert empirical == pytest.approx(exact.item(), abs=0.02)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_each_sampler_carries_gaussian_noise_onto_its_data_quantile_as_calls_grow(sampler):
    errors = [sampler_error(sampler, n) for n in (8, 32, 128, 512)]
    assert all(later < earlier / 3.5 for earlier, later in zip(errors, errors[1:], strict=False))
    assert errors[-1] < {"euler": 5e-3, "heun": 2e-5, "midpoint": 1e-7}[sampler]


def mixture_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact velocity of data ½N(−1, S²) + ½N(1, S²): each component's Gaussian velocity,
    weighted by how likely x_t is to have come from it (the components share σ_t)."""
    t = t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    variance = (1 - t) ** 2 * S**2 + t**2
    log_weights, velocities = [], []
    for mu in (-1.0, 1.0):
        mean = (1 - t) * mu
        log_weights.append(-((x - mean) ** 2) / (2 * variance))
        velocities.append(-mu + (t - (1 - t) * S**2) * (x - mean) / variance)
    weights = torch.stack(log_weights).softmax(dim=0)
    return (weights * torch.stack(velocities)).sum(dim=0)


def log_log_slope(calls: list[int], errors: list[float]) -> float:
    """Return the least-squares slope of log(error) against log(calls)."""
    xs, ys = [math.log(n) for n in calls], [math.log(e) for e in errors]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )


@functools.cache
def mixture_reference() -> torch.Tensor:
    """Return where the mixture's flow carries gaussian_noise(): Heun with 4,096 calls, 1e-7
    from the midpoint method's."""
    return heun_sample(mixture_velocity, gaussian_noise(), 4096)


@pytest.mark.parametrize("sampler, order", [("euler", 1), ("heun", 2), ("midpoint", 2)])
def test_each_sampler_converges_at_its_order_on_a_curved_flow(sampler, order):
    # A mixture's flow bends (the Gaussian's is so regular that midpoint gains an order there).
    noise, reference = gaussian_noise(), mixture_reference()
    calls = [16, 32, 64, 128]
    errors = [
        (SAMPLERS[sampler](mixture_velocity, noise, n) - reference).abs().max().item()
        for n in calls
    ]
    assert log_log_slope(calls, errors) == pytest.approx(-order, abs=0.12)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
@pytest.mark.parametrize("calls", [1, 2, 5, 6, 20])
def test_a_sampler_makes_exactly_steps_network_calls(sampler, calls):
    made = []

    def velocity(x, t):
        made.append(t[0].item())
        return gaussian_velocity(x, t)

    SAMPLERS[sampler](velocity, gaussian_noise(), calls)
    assert len(made) == calls
    assert made[0] == 1.0 and all(0 <= t <= 1 for t in made)


def test_an_odd_number_of_calls_ends_heun_with_one_euler_step():
    seen = []
    heun_sample(lambda x, t: seen.append(t[0].item()) or torch.zeros_like(x), torch.zeros(1), 5)
    # three intervals of 1/3: Heun (1 → 2/3), Heun (2/3 → 1/3), then Euler from 1/3
    assert seen == pytest.approx([1.0, 2 / 3, 2 / 3, 1 / 3, 1 / 3])


# The DiT ---------------------------------------------------------------------------------------


def test_patchify_and_unpatchify_invert_each_other():
    x = torch.randn(2, 3, 8, 12)
    tokens = patchify(x, 4)
    assert tokens.shape == (2, 6, 48)
    assert torch.equal(tokens[0, 1], x[0, :, 0:4, 4:8].permute(1, 2, 0).flatten())
    assert torch.equal(unpatchify(tokens, 4, 3, 8, 12), x)


def test_the_dit_patch_embedding_is_a_linear_map_of_each_patch():
    dit = DiT((3, 8, 8), patch_size=2, hidden_size=16, depth=1, num_heads=2)
    x = torch.randn(2, 3, 8, 8)
    weight = dit.patch_embedding.weight.permute(0, 2, 3, 1).flatten(1)  # (D, p·p·C)
    expected = patchify(x, 2) @ weight.T + dit.patch_embedding.bias
    embedded = dit.patch_embedding(x).flatten(2).transpose(1, 2)  # (B, T, D)
    assert torch.allclose(embedded, expected, atol=1e-5)


def test_sincos_positions_encode_row_then_column_and_stay_out_of_checkpoints():
    table = sincos_positions(8, 3, 4)  # (12, 8): rows in the first half, columns in the second
    assert table.shape == (12, 8)
    assert torch.equal(table[0], torch.tensor([0.0, 0, 1, 1, 0, 0, 1, 1]))
    assert torch.allclose(table[5, :4], table[4, :4]) and torch.allclose(table[5, 4:], table[1, 4:])
    assert torch.allclose(table[5, :2], torch.tensor([math.sin(1.0), math.sin(0.01)]))
    fixed = DiT((1, 8, 8), hidden_size=16, depth=1, num_heads=2, positions="sincos")
    learned = DiT((1, 8, 8), hidden_size=16, depth=1, num_heads=2, positions="learned")
    assert "position_embedding" not in fixed.state_dict()
    assert learned.state_dict()["position_embedding"].shape == (1, 16, 16)


@pytest.mark.parametrize("patch_size", [1, 2, 4])
def test_the_dit_maps_images_to_predictions_of_the_same_shape(patch_size):
    dit = DiT((3, 8, 8), patch_size=patch_size, hidden_size=32, depth=2, num_classes=10)
    x = torch.randn(5, 3, 8, 8)
    out = dit(x, torch.rand(5) * 1000, torch.tensor([0, 3, 9, 10, 2]))  # 10: "no label"
    assert out.shape == (5, 3, 8, 8)
    assert out.abs().max() == 0  # adaLN-Zero: the output layer starts at zero


def test_every_dit_block_starts_as_the_identity_under_adaln_zero():
    torch.manual_seed(0)
    dit = DiT((1, 8, 8), patch_size=2, hidden_size=32, depth=3, num_heads=4, num_classes=10)
    labels = torch.tensor([0, 4, 9, 10])
    tokens, conditioning = torch.randn(4, 16, 32), dit.conditioning(torch.rand(4) * 1000, labels)
    for block in dit.blocks:
        assert torch.equal(block(tokens, conditioning), tokens)
    with torch.no_grad():  # a trained modulation makes the block do something
        dit.blocks[0].modulation[-1].weight.normal_()
    assert not torch.allclose(dit.blocks[0](tokens, conditioning), tokens)


def test_the_dit_refuses_sizes_that_do_not_fit_in_one_line():
    with pytest.raises(ConfigError, match="model.patch_size=3 must divide the 8×8 input"):
        Flow(IMAGE_SPEC, **{**DIT, "patch_size": 3})
    with pytest.raises(ConfigError, match="model.hidden_size=18 must be a multiple"):
        Flow(IMAGE_SPEC, **{**DIT, "hidden_size": 18, "num_heads": 4})
    with pytest.raises(ConfigError, match="model.backbone must be unet or dit"):
        Flow(IMAGE_SPEC, backbone="vit")


# diffusers' flow-matching Euler scheduler ------------------------------------------------------


def diffusers_euler(velocity, noise: torch.Tensor, calls: int, sigmas=None) -> torch.Tensor:
    """Return x₀ drawn by diffusers' FlowMatchEulerDiscreteScheduler in ``calls`` steps (its own
    grid, or ``sigmas``), with the network seeing t = σ, as zoo's flow does (σ·1000 there)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    scheduler.set_timesteps(calls, sigmas=sigmas)
    x = noise
    for timestep in scheduler.timesteps:
        t = torch.full((len(x),), timestep.item() / 1000)
        x = scheduler.step(velocity(x, t), timestep, x).prev_sample
    return x


def test_the_euler_sampler_matches_diffusers_flow_match_euler_on_the_same_grid():
    noise = gaussian_noise().float()
    for calls in (1, 4, 10):
        grid = torch.linspace(1, 0, calls + 1)[:-1].tolist()  # diffusers appends σ = 0
        theirs = diffusers_euler(gaussian_velocity, noise, calls, sigmas=grid)
        ours = euler_sample(gaussian_velocity, noise, calls)
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_the_euler_sampler_is_at_least_as_accurate_as_diffusers_at_equal_network_calls():
    # diffusers spaces its σ from 1 to 1/1000 and spends its last call on the step from
    # 1/1000 to 0; zoo spaces the calls evenly from 1 to 0.
    noise = gaussian_noise().float()
    exact = MU + S * noise
    for calls in (4, 10, 20):
        ours = (euler_sample(gaussian_velocity, noise, calls) - exact).abs().max().item()
        theirs = (diffusers_euler(gaussian_velocity, noise, calls) - exact).abs().max().item()
        assert ours <= theirs


# The family: guidance, network calls, EMA ---------------------------------------------------


def test_guidance_mixes_conditional_and_unconditional_and_drop_labels_uses_the_null_class():
    c, u = torch.tensor([2.0]), torch.tensor([1.0])
    assert guidance_mix(c, u, 1.0).item() == 2.0 and guidance_mix(c, u, 0.0).item() == 1.0
    assert guidance_mix(c, u, 3.0).item() == 4.0
    labels = torch.zeros(100_000, dtype=torch.long)
    dropped = drop_labels(labels, 0.1, 10, torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 10}
    assert (dropped == 10).float().mean().item() == pytest.approx(0.1, abs=0.005)


@pytest.mark.parametrize("backbone", [UNET, DIT], ids=["unet", "dit"])
def test_guidance_changes_the_samples_of_a_conditional_model_only(backbone):
    model = perturbed(Flow(IMAGE_SPEC, conditional=True, **backbone), scale=0.05).eval()

    def draw(**options):
        return model.sample(4, generator=torch.Generator().manual_seed(0), steps=4, **options)

    plain, guided = draw(labels=3), draw(labels=3, guidance=3.0)
    assert torch.equal(plain, draw(labels=3, guidance=1.0))
    assert not torch.allclose(plain, guided, atol=1e-3)
    assert not torch.allclose(plain, draw(labels=5), atol=1e-3)
    # Without labels a conditional model draws the classes in turn; guidance 0 draws from
    # its unconditional half ("no label"), the same whatever the labels.
    assert torch.equal(draw(), draw(labels=[0, 1, 2, 3]))
    assert torch.allclose(draw(guidance=0.0), draw(labels=3, guidance=0.0), atol=1e-5)
    assert not torch.allclose(draw(guidance=0.0), draw(), atol=1e-3)
    assert not torch.allclose(draw(guidance=2.0), draw(), atol=1e-3)
    unconditional = perturbed(Flow(IMAGE_SPEC, **backbone)).eval()
    with pytest.raises(ConfigError, match="labels= needs a class-conditional model"):
        unconditional.sample(2, labels=3, guidance=2.0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"steps": 0}, "steps counts network calls and must be at least 1, got 0"),
        ({"steps": 2.5}, "steps counts network calls and must be at least 1, got 2.5"),
        ({"sampler": "ddim"}, "sampler must be one of euler, heun, midpoint, got 'ddim'"),
    ],
)
def test_sampling_refuses_options_that_cannot_work_in_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        Flow(IMAGE_SPEC, **UNET).sample(2, **options)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_sample_reports_the_network_calls_counted_from_outside(sampler):
    model = Flow(IMAGE_SPEC, conditional=True, **DIT).eval()
    counted = []
    forward = model.network.forward
    model.network.forward = lambda *args: counted.append(len(args[0])) or forward(*args)
    for steps, guidance in [(7, None), (4, 2.0)]:
        counted.clear()
        images = model.sample(3, sampler=sampler, steps=steps, guidance=guidance, labels=1)
        assert len(counted) == model.last_network_calls == steps
        assert counted[0] == (6 if guidance else 3)  # guided: both halves in one call
        assert images.shape == (3, 1, 8, 8) and images.abs().max() <= 1


def test_one_trained_network_serves_every_sampler_and_they_agree_as_steps_grow():
    model = perturbed(Flow(IMAGE_SPEC, **DIT), scale=0.05).eval()
    draws = {
        name: model.sample(4, generator=torch.Generator().manual_seed(0), sampler=name, steps=32)
        for name in SAMPLERS
    }
    assert torch.allclose(draws["heun"], draws["midpoint"], atol=2e-3)
    assert torch.allclose(draws["heun"], draws["euler"], atol=5e-2)


def test_the_ema_averages_the_velocity_network_only():
    model = Flow(IMAGE_SPEC, **UNET)
    tracked = EMA()._tracked(model)
    assert tracked and all(name.startswith("network.") for name in tracked)


def test_training_steps_lower_the_flow_matching_loss_on_a_batch_of_digits():
    torch.manual_seed(0)
    model = Flow(IMAGE_SPEC, conditional=True, **{**DIT, "hidden_size": 32})
    datamodule = DigitsDataModule(batch_size=32)
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    optimizer = torch.optim.Adam(model.parameter_groups(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = model._loss(x, y, generator=torch.Generator().manual_seed(1))  # same t and ε
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# Latent generation ---------------------------------------------------------------------------

SPATIAL_VAE = {"latent": "spatial", "latent_channels": 2, "channels": [8]}


def spatial_vae_checkpoint(tmp_path, **options) -> str:
    torch.manual_seed(0)
    vae = VAE(IMAGE_SPEC, **{**SPATIAL_VAE, **options}).eval()
    path = tmp_path / "vae.ckpt"
    save_tensor(checkpoint_of(vae), path)
    return str(path)


def test_a_spatial_vae_encodes_digits_to_a_map_and_decodes_them_back():
    torch.manual_seed(0)
    vae = VAE(IMAGE_SPEC, **SPATIAL_VAE, beta=0.1)
    datamodule = DigitsDataModule(batch_size=64)
    datamodule.setup("fit")
    x, _ = next(iter(datamodule.train_dataloader()))
    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-2)
    for _ in range(60):
        terms = vae.negative_elbo(x)
        loss = (terms["reconstruction"] + 0.1 * terms["kl"]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    vae.eval()
    latents = vae.posterior_mean(x)
    assert vae.latent_shape == (2, 4, 4) and latents.shape == (64, 2, 4, 4)
    decoded = vae.decode(latents)
    assert decoded.shape == x.shape and decoded.abs().max() <= 1
    assert torch.equal(decoded, vae.reconstruct(x))
    error = (decoded - x).pow(2).mean().item()
    baseline = (x - x.mean(0)).pow(2).mean().item()  # the mean digit, knowing nothing
    assert error < 0.5 * baseline


def test_a_latent_flow_holds_its_frozen_first_stage_and_normalises_the_latents(tmp_path):
    model = build_model(
        {"_target_": "zoo.models.Flow", "stage_one": spatial_vae_checkpoint(tmp_path), **DIT},
        IMAGE_SPEC,
    )
    first = model_from_checkpoint(load_checkpoint(tmp_path / "vae.ckpt"))
    assert model.two_stage and model.data_shape == (2, 4, 4)
    assert model.hparams.stage_one["family"] == "vae"
    for name, value in first.state_dict().items():
        assert torch.equal(model.state_dict()[f"stage_one.{name}"], value)
    assert not any(p.requires_grad for p in model.stage_one.parameters())
    images = torch.rand(64, 1, 8, 8) * 2 - 1
    latents = model.encode(images)
    assert torch.equal(latents, first.posterior_mean(images))
    model.fit_latent_statistics(latents)
    normalised = model._flow_inputs(latents)
    assert normalised.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert normalised.std().item() == pytest.approx(1.0, abs=1e-5)
    # An untrained flow predicts v = 0, so its samples are the decoded noise, rescaled.
    noise = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    samples = model.sample(3, generator=torch.Generator().manual_seed(0), steps=3)
    expected = first.decode(noise * model.latent_std + model.latent_mean)
    assert torch.allclose(samples, expected, atol=1e-6)


def test_a_latent_flow_refuses_a_flat_first_stage_and_one_of_another_family(tmp_path):
    flat = spatial_vae_checkpoint(tmp_path, latent="flat")
    with pytest.raises(ConfigError, match="must have a spatial latent"):
        build_model({"_target_": "zoo.models.Flow", "stage_one": flat}, IMAGE_SPEC)
    gan = tmp_path / "gan.ckpt"
    save_tensor(checkpoint_of(tiny_family("gan")), gan)
    with pytest.raises(ConfigError, match="the flow family builds on a vae checkpoint, got a gan"):
        build_model({"_target_": "zoo.models.Flow", "stage_one": str(gan)}, IMAGE_SPEC)


def test_a_first_stage_of_other_images_is_refused(tmp_path):
    path = spatial_vae_checkpoint(tmp_path)
    other = DataSpec(modality="image", shape=(1, 16, 16), num_levels=17, num_classes=10)
    with pytest.raises(ConfigError, match="trained on images of shape"):
        build_model({"_target_": "zoo.models.Flow", "stage_one": path}, other.to_dict())


def test_a_latent_checkpoint_is_plain_data_and_holds_the_latent_statistics(tmp_path):
    model = build_model(
        {"_target_": "zoo.models.Flow", "stage_one": spatial_vae_checkpoint(tmp_path), **DIT},
        IMAGE_SPEC,
    )
    model.fit_latent_statistics(torch.randn(32, 2, 4, 4) * 3 + 1)
    save_tensor(checkpoint_of(model), tmp_path / "flow.ckpt")
    checkpoint = torch.load(tmp_path / "flow.ckpt", weights_only=True)
    assert checkpoint[keys.STATE_DICT]["latent_std"].item() == pytest.approx(3, rel=0.2)
    rebuilt = model_from_checkpoint(checkpoint)
    assert rebuilt.latent_std == model.latent_std and rebuilt.latent_mean == model.latent_mean
    generator = torch.Generator().manual_seed(0)
    again = torch.Generator().manual_seed(0)
    assert torch.equal(rebuilt.sample(2, generator=generator), model.sample(2, generator=again))


# train.py and sample.py ------------------------------------------------------------------------

RUN = ["debug=smoke", "trainer.accelerator=cpu", "evaluation.enabled=false", "data.batch_size=32"]
# The digits presets' pipelines (data, EMA, optimizer, schedule, callbacks, checkpoints) with
# smaller networks and 2-call sample grids: the presets' own sizes are built by test_configs.
SMALL = {
    "vae_spatial_digits": ["model.channels=[8]", "model.iw_samples=0"],
    "flow_digits": ["model.base_channels=8", "model.sampler_steps=2"],
    "dit_digits": ["model.hidden_size=32", "model.depth=1", "model.sampler_steps=2"],
    "latent_flow_digits": ["model.hidden_size=32", "model.depth=1", "model.sampler_steps=2"],
}


@pytest.fixture(scope="module")
def latent_runs(tmp_path_factory):
    """Return the run folders of a one-batch first stage and a latent flow over it (digits),
    both trained by train() in this process as train.py would."""
    root = tmp_path_factory.mktemp("latent")
    train_in_process(
        root / "vae", "experiment=vae_spatial_digits", *SMALL["vae_spatial_digits"], *RUN
    )
    first = f"model.stage_one={root / 'vae' / 'checkpoints' / 'last.ckpt'}"
    small = SMALL["latent_flow_digits"]
    train_in_process(root / "flow", "experiment=latent_flow_digits", first, *small, *RUN)
    return root


@pytest.mark.parametrize("experiment", ["flow_digits", "dit_digits"])
def test_the_pixel_presets_train_one_batch_and_write_a_checkpoint(tmp_path, experiment):
    train_in_process(tmp_path, f"experiment={experiment}", *SMALL[experiment], *RUN)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["family"] == "flow" and results["global_step"] == 1
    assert math.isfinite(results["test"]["test/loss"])
    model = model_from_checkpoint(load_checkpoint(tmp_path / "checkpoints" / "last.ckpt"))
    assert not model.two_stage
    assert model.hparams.backbone == {"flow_digits": "unet", "dit_digits": "dit"}[experiment]


def test_the_latent_preset_trains_on_latents_measured_once_and_stored(latent_runs):
    checkpoint = load_checkpoint(latent_runs / "flow" / "checkpoints" / "last.ckpt")
    model = model_from_checkpoint(checkpoint)
    assert model.two_stage and model.hparams.backbone == "dit"
    datamodule = DigitsDataModule()
    datamodule.setup("fit")
    images = torch.stack([image for image, _ in datamodule.train_dataset])
    latents = model.encode(images)
    assert model.latent_std.item() == pytest.approx(latents.std().item(), rel=1e-4)
    assert model.latent_mean.item() == pytest.approx(latents.mean().item(), abs=1e-4)
    first = model_from_checkpoint(
        load_checkpoint(latent_runs / "vae" / "checkpoints" / "last.ckpt")
    )
    for name, value in first.state_dict().items():  # the first stage, frozen through training
        assert torch.equal(model.state_dict()[f"stage_one.{name}"], value)


def test_sample_py_draws_the_same_images_from_a_two_stage_checkpoint_in_a_fresh_process(
    latent_runs, tmp_path
):
    path = latent_runs / "flow" / "checkpoints" / "last.ckpt"
    first = latent_runs / "vae" / "checkpoints" / "last.ckpt"
    first.rename(tmp_path / "away.ckpt")  # the flow's checkpoint alone must suffice
    try:
        process = run_script(
            "sample.py",
            f"ckpt_path={path}",
            "num_samples=6",
            "seed=3",
            "sampler=midpoint",
            "steps=5",
            "labels=[2,7]",
            "guidance=2.0",
            f"output_dir={tmp_path}",
        )
    finally:
        (tmp_path / "away.ckpt").rename(first)
    assert "network_calls" in process.stdout
    drawn = torch.load(tmp_path / "samples.pt", weights_only=True)  # a fresh process drew them
    model = model_from_checkpoint(load_checkpoint(path))
    here, _ = draw_samples(
        model, 6, seed=3, sampler="midpoint", steps=5, labels=[2, 7], guidance=2.0
    )
    assert drawn.shape == (6, 1, 8, 8) and torch.allclose(drawn, here, atol=1e-5)


def sample_in_process(ckpt: Path, tmp_path: Path, *overrides: str) -> dict:
    """Return what sample.py's sample(cfg) returns for ``ckpt`` with ``overrides``."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "sample", overrides=[f"ckpt_path={ckpt}", f"output_dir={tmp_path}", *overrides]
        )
    return sample_runner.sample(cfg)


@pytest.mark.parametrize("sampler, steps", [("euler", 3), ("heun", 7), ("midpoint", 10)])
def test_sample_py_reports_the_network_calls_it_made_per_batch(
    latent_runs, tmp_path, monkeypatch, sampler, steps
):
    counted = []

    def counting(*args, **kwargs):  # the model sample.py rebuilds, its network watched
        model = model_from_checkpoint(*args, **kwargs)
        forward = model.network.forward
        model.network.forward = lambda *inputs: counted.append(len(inputs[0])) or forward(*inputs)
        return model

    monkeypatch.setattr(sample_runner, "model_from_checkpoint", counting)
    path = latent_runs / "flow" / "checkpoints" / "last.ckpt"
    result = sample_in_process(
        path, tmp_path, "num_samples=6", "batch_size=4", f"sampler={sampler}", f"steps={steps}"
    )
    assert counted == [4] * steps + [2] * steps  # two batches, steps calls each
    assert result["network_calls"] == steps and result["num_samples"] == 6
    assert torch.load(tmp_path / "samples.pt", weights_only=True).shape == (6, 1, 8, 8)


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps=0", "steps must be a positive integer, got 0"),
        ("sampler=unipc", "sampler must be one of euler, heun, midpoint, got 'unipc'"),
        ("labels=11", "labels must lie in the classes 0 … 9, got [11]"),
        ("eta=0.5", "eta= is not an option of the flow family"),
    ],
)
def test_sample_py_refuses_what_the_flow_cannot_do_in_one_line(
    latent_runs, tmp_path, override, message
):
    path = latent_runs / "flow" / "checkpoints" / "last.ckpt"
    with pytest.raises(ZooError) as raised:
        sample_in_process(path, tmp_path, "num_samples=2", override)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "samples.pt").exists()
