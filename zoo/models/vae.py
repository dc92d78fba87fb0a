"""VAE: a convolutional variational autoencoder with a discrete image likelihood.

Kingma & Welling (2014); β-VAE (Higgins et al., 2017); the importance-weighted
bound of Burda et al. (2016). The decoder's likelihood is over the data's own
discrete levels (a discretized logistic, as in PixelCNN++, or a categorical), so
the negative ELBO is a true upper bound on the negative log-likelihood of the
discrete images, reported in bits/dim.

The latent is a vector (``latent: flat``, the default) or a feature map of
``latent_channels`` at the encoder's last resolution (``latent: spatial``, e.g. 28×28 →
4×7×7): the KL-regularised autoencoder that latent diffusion (Rombach et al., 2022) uses as
its first stage, here with the same discrete likelihood and bound. Its posterior mean
(``posterior_mean``) is what a second stage models, and ``decode`` maps latents back to images.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.metrics import bits_per_dim
from zoo.models.base import GenerativeModule, check_halvings, check_sizes
from zoo.nn.distributions import (
    DECODER_LIKELIHOODS,
    decoder_log_likelihood,
    decoder_mean,
    decoder_outputs_per_value,
    gaussian_kl_to_standard_normal,
    gaussian_log_prob,
)
from zoo.nn.schedules import COSINE_OVER_THE_RUN

LATENTS = ("flat", "spatial")

# Networks


class Encoder(nn.Module):
    """Maps images (B, C, H, W) to the mean and log-variance of q(z|x), each (B, D): D is
    latent_dim, or latent_channels·h·w for a spatial latent (flattened channels first)."""

    def __init__(
        self,
        in_channels: int,
        channels: list[int],
        final_hw: tuple[int, int],
        latent_dim: int,
        latent_channels: int | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1), nn.SiLU()]
        previous = channels[0]
        for width in channels:
            layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1), nn.SiLU()]  # halves H, W
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        self.spatial = latent_channels is not None
        if self.spatial:
            self.to_posterior = nn.Conv2d(previous, 2 * latent_channels, 3, padding=1)
        else:
            self.to_posterior = nn.Linear(previous * final_hw[0] * final_hw[1], 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)  # (B, C', h, w)
        if self.spatial:
            mean, log_var = self.to_posterior(h).chunk(2, dim=1)  # (B, c, h, w) each
            return mean.flatten(1), log_var.flatten(1)  # (B, c·h·w) each
        mean, log_var = self.to_posterior(h.flatten(1)).chunk(2, dim=-1)  # (B, latent_dim) each
        return mean, log_var


class Decoder(nn.Module):
    """Maps latents (B, D), flattened as the Encoder gives them, to likelihood parameters
    (B, out_channels, H, W)."""

    def __init__(
        self,
        latent_dim: int,
        channels: list[int],
        final_hw: tuple[int, int],
        out_channels: int,
        latent_channels: int | None = None,
    ):
        super().__init__()
        self.final_shape = (channels[-1], *final_hw)
        self.latent_shape = (latent_channels, *final_hw) if latent_channels else None
        if self.latent_shape:
            self.from_latent = nn.Conv2d(latent_channels, channels[-1], 3, padding=1)
        else:
            self.from_latent = nn.Linear(latent_dim, channels[-1] * final_hw[0] * final_hw[1])
        layers: list[nn.Module] = [nn.SiLU()]
        widths = list(reversed(channels))
        for width, next_width in zip(widths, widths[1:] + [channels[0]], strict=True):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU()]
            layers += [nn.ConvTranspose2d(width, next_width, 4, stride=2, padding=1), nn.SiLU()]
        layers.append(nn.Conv2d(channels[0], out_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.latent_shape:
            h = self.from_latent(z.view(-1, *self.latent_shape))  # (B, C', h, w)
        else:
            h = self.from_latent(z).view(-1, *self.final_shape)  # (B, C', h, w)
        return self.layers(h)  # (B, out_channels, H, W)


# The LightningModule


class VAE(GenerativeModule):
    """A β-VAE whose negative ELBO on discrete images is reported in bits/dim."""

    family = "vae"
    compiled_networks = ("encoder", "decoder")
    logged_metrics = ("loss", "bpd", "reconstruction_nats", "kl_nats")

    def __init__(
        self,
        spec: dict[str, Any],
        latent_dim: int = 16,
        channels: list[int] | tuple[int, ...] = (32, 64),
        latent: str = "flat",
        latent_channels: int = 4,
        likelihood: str = "discretized_logistic",
        beta: float = 1.0,
        iw_samples: int = 64,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = COSINE_OVER_THE_RUN,
        scheduler_interval: str = "epoch",
    ):
        optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-3}
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        check_sizes(latent_dim=latent_dim, channels=list(channels), latent_channels=latent_channels)
        if latent not in LATENTS:
            raise ConfigError(f"model.latent must be flat or spatial, got {latent!r}")
        if iw_samples < 0 or not beta > 0:
            raise ConfigError(
                f"model.iw_samples must be >= 0 and model.beta > 0, got {iw_samples} and {beta}"
            )
        if likelihood not in DECODER_LIKELIHOODS:
            raise ConfigError(
                f"likelihood must be 'discretized_logistic' or 'categorical', got {likelihood!r}"
            )
        channels = list(channels)
        c, h, w = self.spec.shape
        factor = check_halvings("VAE", len(channels), self.spec.shape)
        self.num_levels = self.spec.num_levels
        self.num_dims = c * h * w
        outputs_per_value = decoder_outputs_per_value(likelihood, self.num_levels)
        final_hw = (h // factor, w // factor)
        spatial = latent_channels if latent == "spatial" else None
        # What a latent looks like: (latent_dim,), or (latent_channels, h, w) when spatial.
        self.latent_shape = (latent_channels, *final_hw) if spatial else (latent_dim,)
        self.latent_dim = math.prod(self.latent_shape)  # values per latent
        self.encoder = Encoder(c, channels, final_hw, latent_dim, spatial)
        self.decoder = Decoder(latent_dim, channels, final_hw, c * outputs_per_value, spatial)

    # Likelihood of x under the decoder's output

    def log_likelihood(self, x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """Return log p(x|z) summed over all values of each image: (B,)."""
        return decoder_log_likelihood(x, decoded, self.hparams.likelihood, self.num_levels)

    def decoded_mean(self, decoded: torch.Tensor) -> torch.Tensor:
        """Return the mean image in [-1, 1] of the decoder's distribution."""
        return decoder_mean(decoded, self.hparams.likelihood, self.num_levels)

    # Objective

    def negative_elbo(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the per-image reconstruction NLL and KL (nats), each (B,)."""
        mean, log_var = self.encoder(x)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()  # reparameterisation
        reconstruction = -self.log_likelihood(x, self.decoder(z))
        kl = gaussian_kl_to_standard_normal(mean, log_var)
        return {"reconstruction": reconstruction, "kl": kl}

    @torch.no_grad()
    def importance_weighted_nll(self, x: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Return the importance-weighted estimate of -log p(x) in nats, (B,).

        -log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x) with z_k ~ q(z|x) (Burda et al., eq. 5);
        it tightens towards -log p(x) as K grows and equals the ELBO's bound at K=1.
        """
        mean, log_var = self.encoder(x)
        log_weights = []
        for _ in range(num_samples):
            z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
            log_prior = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
            log_weights.append(
                self.log_likelihood(x, self.decoder(z))
                + log_prior
                - gaussian_log_prob(z, mean, log_var)
            )
        log_weights = torch.stack(log_weights)  # (K, B)
        return -(torch.logsumexp(log_weights, dim=0) - math.log(num_samples))

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, _ = batch
        terms = self.negative_elbo(x)
        reconstruction, kl = terms["reconstruction"].mean(), terms["kl"].mean()
        loss = bits_per_dim(reconstruction + self.hparams.beta * kl, self.num_dims)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(
            f"{stage}/bpd",
            bits_per_dim(reconstruction + kl, self.num_dims),
            on_step=on_step,
            on_epoch=True,
        )
        self.log(f"{stage}/reconstruction_nats", reconstruction, on_step=False, on_epoch=True)
        self.log(f"{stage}/kl_nats", kl, on_step=False, on_epoch=True)
        return loss

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")
        if self.hparams.iw_samples > 0:
            nll = self.importance_weighted_nll(batch[0], self.hparams.iw_samples)
            self.log("test/nll_iw_bpd", bits_per_dim(nll.mean(), self.num_dims))

    # The shared sampling call

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return decoder means (N, C, H, W) in [-1, 1] of latents drawn from the prior."""
        z = torch.randn(num_samples, self.latent_dim, generator=generator, device=self.device)
        return self.decoded_mean(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Return the decoder mean of each image's posterior mean, (B, C, H, W) in [-1, 1]."""
        return self.decode(self.posterior_mean(x))

    # What a second stage (latent diffusion or flow) uses

    @torch.no_grad()
    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Return the mean of q(z|x) of images (B, C, H, W): latents (B, *latent_shape)."""
        mean, _ = self.encoder(x)
        return mean.view(-1, *self.latent_shape)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Return the decoder mean (B, C, H, W) in [-1, 1] of latents (B, *latent_shape)."""
        return self.decoded_mean(self.decoder(z.flatten(1)))
