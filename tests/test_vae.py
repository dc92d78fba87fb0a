"""The VAE: its likelihood is a proper distribution, its bounds match closed forms, it trains."""

import math

import pytest
import torch

from zoo.data.spec import DataSpec
from zoo.models import VAE
from zoo.nn.distributions import (
    discretized_logistic_log_prob,
    gaussian_kl_to_standard_normal,
    levels_to_index,
)

DIGITS_SPEC = DataSpec(modality="image", shape=(1, 8, 8), num_levels=17, num_classes=10).to_dict()


def level_grid(num_levels: int) -> torch.Tensor:
    return torch.linspace(-1, 1, num_levels)


@pytest.mark.parametrize("num_levels", [2, 17, 256])
@pytest.mark.parametrize("mean,log_scale", [(0.0, -1.0), (0.93, -4.0), (-1.2, 0.5), (0.1, -7.0)])
def test_discretized_logistic_sums_to_one_over_all_levels(num_levels, mean, log_scale):
    x = level_grid(num_levels)
    log_prob = discretized_logistic_log_prob(
        x, torch.full_like(x, mean), torch.full_like(x, log_scale), num_levels
    )
    assert torch.exp(log_prob.double()).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_discretized_logistic_bin_mass_matches_the_logistic_cdf():
    num_levels, mean, scale = 17, 0.2, 0.3
    x = level_grid(num_levels)[8]  # the level 0.0, an interior bin
    half_bin = 1 / (num_levels - 1)
    cdf = lambda v: 1 / (1 + math.exp(-(v - mean) / scale))  # noqa: E731
    expected = math.log(cdf(float(x) + half_bin) - cdf(float(x) - half_bin))
    log_prob = discretized_logistic_log_prob(
        x.view(1), torch.tensor([mean]), torch.tensor([math.log(scale)]), num_levels
    )
    assert log_prob.item() == pytest.approx(expected, rel=1e-5)


def test_levels_to_index_inverts_the_level_grid():
    assert levels_to_index(level_grid(17), 17).tolist() == list(range(17))


def test_kl_to_standard_normal_matches_closed_form():
    mean, log_var = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.2, -0.3]])
    expected = sum(0.5 * (m**2 + math.exp(lv) - 1 - lv) for m, lv in [(0.5, 0.2), (-1.0, -0.3)])
    assert gaussian_kl_to_standard_normal(mean, log_var).item() == pytest.approx(expected, rel=1e-6)
    assert gaussian_kl_to_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0


def uniform_vae(likelihood: str, **options) -> VAE:
    """Return a VAE whose posterior is the prior and whose decoder is uniform over the levels."""
    vae = VAE(DIGITS_SPEC, likelihood=likelihood, **options)
    with torch.no_grad():
        for layer in (vae.encoder.to_posterior, vae.decoder.layers[-1]):
            layer.weight.zero_()
            layer.bias.zero_()
    return vae


@pytest.mark.parametrize("latent", ["flat", "spatial"])
def test_vae_bits_per_dim_of_a_uniform_decoder_is_log2_of_the_levels(latent):
    # q(z|x) = N(0, I) = p(z) makes the KL zero; uniform logits give every one of
    # the 17 levels probability 1/17, so -ELBO = D·ln 17 and bits/dim = log2 17.
    vae = uniform_vae("categorical", latent=latent)
    x = levels_to_index(torch.rand(5, 1, 8, 8) * 2 - 1, 17).float() / 16 * 2 - 1
    terms = vae.negative_elbo(x)
    bpd = (terms["reconstruction"] + terms["kl"]) / (64 * math.log(2))
    assert torch.allclose(bpd, torch.full((5,), math.log2(17)), atol=1e-5)
    # The importance-weighted estimate is exact here: every weight is the same.
    iw_bpd = vae.importance_weighted_nll(x, num_samples=8) / (64 * math.log(2))
    assert torch.allclose(iw_bpd, torch.full((5,), math.log2(17)), atol=1e-5)


def test_vae_importance_weighted_bound_is_tighter_than_the_elbo():
    torch.manual_seed(0)
    vae = VAE(DIGITS_SPEC)
    x = torch.randint(0, 17, (16, 1, 8, 8)).float() / 16 * 2 - 1
    with torch.no_grad():
        elbo_nll = torch.stack([sum(vae.negative_elbo(x).values()) for _ in range(200)]).mean(0)
        iw_nll = vae.importance_weighted_nll(x, num_samples=200)
    assert (iw_nll <= elbo_nll + 1e-3).all()


@pytest.mark.parametrize("likelihood", ["discretized_logistic", "categorical"])
def test_vae_samples_and_reconstructions_are_images_in_range(likelihood):
    vae = VAE(DIGITS_SPEC, likelihood=likelihood).eval()
    samples = vae.sample(6, generator=torch.Generator().manual_seed(1))
    again = vae.sample(6, generator=torch.Generator().manual_seed(1))
    assert samples.shape == (6, 1, 8, 8) and samples.min() >= -1 and samples.max() <= 1
    assert torch.equal(samples, again)
    assert vae.reconstruct(samples).shape == (6, 1, 8, 8)


def test_vae_one_optimizer_step_lowers_the_loss_on_a_batch():
    torch.manual_seed(0)
    vae = VAE(DIGITS_SPEC)
    x = torch.randint(0, 17, (32, 1, 8, 8)).float() / 16 * 2 - 1
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        torch.manual_seed(1)  # same noise each step, so the change is the update's
        loss = sum(t.mean() for t in vae.negative_elbo(x).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0


def test_a_spatial_vae_has_a_map_of_latent_channels_at_the_last_resolution():
    spec = DataSpec(modality="image", shape=(1, 28, 28), num_levels=256).to_dict()
    vae = VAE(spec, latent="spatial", latent_channels=4, channels=[32, 64]).eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert vae.latent_shape == (4, 7, 7) and vae.latent_dim == 196
    mean, log_var = vae.encoder(x)  # flattened channels first, as the KL and bounds sum them
    assert mean.shape == log_var.shape == (3, 196)
    assert torch.equal(vae.posterior_mean(x), mean.view(3, 4, 7, 7))
    assert vae.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, 1, 28, 28)
    flat = VAE(spec, channels=[32, 64])  # the default is unchanged: a vector of latent_dim
    assert flat.latent_shape == (16,) and isinstance(flat.encoder.to_posterior, torch.nn.Linear)
    with pytest.raises(ValueError, match="model.latent must be flat or spatial"):
        VAE(spec, latent="grid")


def test_vae_rejects_an_image_size_its_stages_cannot_halve():
    spec = DataSpec(modality="image", shape=(1, 28, 28), num_levels=256).to_dict()
    with pytest.raises(ValueError, match="multiples of 8"):
        VAE(spec, channels=[16, 32, 64])
