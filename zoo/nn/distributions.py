"""Gaussians and distributions over the discrete levels of image values, and drawing from them.

Shared by the image families with a likelihood (the VAE's prior and decoder, PixelCNN,
diffusion's variational bound). Images hold values on ``num_levels`` evenly spaced
levels in [-1, 1]; every discrete distribution here sums to one over those levels, so
the negative log-likelihoods it gives are true code lengths, reported in bits/dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOG_SCALE_MIN = -7.0  # keeps the logistic's scale above ~1e-3, far below one level of 8-bit data


# Gaussians (log densities and KL divergences in nats)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Return log N(z; mean, exp(log_var)) summed over the last dimension."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (z - mean).pow(2) / log_var.exp()).sum(dim=-1)


def gaussian_kl(
    mean_1: torch.Tensor, log_var_1: torch.Tensor, mean_2: torch.Tensor, log_var_2: torch.Tensor
) -> torch.Tensor:
    """Return KL(N(mean_1, e^log_var_1) ‖ N(mean_2, e^log_var_2)) elementwise, in nats, in
    float32 at least (bfloat16 inputs under autocast would round small KLs below zero)."""
    dtype = torch.promote_types(mean_1.dtype, torch.float32)
    mean_1, log_var_1, mean_2, log_var_2 = (
        x.to(dtype) for x in (mean_1, log_var_1, mean_2, log_var_2)
    )
    return 0.5 * (
        log_var_2 - log_var_1 + (log_var_1.exp() + (mean_1 - mean_2) ** 2) / log_var_2.exp() - 1
    )


def gaussian_kl_to_standard_normal(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Return KL(N(mean, exp(log_var)) ‖ N(0, I)) summed over the last dimension."""
    zeros = torch.zeros_like(mean)
    return gaussian_kl(mean, log_var, zeros, zeros).sum(dim=-1)


def discretized_gaussian_log_prob(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, num_levels: int
) -> torch.Tensor:
    """Return log P(x) elementwise for x on ``num_levels`` levels in [-1, 1] under a Gaussian
    integrated over each level's bin (the end bins take the tails); DDPM's decoder L₀."""
    half_bin = 1.0 / (num_levels - 1)
    normal = torch.distributions.Normal(mean, log_scale.exp())
    upper = normal.cdf(x + half_bin)
    lower = normal.cdf(x - half_bin)
    mass = torch.where(
        x < -1 + half_bin, upper, torch.where(x > 1 - half_bin, 1 - lower, upper - lower)
    )
    return mass.clamp(min=1e-12).log()


# Discrete levels of image values


def levels_to_index(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Return the level index (0 … num_levels-1) of values x on the [-1, 1] grid."""
    return torch.round((x + 1) / 2 * (num_levels - 1)).long().clamp(0, num_levels - 1)


def index_to_levels(index: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Return the values in [-1, 1] of level indices (0 … num_levels-1): undoes levels_to_index."""
    return index.float() / (num_levels - 1) * 2 - 1


def discretized_logistic_log_prob(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, num_levels: int
) -> torch.Tensor:
    """Return log P(x) elementwise for x on ``num_levels`` levels in [-1, 1].

    Each level owns the bin of half-width 1/(num_levels-1) around it; the two end
    levels also own the tails to ±infinity, so the probabilities of all levels
    sum to one (PixelCNN++, Salimans et al. 2017, eq. 2).
    """
    half_bin = 1.0 / (num_levels - 1)
    centered = x - mean
    inv_scale = torch.exp(-log_scale)
    upper = inv_scale * (centered + half_bin)
    lower = inv_scale * (centered - half_bin)
    log_cdf_upper = F.logsigmoid(upper)  # log P(X < x + h): the bottom level's mass
    log_survival_lower = F.logsigmoid(-lower)  # log P(X > x - h): the top level's mass
    # An inner bin's mass σ(u) - σ(l), computed on the side of the mean where it does
    # not cancel: log σ(u) + log(1 - σ(l)/σ(u)) left of the mean, the mirror image right of it.
    left = centered < 0
    larger = torch.where(left, log_cdf_upper, log_survival_lower)
    smaller = torch.where(left, F.logsigmoid(lower), F.logsigmoid(-upper))
    log_mid = larger + torch.log(-torch.expm1((smaller - larger).clamp(max=-1e-12)))
    # Where even that underflows, the density at the bin's centre times its width is exact enough.
    middle = inv_scale * centered
    log_density_mass = middle - log_scale - 2 * F.softplus(middle) + math.log(2 * half_bin)
    log_mid = torch.where(larger - smaller > 1e-5, log_mid, log_density_mass)
    bottom = x < -1 + half_bin
    top = x > 1 - half_bin
    return torch.where(bottom, log_cdf_upper, torch.where(top, log_survival_lower, log_mid))


def discretized_logistic_mixture_log_prob(
    x: torch.Tensor,
    logit_weights: torch.Tensor,
    means: torch.Tensor,
    log_scales: torch.Tensor,
    num_levels: int,
) -> torch.Tensor:
    """Return log P(x) elementwise under a mixture of K discretized logistics (PixelCNN++).

    ``x`` has shape (...); the mixture's unnormalised log weights, means and log scales
    have shape (..., K), broadcasting against x. Every component sums to one over the
    levels, so the mixture does too.
    """
    log_scales = log_scales.clamp(min=LOG_SCALE_MIN)
    components = discretized_logistic_log_prob(x.unsqueeze(-1), means, log_scales, num_levels)
    return torch.logsumexp(logit_weights.log_softmax(dim=-1) + components, dim=-1)


def discretized_logistic_mixture_level_log_probs(
    logit_weights: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, num_levels: int
) -> torch.Tensor:
    """Return log P(level) of every level, (..., num_levels), of mixtures with params (..., K)."""
    levels = torch.linspace(-1, 1, num_levels, device=means.device, dtype=means.dtype)
    expand = (slice(None),) * (means.dim() - 1) + (None, slice(None))  # (..., 1, K)
    return discretized_logistic_mixture_log_prob(
        levels.view(*([1] * (means.dim() - 1)), num_levels),
        logit_weights[expand],
        means[expand],
        log_scales[expand],
        num_levels,
    )


def inverse_cdf_sample(
    log_probs: torch.Tensor, uniform: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Return the index drawn from each row of ``log_probs`` (..., L) by inverting its CDF at
    ``uniform`` (...), values in [0, 1).

    The distribution is first sharpened (``temperature`` < 1) or flattened (> 1) to
    p(v)^(1/T), renormalised; ``temperature=0`` returns the most likely index. Taking
    the randomness as an argument lets callers draw it all up front, so two ways of
    computing the same distributions give the same samples.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return log_probs.argmax(dim=-1)
    cdf = (log_probs.float() / temperature).softmax(dim=-1).cumsum(dim=-1)
    # The first index whose CDF exceeds u; the clamp guards a last CDF a rounding below 1.
    index = (cdf <= uniform.unsqueeze(-1)).sum(dim=-1)
    return index.clamp(max=log_probs.shape[-1] - 1)


# An image decoder's distribution over the discrete levels (the VAE's and the VQ-VAE's)

DECODER_LIKELIHOODS = ("discretized_logistic", "categorical")


def decoder_outputs_per_value(likelihood: str, num_levels: int) -> int:
    """Return how many decoder outputs parameterise one image value: 2 (a logistic's mean and
    log scale) or ``num_levels`` (a categorical's logits)."""
    return 2 if likelihood == "discretized_logistic" else num_levels


def decoder_log_likelihood(
    x: torch.Tensor, decoded: torch.Tensor, likelihood: str, num_levels: int
) -> torch.Tensor:
    """Return log p(x | decoded) of each image in nats, summed over its values: (B,).

    ``x`` (B, C, H, W) lies on ``num_levels`` levels in [-1, 1]; ``decoded`` is
    (B, C·2, H, W), each channel's mean then log scale halves, for a discretized logistic,
    or (B, C·L, H, W) logits for a categorical over the L levels.
    """
    if likelihood == "discretized_logistic":
        mean, log_scale = decoded.chunk(2, dim=1)  # (B, C, H, W) each
        log_scale = log_scale.clamp(min=LOG_SCALE_MIN)
        log_prob = discretized_logistic_log_prob(x, mean, log_scale, num_levels)
    else:
        b, _, h, w = decoded.shape
        logits = decoded.view(b, -1, num_levels, h, w)  # (B, C, L, H, W)
        index = levels_to_index(x, num_levels).unsqueeze(2)  # (B, C, 1, H, W)
        log_prob = logits.log_softmax(dim=2).gather(2, index).squeeze(2)
    return log_prob.flatten(1).sum(dim=1)


def decoder_mean(decoded: torch.Tensor, likelihood: str, num_levels: int) -> torch.Tensor:
    """Return the mean image (B, C, H, W) in [-1, 1] of a decoder's distribution (as above)."""
    if likelihood == "discretized_logistic":
        return decoded.chunk(2, dim=1)[0].clamp(-1, 1)
    b, _, h, w = decoded.shape
    probs = decoded.view(b, -1, num_levels, h, w).softmax(dim=2)
    levels = torch.linspace(-1, 1, num_levels, device=decoded.device).view(1, 1, -1, 1, 1)
    return (probs * levels).sum(dim=2)
