"""VQ-VAE: a convolutional autoencoder whose latent is a grid of discrete codes.

van den Oord, Vinyals & Kavukcuoglu (2017), "Neural Discrete Representation Learning":
the encoder maps an image to a grid of vectors z_e (B, D, h, w); each is replaced by the
nearest of K codebook vectors, and the decoder maps the quantised grid z_q back to a
distribution over the image. Quantising has no gradient, so the decoder's gradient passes
to the encoder unchanged (the straight-through estimator, eq. 3), and a commitment term
β‖z_e − sg[z_q]‖² keeps the encoder near its codes. The codebook follows the encoder by
exponential moving averages of the vectors assigned to each code (appendix A.1; Razavi
et al. 2019, VQ-VAE-2, eqs. 4–6) rather than by a gradient, and codes no vector chose
for a number of steps restart at encoder outputs of the batch (Dhariwal et al. 2020,
Jukebox, sec. 3.2), so the whole codebook stays in use.

FSQ (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple") is the other
quantiser: each of d channels is bounded and rounded to one of L_i levels, the codes are
the product grid of those levels (Π L_i of them), and there is no codebook to learn, no
commitment term and no collapse.

The decoder's likelihood is over the data's discrete levels (a discretized logistic, as
in PixelCNN++, or a categorical), so the reconstruction error is a code length in
bits/dim: −log p(x | z_q(x)), what the image costs once its codes are known. It is not a
likelihood of the data: the two-stage model's bound adds what the prior pays for the
codes (zoo/models/vq_prior.py). A VQ-VAE alone does not generate; a prior over its codes
does.

Shapes: B batch, C image channels, H×W image, D code vector size (d for FSQ), h×w code
grid, N = B·h·w vectors, K codes.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError, ZooError
from zoo.metrics import bits_per_dim
from zoo.models.base import GenerativeModule, check_halvings, check_sizes
from zoo.nn.distributions import (
    DECODER_LIKELIHOODS,
    decoder_log_likelihood,
    decoder_mean,
    decoder_outputs_per_value,
)
from zoo.nn.schedules import COSINE_OVER_THE_RUN

QUANTIZERS = ("vq", "fsq")

# Vector quantisation: weight-free math ------------------------------------------------------


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Return the index of the codebook vector (K, D) nearest to each vector of z (N, D), (N,)."""
    distances = (
        z.pow(2).sum(dim=1, keepdim=True) - 2 * z @ codebook.t() + codebook.pow(2).sum(dim=1)
    )  # (N, K): ‖z‖² − 2 z·e + ‖e‖²
    return distances.argmin(dim=1)


def straight_through(z: torch.Tensor, quantised: torch.Tensor) -> torch.Tensor:
    """Return ``quantised`` in the forward pass with the gradient of ``z`` (identity Jacobian)."""
    return z + (quantised - z).detach()


def code_statistics(
    z: torch.Tensor, indices: torch.Tensor, codebook_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return how many vectors of z (N, D) each code was assigned, (K,), and their sum, (K, D)."""
    counts = torch.bincount(indices, minlength=codebook_size).to(z.dtype)  # (K,)
    sums = z.new_zeros(codebook_size, z.size(1)).index_add_(0, indices, z)  # (K, D)
    return counts, sums


def ema_codebook_update(
    cluster_size: torch.Tensor,
    embedding_sum: torch.Tensor,
    counts: torch.Tensor,
    sums: torch.Tensor,
    decay: float,
    epsilon: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return the updated moving averages N (K,) and m (K, D) and the codebook m / N, (K, D).

    van den Oord et al. (2017), appendix A.1: N_i ← γ N_i + (1 − γ) n_i and
    m_i ← γ m_i + (1 − γ) Σ_j z_ij, where n_i vectors z_ij were assigned to code i in the
    batch (``counts``, ``sums``); e_i = m_i / N_i. N is Laplace-smoothed by ``epsilon``
    before the division (as in Sonnet's VectorQuantizerEMA), so no code divides by zero.
    """
    cluster_size = decay * cluster_size + (1 - decay) * counts
    embedding_sum = decay * embedding_sum + (1 - decay) * sums
    total = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (total + len(cluster_size) * epsilon) * total
    return cluster_size, embedding_sum, embedding_sum / smoothed[:, None]


def _all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sums each tensor over the processes in place (a no-op in a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        for tensor in tensors:
            torch.distributed.all_reduce(tensor)


class VectorQuantizer(nn.Module):
    """Replaces each vector by its nearest codebook vector; the codebook learns by EMA.

    The codebook and its moving averages are buffers: they are in every checkpoint and
    come back on resume, and only training mode changes them. ``steps_unused`` counts the
    training steps since each code was last chosen; at ``restart_after`` the code restarts
    at a random encoder output of the batch. It starts at ``restart_after`` for every code,
    so the first training batch initialises the codebook from the data.
    """

    def __init__(
        self, codebook_size: int, dim: int, decay: float, restart_after: int, epsilon: float = 1e-5
    ):
        super().__init__()
        self.codebook_size = codebook_size
        self.decay = decay
        self.epsilon = epsilon
        self.restart_after = restart_after
        codebook = torch.randn(codebook_size, dim)
        self.register_buffer("codebook", codebook)  # (K, D)
        # As if each code had been chosen once where it starts: an unused code stays put.
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # N (K,)
        self.register_buffer("embedding_sum", codebook.clone())  # m (K, D)
        self.register_buffer(
            "steps_unused", torch.full((codebook_size,), restart_after, dtype=torch.long)
        )

    def assign(self, z_e: torch.Tensor) -> torch.Tensor:
        """Return the code of each vector of z_e (B, D, h, w), (B, h, w) as long."""
        b, d, h, w = z_e.shape
        z = z_e.float().permute(0, 2, 3, 1).reshape(-1, d)  # (N, D)
        return nearest_code(z, self.codebook).view(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Return the codebook vectors of codes (B, h, w) as a grid (B, D, h, w)."""
        return self.codebook[indices].permute(0, 3, 1, 2)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the quantised grid (B, D, h, w) with the straight-through gradient, the codes
        (B, h, w) and the commitment loss ‖z_e − sg[z_q]‖² (mean over elements).

        In training mode the codebook then moves (EMA) and unused codes restart."""
        z_e = z_e.float()  # distances and moving averages in float32 under mixed precision
        indices = self.assign(z_e)  # (B, h, w)
        z_q = self.lookup(indices)  # (B, D, h, w), from the codebook the codes were chosen in
        commitment = F.mse_loss(z_e, z_q)
        if self.training:
            d = z_e.size(1)
            self.update(z_e.detach().permute(0, 2, 3, 1).reshape(-1, d), indices.flatten())
        return straight_through(z_e, z_q), indices, commitment

    @torch.no_grad()
    def update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """Moves the codebook towards the vectors z (N, D) assigned to it (``indices`` (N,)),
        then restarts the codes unused for ``restart_after`` steps. Every process takes the
        same step: the statistics are summed over processes, restarts come from the first."""
        counts, sums = code_statistics(z, indices, self.codebook_size)
        _all_reduce_sum(counts, sums)
        cluster_size, embedding_sum, codebook = ema_codebook_update(
            self.cluster_size, self.embedding_sum, counts, sums, self.decay, self.epsilon
        )
        self.cluster_size.copy_(cluster_size)
        self.embedding_sum.copy_(embedding_sum)
        self.codebook.copy_(codebook)
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
        if self.restart_after > 0:
            self.restart_unused(z)

    @torch.no_grad()
    def restart_unused(self, z: torch.Tensor) -> None:
        """Moves every code unused for ``restart_after`` steps to a random vector of z (N, D)
        (distinct vectors while the batch has enough), as if chosen once there."""
        dead = self.steps_unused >= self.restart_after  # (K,)
        count = int(dead.sum())
        if count == 0:
            return
        if count <= len(z):
            chosen = z[torch.randperm(len(z), device=z.device)[:count]]  # (count, D)
        else:
            chosen = z[torch.randint(0, len(z), (count,), device=z.device)]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.broadcast(chosen, src=0)
        self.codebook[dead] = chosen
        self.embedding_sum[dead] = chosen
        self.cluster_size[dead] = 1.0
        self.steps_unused[dead] = 0


# Finite scalar quantisation (Mentzer et al. 2023) ------------------------------------------


def round_straight_through(x: torch.Tensor) -> torch.Tensor:
    """Return x rounded to integers, with the gradient of x."""
    return x + (x.round() - x).detach()


class FiniteScalarQuantizer(nn.Module):
    """Rounds each of d channels to its own number of levels; the codes are the level grid.

    Channel i is bounded to (−L_i/2, L_i/2) by a shifted tanh, rounded, and scaled to
    [−1, 1] (Mentzer et al. 2023, appendix A.1; the shift is atanh, the exact inverse,
    where the paper's listing writes tan). An even L_i gives the levels −L_i/2 … L_i/2 − 1,
    so every channel has exactly L_i levels. Code index = Σ_i level_i · Π_{j<i} L_j.
    """

    def __init__(self, levels: list[int]):
        super().__init__()
        levels_tensor = torch.tensor(levels, dtype=torch.long)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]], dtype=torch.long), dim=0)
        # Rebuilt from the hyperparameters, so kept out of the checkpoint.
        self.register_buffer("levels", levels_tensor, persistent=False)  # (d,)
        self.register_buffer("basis", basis, persistent=False)  # (d,)
        self.codebook_size = math.prod(levels)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Return z (..., d) squashed so that rounding gives L_i values in channel i."""
        levels = self.levels.to(z.dtype)
        half = (levels - 1) * (1 - 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0).to(z.dtype)
        return torch.tanh(z + torch.atanh(offset / half)) * half - offset

    def quantise(self, z: torch.Tensor) -> torch.Tensor:
        """Return z (..., d) rounded to its levels, scaled to [−1, 1], with the straight-through
        gradient."""
        return round_straight_through(self.bound(z)) / (self.levels // 2)

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Return the index (...) of quantised codes (..., d) in [−1, 1]."""
        half_width = self.levels // 2
        level = torch.round(codes * half_width + half_width).long()  # 0 … L_i − 1
        return (level * self.basis).sum(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Return the quantised codes (..., d) in [−1, 1] of indices (...): undoes the above."""
        half_width = self.levels // 2
        level = torch.div(indices[..., None], self.basis, rounding_mode="floor") % self.levels
        return (level - half_width) / half_width

    def assign(self, z_e: torch.Tensor) -> torch.Tensor:
        """Return the code of each vector of z_e (B, d, h, w), (B, h, w) as long."""
        return self.codes_to_indices(self.quantise(z_e.float().permute(0, 2, 3, 1)))

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Return the quantised grid (B, d, h, w) of codes (B, h, w)."""
        return self.indices_to_codes(indices).permute(0, 3, 1, 2)

    def forward(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the quantised grid (B, d, h, w) (straight-through), the codes (B, h, w) and a
        zero commitment loss: FSQ has none."""
        codes = self.quantise(z_e.float().permute(0, 2, 3, 1))  # (B, h, w, d)
        indices = self.codes_to_indices(codes.detach())
        return codes.permute(0, 3, 1, 2), indices, z_e.new_zeros(())


# Usage of the codes --------------------------------------------------------------------------


def codebook_usage(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the share of codes used at least once and the perplexity exp(H) of the codes'
    frequencies, from how often each code was chosen, (K,). The perplexity is the number of
    equally used codes with the same entropy: K when all are used alike, 1 after a collapse."""
    probs = counts.float() / counts.sum().clamp(min=1)
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum()
    return (counts > 0).float().mean(), entropy.exp()


# The networks --------------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    """x + conv1×1(ReLU(conv3×3(ReLU(x)))) (van den Oord et al. 2017, sec. 4.1)."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(1, channels // 2)
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """Images (B, C, H, W) → vectors (B, D, H/2^S, W/2^S): S = len(channels) stride-2 4×4
    convolutions, a 3×3 convolution, residual blocks, and a 1×1 projection to D."""

    def __init__(self, in_channels: int, channels: list[int], num_residual_blocks: int, dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1), nn.ReLU()]  # halves
            previous = width
        layers.append(nn.Conv2d(previous, previous, 3, padding=1))
        layers += [ResidualBlock(previous) for _ in range(num_residual_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(previous, dim, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, D, h, w)


class Decoder(nn.Module):
    """Quantised grids (B, D, h, w) → likelihood parameters (B, out_channels, H, W): the
    encoder mirrored, with stride-2 4×4 transposed convolutions."""

    def __init__(self, dim: int, channels: list[int], num_residual_blocks: int, out_channels: int):
        super().__init__()
        widths = list(reversed(channels))
        layers: list[nn.Module] = [nn.Conv2d(dim, widths[0], 3, padding=1)]
        layers += [ResidualBlock(widths[0]) for _ in range(num_residual_blocks)]
        layers.append(nn.ReLU())
        for width, next_width in zip(widths, widths[1:] + [channels[0]], strict=True):
            layers += [nn.ConvTranspose2d(width, next_width, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(channels[0], out_channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.layers(z_q)  # (B, out_channels, H, W)


# The LightningModule -------------------------------------------------------------------------


class VQVAE(GenerativeModule):
    """A VQ-VAE (or FSQ autoencoder) over discrete images: the first stage of a prior over codes.

    ``encode`` turns images into codes (B, h, w), ``decode`` codes into images; the prior
    (the ``vq_prior`` family) trains on the former and samples through the latter.
    """

    family = "vqvae"
    generates = False  # the prior over its codes generates (vq_prior)
    compiled_networks = ("encoder", "decoder")
    logged_metrics = (
        "loss",
        "reconstruction_bpd",
        "mse",
        "commitment",
        "codebook_usage",
        "perplexity",
    )

    def __init__(
        self,
        spec: dict[str, Any],
        channels: list[int] | tuple[int, ...] = (64, 128),
        num_residual_blocks: int = 2,
        quantizer: str = "vq",
        codebook_size: int = 512,
        embedding_dim: int = 64,
        commitment_cost: float = 0.25,
        ema_decay: float = 0.99,
        restart_unused_after: int = 100,
        fsq_levels: list[int] | tuple[int, ...] = (8, 5, 5, 5),
        likelihood: str = "discretized_logistic",
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = COSINE_OVER_THE_RUN,
        scheduler_interval: str = "epoch",
    ):
        optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        channels, fsq_levels = list(channels), list(fsq_levels)
        check_sizes(channels=channels, codebook_size=codebook_size, embedding_dim=embedding_dim)
        if num_residual_blocks < 0 or restart_unused_after < 0:
            raise ConfigError(
                "model.num_residual_blocks and model.restart_unused_after must be >= 0, got "
                f"{num_residual_blocks} and {restart_unused_after}"
            )
        if quantizer not in QUANTIZERS:
            raise ConfigError(f"model.quantizer must be vq or fsq, got {quantizer!r}")
        if quantizer == "fsq":
            check_sizes(fsq_levels=fsq_levels)
            if min(fsq_levels) < 2:
                raise ConfigError(f"model.fsq_levels must all be at least 2, got {fsq_levels}")
        if not 0 <= ema_decay < 1 or not commitment_cost >= 0:
            raise ConfigError(
                f"model.ema_decay must lie in [0, 1) and model.commitment_cost be >= 0, got "
                f"{ema_decay} and {commitment_cost}"
            )
        if likelihood not in DECODER_LIKELIHOODS:
            raise ConfigError(
                f"model.likelihood must be one of {', '.join(DECODER_LIKELIHOODS)}, "
                f"got {likelihood!r}"
            )
        c, h, w = self.spec.shape
        factor = check_halvings("VQ-VAE", len(channels), self.spec.shape)
        self.num_levels = self.spec.num_levels
        self.num_dims = c * h * w
        self.code_shape = (h // factor, w // factor)  # (h, w)
        if quantizer == "vq":
            self.quantizer = VectorQuantizer(
                codebook_size, embedding_dim, ema_decay, restart_unused_after
            )
            dim = embedding_dim
        else:
            self.quantizer = FiniteScalarQuantizer(fsq_levels)
            dim = len(fsq_levels)
        self.codebook_size = self.quantizer.codebook_size  # K
        outputs = c * decoder_outputs_per_value(likelihood, self.num_levels)
        self.encoder = Encoder(c, channels, num_residual_blocks, dim)
        self.decoder = Decoder(dim, channels, num_residual_blocks, outputs)
        self._code_counts: dict[str, torch.Tensor] = {}  # per stage, over the epoch

    # Images ↔ codes

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Return the codes (B, h, w), long, of images (B, C, H, W) in [-1, 1]."""
        return self.quantizer.assign(self.encoder(images))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Return the decoder's mean images (B, C, H, W) in [-1, 1] of codes (B, h, w)."""
        decoded = self.decoder(self.quantizer.lookup(codes))
        return decoder_mean(decoded, self.hparams.likelihood, self.num_levels)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Return the decoded codes of images, (B, C, H, W) in [-1, 1]."""
        return self.decode(self.encode(x))

    # Objective

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, _ = batch  # (B, C, H, W)
        z_e = self.encoder(x)  # (B, D, h, w)
        z_q, codes, commitment = self.quantizer(z_e)  # (B, D, h, w), (B, h, w), ()
        decoded = self.decoder(z_q)  # (B, C·P, H, W)
        nll = -decoder_log_likelihood(x, decoded, self.hparams.likelihood, self.num_levels)
        reconstruction = bits_per_dim(nll.mean(), self.num_dims)  # −log p(x | z_q(x))
        loss = reconstruction + self.hparams.commitment_cost * commitment
        mse = decoder_mean(decoded.detach(), self.hparams.likelihood, self.num_levels) - x
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/reconstruction_bpd", reconstruction, on_step=on_step, on_epoch=True)
        self.log(f"{stage}/mse", mse.pow(2).mean(), on_step=False, on_epoch=True)
        self.log(f"{stage}/commitment", commitment, on_step=False, on_epoch=True)
        self._count_codes(stage, codes)
        return loss

    # Codebook usage over each epoch

    def _count_codes(self, stage: str, codes: torch.Tensor) -> None:
        counts = torch.bincount(codes.flatten(), minlength=self.codebook_size)  # (K,)
        previous = self._code_counts.get(stage)
        self._code_counts[stage] = counts if previous is None else previous + counts

    def _log_usage(self, stage: str) -> None:
        counts = self._code_counts.pop(stage, None)
        if counts is None:
            return
        counts = self.trainer.strategy.reduce(counts, reduce_op="sum")  # over every process
        usage, perplexity = codebook_usage(counts)
        self.log(f"{stage}/codebook_usage", usage)
        self.log(f"{stage}/perplexity", perplexity)

    def on_train_epoch_start(self) -> None:
        self._code_counts.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._code_counts.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._code_counts.pop("test", None)

    def on_train_epoch_end(self) -> None:
        self._log_usage("train")

    def on_validation_epoch_end(self) -> None:
        self._log_usage("val")

    def on_test_epoch_end(self) -> None:
        self._log_usage("test")

    # The shared sampling call

    def sample(self, num_samples: int, *, generator: torch.Generator | None = None):
        raise ZooError(
            "a VQ-VAE encodes and decodes images but does not generate them: train a prior over "
            "its codes, e.g. `python train.py experiment=vq_gpt_mnist5k model.stage_one=<this "
            "checkpoint>`, and sample from that run's checkpoint"
        )
