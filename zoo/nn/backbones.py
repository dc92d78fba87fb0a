"""The denoising networks a family chooses between with ``backbone``: the UNet (DDPM,
improved DDPM) or the DiT (Peebles & Xie, 2023). Both map inputs (B, C, H, W), timesteps (B,)
on the DDPM scale [0, 1000) and optional labels (B,) to a prediction (B, C, H, W)."""

from __future__ import annotations

from torch import nn

from zoo.errors import ConfigError
from zoo.nn.dit import POSITIONS, DiT
from zoo.nn.unet import UNet

BACKBONES = ("unet", "dit")
# The hyperparameters a family passes on to denoising_network (a family holds them all, so
# that one config can switch backbone with model.backbone=…).
NETWORK_OPTIONS = (
    "base_channels",
    "channel_multipliers",
    "num_res_blocks",
    "attention_resolutions",
    "patch_size",
    "hidden_size",
    "depth",
    "mlp_ratio",
    "positions",
    "num_heads",
    "dropout",
)


def denoising_network(
    backbone: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    *,
    base_channels: int,
    channel_multipliers: tuple[int, ...],
    num_res_blocks: int,
    attention_resolutions: tuple[int, ...],
    patch_size: int,
    hidden_size: int,
    depth: int,
    mlp_ratio: float,
    positions: str,
    num_heads: int,
    dropout: float,
) -> nn.Module:
    """Return the ``backbone`` network for inputs of ``image_shape`` (C, H, W).

    The UNet reads ``base_channels``, ``channel_multipliers``, ``num_res_blocks`` and
    ``attention_resolutions``; the DiT reads ``patch_size``, ``hidden_size``, ``depth``,
    ``mlp_ratio`` and ``positions``; both read ``num_heads`` and ``dropout``. Raises
    ConfigError for an unknown backbone or sizes that do not fit the inputs.
    """
    _, height, width = image_shape
    if backbone == "unet":
        halvings = len(channel_multipliers) - 1
        if min(height, width) % 2**halvings:
            raise ConfigError(
                f"model.channel_multipliers has {len(channel_multipliers)} levels, which halve "
                f"the {height}×{width} input {halvings} times: use fewer levels"
            )
        attended = [base_channels * channel_multipliers[-1]] + [  # the middle, and each level
            base_channels * m  # whose resolution is in attention_resolutions
            for level, m in enumerate(channel_multipliers)
            if min(height, width) // 2**level in attention_resolutions
        ]
        if any(channels % num_heads for channels in attended):
            raise ConfigError(
                f"model.num_heads={num_heads} must divide the UNet's channels where it attends "
                f"({sorted(set(attended))}): choose another num_heads or base_channels"
            )
        return UNet(
            image_shape,
            base_channels=base_channels,
            channel_multipliers=tuple(channel_multipliers),
            num_res_blocks=num_res_blocks,
            attention_resolutions=tuple(attention_resolutions),
            num_heads=num_heads,
            dropout=dropout,
            num_classes=num_classes,
        )
    if backbone == "dit":
        if height % patch_size or width % patch_size:
            raise ConfigError(
                f"model.patch_size={patch_size} must divide the {height}×{width} input: "
                "choose a divisor (e.g. 1 or 2)"
            )
        if hidden_size % num_heads:
            raise ConfigError(
                f"model.hidden_size={hidden_size} must be a multiple of model.num_heads={num_heads}"
            )
        if positions not in POSITIONS:
            raise ConfigError(f"model.positions must be sincos or learned, got {positions!r}")
        if positions == "sincos" and hidden_size % 4:
            raise ConfigError(
                f"sin-cos positions need model.hidden_size divisible by 4, got {hidden_size}"
            )
        if not mlp_ratio > 0:
            raise ConfigError(f"model.mlp_ratio must be > 0, got {mlp_ratio!r}")
        return DiT(
            image_shape,
            patch_size=patch_size,
            hidden_size=hidden_size,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            positions=positions,
            dropout=dropout,
            num_classes=num_classes,
        )
    raise ConfigError(f"model.backbone must be unet or dit, got {backbone!r}")
