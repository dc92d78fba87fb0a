"""DiT: the diffusion transformer of Peebles & Xie (2023), "Scalable Diffusion Models with
Transformers", with adaLN-Zero conditioning.

Image (B, C, H, W) → patches (a convolution with stride p) → tokens (B, T, D) plus 2-D
positions (fixed sin-cos, or learned) → ``depth`` blocks, each modulated by the time (+ class)
embedding through adaptive layer norm whose shift, scale and gate start at zero, so every
block starts as the identity → a final adaptive norm and linear map to p·p·C values per
token → unpatchify → (B, C, H, W).

Takes the same inputs as zoo's UNet: real-valued timesteps on the DDPM scale [0, 1000)
(a flow's t ∈ [0, 1] times 1000, as DiT and SD3 embed it) and labels whose id
``num_classes`` means "no label" (classifier-free guidance).

Shapes: B batch, C image channels, H×W image, p patch size, T = (H/p)(W/p) tokens,
D hidden size, nh heads, hs = D/nh head size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nn.attention import scaled_dot_product_attention
from zoo.nn.unet import timestep_embedding

POSITIONS = ("sincos", "learned")
FREQUENCY_DIM = 256  # sinusoidal features of the timestep before its MLP (DiT's choice)


# Patches ----------------------------------------------------------------------------------


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Return the p×p patches of images (B, C, H, W) as tokens (B, T, p·p·C), row by row;
    each token lists its pixels row-major with the channels innermost."""
    b, c, h, w = x.shape
    p = patch_size
    x = x.view(b, c, h // p, p, w // p, p)
    x = torch.einsum("bchpwq->bhwpqc", x)  # (B, H/p, W/p, p, p, C)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: torch.Tensor, patch_size: int, channels: int, height: int, width: int):
    """Return images (B, C, H, W) from tokens (B, T, p·p·C): the inverse of :func:`patchify`."""
    b = tokens.shape[0]
    p = patch_size
    x = tokens.view(b, height // p, width // p, p, p, channels)
    x = torch.einsum("bhwpqc->bchpwq", x)  # (B, C, H/p, p, W/p, p)
    return x.reshape(b, channels, height, width)


def sincos_positions(dim: int, grid_height: int, grid_width: int) -> torch.Tensor:
    """Return fixed 2-D sin-cos position embeddings (T, dim), T = grid_height·grid_width, row
    by row: the first half of the channels encodes the row, the second the column, each as
    [sin, cos] at frequencies 1/10000^(k/(dim/4)) (Vaswani et al.; MAE's 2-D form, as DiT)."""
    if dim % 4:
        raise ValueError(f"sin-cos positions need a hidden size divisible by 4, got {dim}")
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)

    def encode(position: torch.Tensor) -> torch.Tensor:  # (T,) → (T, dim/2)
        angles = position[:, None] * frequencies[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows, columns = torch.meshgrid(
        torch.arange(grid_height, dtype=torch.float64),
        torch.arange(grid_width, dtype=torch.float64),
        indexing="ij",
    )
    return torch.cat([encode(rows.flatten()), encode(columns.flatten())], dim=1).float()


# The network, in the order data flows ------------------------------------------------------


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Return x·(1 + scale) + shift: the adaptive layer norm's affine map, (B, T, D)."""
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head self-attention over all tokens (no mask), through SDPA."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, T, hs) each
        dropout_p = self.dropout if self.training else 0.0
        y = scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class MLP(nn.Module):
    """The position-wise feed-forward network: D → mlp_ratio·D → GELU (tanh) → D."""

    def __init__(self, hidden_size: int, mlp_ratio: float, dropout: float):
        super().__init__()
        inner = int(hidden_size * mlp_ratio)
        self.fc_1 = nn.Linear(hidden_size, inner)
        self.fc_2 = nn.Linear(inner, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_2(self.dropout(F.gelu(self.fc_1(x), approximate="tanh")))  # (B, T, D)


class DiTBlock(nn.Module):
    """x + gate·attention(adaLN(x)), then x + gate·MLP(adaLN(x)); the six shifts, scales and
    gates come from the conditioning through a linear map that starts at zero (adaLN-Zero),
    so the block starts as the identity."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm_1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, dropout)
        self.norm_2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(hidden_size, mlp_ratio, dropout)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        # (B, 1, D) each, broadcast over the tokens
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = self.modulation(
            conditioning
        )[:, None].chunk(6, dim=-1)
        x = x + gate_attn * self.attn(modulate(self.norm_1(x), shift_attn, scale_attn))
        return x + gate_mlp * self.mlp(modulate(self.norm_2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN, then a linear map of each token to its patch's p·p·C values; starts at zero."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)

    def forward(self, x: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(conditioning)[:, None].chunk(2, dim=-1)  # (B, 1, D) each
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, T, p·p·C)


class DiT(nn.Module):
    """Predicts the diffusion or flow target of images (B, C, H, W) at timesteps (B,)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        patch_size: int = 2,
        hidden_size: int = 256,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        positions: str = "sincos",
        dropout: float = 0.0,
        num_classes: int = 0,
    ):
        super().__init__()
        channels, height, width = image_shape
        if height % patch_size or width % patch_size:
            raise ValueError(f"patch size {patch_size} must divide the image's {height}×{width}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden size {hidden_size} must divide by num_heads {num_heads}")
        if positions not in POSITIONS:
            raise ValueError(f"positions must be sincos or learned, got {positions!r}")
        self.image_shape = (channels, height, width)
        self.patch_size = patch_size
        grid = (height // patch_size, width // patch_size)
        self.patch_embedding = nn.Conv2d(channels, hidden_size, patch_size, stride=patch_size)
        if positions == "sincos":  # fixed: recomputed, not stored in checkpoints
            table = sincos_positions(hidden_size, *grid)[None]
            self.register_buffer("position_embedding", table, persistent=False)
        else:
            self.position_embedding = nn.Parameter(torch.zeros(1, grid[0] * grid[1], hidden_size))
            nn.init.trunc_normal_(self.position_embedding, std=0.02)
        self.time_mlp = nn.Sequential(
            nn.Linear(FREQUENCY_DIM, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        # Class num_classes is the "no label" token of classifier-free guidance.
        self.class_embedding = nn.Embedding(num_classes + 1, hidden_size) if num_classes else None
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.final = FinalLayer(hidden_size, patch_size, channels)
        self._initialise()

    def _initialise(self) -> None:
        """DiT's initialisation: Xavier-uniform linear maps (the patch embedding as one), N(0,
        0.02²) time MLP and class table, and zero for every adaLN modulation and the output."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        weight = self.patch_embedding.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.patch_embedding.bias)
        for layer in (self.time_mlp[0], self.time_mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
        if self.class_embedding is not None:
            nn.init.normal_(self.class_embedding.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.modulation[-1].weight)
            nn.init.zeros_(block.modulation[-1].bias)
        for layer in (self.final.modulation[-1], self.final.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def conditioning(self, timesteps: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Return the embedding (B, D) of the timesteps, plus the classes' for a conditional DiT."""
        embedding = self.time_mlp(timestep_embedding(timesteps, FREQUENCY_DIM))  # (B, D)
        if self.class_embedding is not None:
            if labels is None:
                raise ValueError("this DiT is class-conditional: pass labels")
            embedding = embedding + self.class_embedding(labels)
        return embedding

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None):
        """Return the prediction (B, C, H, W); ``labels`` (B,) use num_classes for "no label"."""
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2)  # (B, T, D)
        tokens = tokens + self.position_embedding
        conditioning = self.conditioning(timesteps, labels)  # (B, D)
        for block in self.blocks:
            tokens = block(tokens, conditioning)  # (B, T, D)
        patches = self.final(tokens, conditioning)  # (B, T, p·p·C)
        return unpatchify(patches, self.patch_size, *self.image_shape)
