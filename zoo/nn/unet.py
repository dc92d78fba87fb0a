"""The UNet of DDPM (Ho et al., 2020) as refined by improved DDPM: residual blocks with group
norm, a sinusoidal time embedding, self-attention at chosen resolutions, optional classes.

Sized from the image shape: ``channel_multipliers`` sets one resolution level per
entry (the image is halved between levels), so 8×8 digits and 64×64 images use
the same code with different configs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.attention import scaled_dot_product_attention


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Return sinusoidal embeddings (B, dim) of integer or real timesteps (B,) (Vaswani et al.)."""
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, device=timesteps.device) / half
    )
    angles = timesteps.float()[:, None] * frequencies[None]  # (B, half)
    embedding = torch.cat([angles.cos(), angles.sin()], dim=-1)
    return F.pad(embedding, (0, dim % 2))


def group_norm(channels: int) -> nn.GroupNorm:
    """Return a GroupNorm with up to 32 groups of at least 4 channels each."""
    groups = max(g for g in range(1, 33) if channels % g == 0 and (channels // g >= 4 or g == 1))
    return nn.GroupNorm(groups, channels)


class ResidualBlock(nn.Module):
    """GroupNorm → SiLU → conv, twice, with a skip; the time (and class) embedding scales and
    shifts the second normalised activation (improved DDPM's scale-shift norm), which a
    normalisation cannot undo the way it undoes an added bias."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, dropout: float):
        super().__init__()
        self.norm_1 = group_norm(in_channels)
        self.conv_1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.embedding = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm_2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv_2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv_2.bias)
        self.skip = (
            nn.Conv2d(in_channels, out_channels, 1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv_1(F.silu(self.norm_1(x)))  # (B, C_out, H, W)
        scale, shift = self.embedding(F.silu(embedding))[:, :, None, None].chunk(2, dim=1)
        h = self.norm_2(h) * (1 + scale) + shift
        h = self.conv_2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H·W positions of a feature map, with a skip."""

    def __init__(self, channels: int, num_heads: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} must divide by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).view(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)  # (B, nh, HW, hs) each
        attended = scaled_dot_product_attention(q, k, v)  # (B, nh, HW, hs)
        return x + self.out(attended.transpose(-1, -2).reshape(b, c, h, w))


class UNet(nn.Module):
    """Predicts the diffusion target (ε, x₀ or v) of noisy images (B, C, H, W) at timesteps (B,)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        base_channels: int = 64,
        channel_multipliers: tuple[int, ...] = (1, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (4,),
        num_heads: int = 4,
        dropout: float = 0.1,
        num_classes: int = 0,
    ):
        super().__init__()
        in_channels, height, width = image_shape
        if min(height, width) % 2 ** (len(channel_multipliers) - 1):
            raise ValueError(
                f"{len(channel_multipliers)} resolution levels halve the image "
                f"{len(channel_multipliers) - 1} times: {height}×{width} does not divide"
            )
        embedding_dim = 4 * base_channels
        self.base_channels = base_channels
        self.time_mlp = nn.Sequential(
            nn.Linear(base_channels, embedding_dim),
            nn.SiLU(),
            nn.Linear(embedding_dim, embedding_dim),
        )
        # Class num_classes is the "no label" token of classifier-free guidance.
        self.class_embedding = nn.Embedding(num_classes + 1, embedding_dim) if num_classes else None
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        channels, resolution = base_channels, min(height, width)
        for level, multiplier in enumerate(channel_multipliers):
            for _ in range(num_res_blocks):
                block = nn.ModuleList(
                    [ResidualBlock(channels, base_channels * multiplier, embedding_dim, dropout)]
                )
                channels = base_channels * multiplier
                if resolution in attention_resolutions:
                    block.append(SelfAttention(channels, num_heads))
                self.down.append(block)
                skip_channels.append(channels)
            if level < len(channel_multipliers) - 1:
                self.down.append(
                    nn.ModuleList([nn.Conv2d(channels, channels, 3, stride=2, padding=1)])
                )
                skip_channels.append(channels)
                resolution //= 2

        self.middle = nn.ModuleList(
            [
                ResidualBlock(channels, channels, embedding_dim, dropout),
                SelfAttention(channels, num_heads),
                ResidualBlock(channels, channels, embedding_dim, dropout),
            ]
        )

        self.up = nn.ModuleList()
        for level, multiplier in reversed(list(enumerate(channel_multipliers))):
            for index in range(num_res_blocks + 1):
                skip = skip_channels.pop()
                block = nn.ModuleList(
                    [
                        ResidualBlock(
                            channels + skip, base_channels * multiplier, embedding_dim, dropout
                        )
                    ]
                )
                channels = base_channels * multiplier
                if resolution in attention_resolutions:
                    block.append(SelfAttention(channels, num_heads))
                if level > 0 and index == num_res_blocks:
                    block.append(nn.Upsample(scale_factor=2, mode="nearest"))
                    block.append(nn.Conv2d(channels, channels, 3, padding=1))
                    resolution *= 2
                self.up.append(block)

        self.head = nn.Sequential(
            group_norm(channels), nn.SiLU(), nn.Conv2d(channels, in_channels, 3, padding=1)
        )
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None):
        """Return the prediction (B, C, H, W); ``labels`` (B,) use num_classes for "no label"."""
        embedding = self.time_mlp(timestep_embedding(timesteps, self.base_channels))  # (B, E)
        if self.class_embedding is not None:
            if labels is None:
                raise ValueError("this UNet is class-conditional: pass labels")
            embedding = embedding + self.class_embedding(labels)
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            for layer in block:
                h = layer(h, embedding) if isinstance(layer, ResidualBlock) else layer(h)
            skips.append(h)
        for layer in self.middle:
            h = layer(h, embedding) if isinstance(layer, ResidualBlock) else layer(h)
        for block in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            for layer in block:
                h = layer(h, embedding) if isinstance(layer, ResidualBlock) else layer(h)
        return self.head(h)
