"""GPT: a decoder-only transformer language model (GPT-2, Radford et al. 2019; after nanoGPT).

Token embedding (+ learned positions, or rotary positions inside attention) → ``n_layer``
pre-norm blocks (LayerNorm → causal self-attention, LayerNorm → MLP, each added back to
the residual stream) → final LayerNorm → a linear head that shares its weight with the
token embedding. Trained on random windows with next-token cross-entropy; reports
nats/token and perplexity; generates with a key/value cache, temperature, top-k, top-p
and a stop string.

Shapes: B batch, T time (tokens), C = n_embd channels, nh heads, hs = C / nh head size,
V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.models.base import LanguageModel, check_fractions, check_sizes
from zoo.nn.attention import scaled_dot_product_attention
from zoo.nn.decoding import StopTracker, sample_from_logits

POSITIONS = ("learned", "rotary")
FUSED_OPTIMIZERS = ("torch.optim.AdamW", "torch.optim.Adam")  # with fused CUDA and CPU kernels
FUSED_DEVICES = ("cuda", "cpu")  # torch >= 2.4 has both

# One layer's cached keys and values, each (B, nh, T_past, hs).
KeyValues = tuple[torch.Tensor, torch.Tensor]


@dataclass
class GPTConfig:
    """The network's sizes and switches."""

    vocab_size: int
    block_size: int = 64  # the longest context the model reads
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False  # biases in the Linears and LayerNorms
    position: str = "learned"  # learned: a position embedding table; rotary: RoPE


# Rotary position embeddings (RoFormer, Su et al. 2021) ------------------------------------


def rotary_tables(block_size: int, head_size: int, base: float = 10000.0):
    """Return cos and sin of the rotation angles, each (block_size, hs/2)."""
    frequencies = base ** -(torch.arange(0, head_size, 2).float() / head_size)  # (hs/2,)
    angles = torch.arange(block_size).float()[:, None] * frequencies[None, :]  # (T, hs/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Return x (B, nh, T, hs) with each pair of channels (i, i + hs/2) rotated by its angle."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # (T, hs/2), broadcast over B and nh
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


# The network, in the order data flows ------------------------------------------------------


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each token sees only itself and earlier tokens."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rotary=None, past: KeyValues | None = None):
        """Return the attention output (B, T, C) and the keys/values of past and new tokens."""
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # (B, T, C) each
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        dropout_p = self.dropout if self.training else 0.0
        if past is None:
            y = scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            k = torch.cat([past[0], k], dim=2)  # (B, nh, T_past + T, hs)
            v = torch.cat([past[1], v], dim=2)  # (B, nh, T_past + T, hs)
            # New token t (at position T_past + t) sees every cached token and new ones up to
            # t; a single new token (the usual step of generation) sees them all.
            T_past = past[0].size(2)
            mask = None
            if T > 1:
                mask = torch.ones(T, T_past + T, dtype=torch.bool, device=x.device)
                mask = mask.tril(diagonal=T_past)  # (T, T_past + T)
            y = scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    """The position-wise feed-forward network: C → 4C → GELU → C."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, rotary=None, past: KeyValues | None = None):
        attended, present = self.attn(self.ln_1(x), rotary, past)
        x = x + attended
        x = x + self.mlp(self.ln_2(x))
        return x, present  # (B, T, C), this layer's keys and values


class Transformer(nn.Module):
    """Token ids (B, T) → next-token logits (B, T, V): embeddings, blocks, final norm, head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = (
            nn.Embedding(config.block_size, config.n_embd) if config.position == "learned" else None
        )
        if config.position == "rotary":
            cos, sin = rotary_tables(config.block_size, config.n_embd // config.n_head)
            # Recomputed from the config, so kept out of the state_dict.
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf 2017): the head reads out with the embedding matrix.
        self.wte.weight = self.lm_head.weight

        # GPT-2's initialisation: N(0, 0.02) everywhere, the residual projections scaled
        # down by sqrt(2 · n_layer) so the residual stream does not grow with depth.
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, past: list[KeyValues] | None = None):
        """Return logits (B, T, V) and every layer's keys/values, ``past`` ones included.

        With ``past`` (the cache of the tokens before ``idx``), ``idx`` continues them:
        its positions start after the cached ones.
        """
        B, T = idx.size()
        start = 0 if past is None else past[0][0].size(2)
        if start + T > self.config.block_size:
            raise ValueError(
                f"cannot read {start + T} tokens: the model's context is block_size="
                f"{self.config.block_size}; set model.block_size >= data.block_size"
            )
        x = self.wte(idx)  # (B, T, C)
        rotary = None
        if self.wpe is not None:
            positions = torch.arange(start, start + T, device=idx.device)  # (T,)
            x = x + self.wpe(positions)  # (B, T, C)
        else:
            rotary = (self.rotary_cos[start : start + T], self.rotary_sin[start : start + T])
        x = self.drop(x)
        present = []
        for i, block in enumerate(self.h):
            x, keys_values = block(x, rotary, None if past is None else past[i])
            present.append(keys_values)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return logits, present


# Optimisation (nanoGPT's) ------------------------------------------------------------------


def decay_groups(parameters) -> list[dict[str, Any]]:
    """Return nanoGPT's AdamW groups of the trainable ``parameters``: decay on every ≥2-D
    tensor, none on biases and norms.

    Matrices and embeddings decay at the optimizer's ``weight_decay``; vectors
    (biases, LayerNorm gains) get 0.
    """
    parameters = [p for p in parameters if p.requires_grad]
    decay = [p for p in parameters if p.dim() >= 2]
    no_decay = [p for p in parameters if p.dim() < 2]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def fused_option(optimizer: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Return nanoGPT's choice for an optimizer config whose ``fused`` is unset: AdamW's
    fused kernel where the device has one; nothing for other optimizers.

    nanoGPT fuses on CUDA only, because torch had no CPU kernel then; torch >= 2.4 has
    one, and on the gpt_shakespeare_cpu model it takes a step from 40 to 37 ms
    (bench/RESULTS.md, "GPT (Shakespeare, characters)"). ``fused: false`` in the config
    keeps torch's multi-tensor loop (any other value is refused by ``check_optimizer``).
    """
    if optimizer["_target_"] in FUSED_OPTIMIZERS and optimizer.get("fused") is None:
        return {"fused": device.type in FUSED_DEVICES}
    return {}


# The LightningModule ------------------------------------------------------------------------


DEFAULT_OPTIMIZER = {
    "_target_": "torch.optim.AdamW",
    "_partial_": True,
    "lr": 1e-3,
    "betas": [0.9, 0.99],
    "weight_decay": 0.1,
    "fused": None,
}
# nanoGPT's schedule: 100 warm-up steps, then a cosine to a tenth of lr at the run's end.
DEFAULT_SCHEDULER = {
    "_target_": "zoo.nn.schedules.warmup_cosine",
    "_partial_": True,
    "warmup_steps": 100,
    "total_steps": None,
    "min_lr_ratio": 0.1,
}


class GPT(LanguageModel):
    """A GPT over the tokenizer's characters or bytes."""

    family = "gpt"
    compiled_networks = ("transformer",)

    def __init__(
        self,
        spec: dict[str, Any],
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        block_size: int = 64,
        dropout: float = 0.0,
        bias: bool = False,
        position: str = "learned",
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = DEFAULT_SCHEDULER,
        scheduler_interval: str = "step",
    ):
        optimizer = optimizer or DEFAULT_OPTIMIZER  # before save_hyperparameters records it
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        check_sizes(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size)
        check_fractions(dropout=dropout)
        if position not in POSITIONS:
            raise ConfigError(f"model.position must be one of {list(POSITIONS)}, got {position!r}")
        if n_embd % n_head != 0:
            raise ConfigError(f"model.n_embd={n_embd} must be a multiple of model.n_head={n_head}")
        if position == "rotary" and (n_embd // n_head) % 2 != 0:
            raise ConfigError(
                f"rotary positions rotate channel pairs: the head size n_embd / n_head = "
                f"{n_embd // n_head} must be even"
            )
        self.config = GPTConfig(
            vocab_size=self.spec.vocab_size,
            block_size=block_size,
            n_layer=n_layer,
            n_head=n_head,
            n_embd=n_embd,
            dropout=dropout,
            bias=bias,
            position=position,
        )
        self.transformer = Transformer(self.config)

    def forward(self, idx: torch.Tensor, past: list[KeyValues] | None = None):
        """Return next-token logits (B, T, V) and every layer's keys/values (the cache)."""
        return self.transformer(idx, past)

    # Optimisation

    def parameter_groups(self):
        """Return nanoGPT's AdamW groups: decay on every ≥2-D tensor, none on biases and norms."""
        return decay_groups(self.parameters())

    def optimizer_options(self) -> dict[str, Any]:
        """Return nanoGPT's choice: AdamW's fused kernel where the device has one (CPU, CUDA)."""
        return fused_option(self.hparams.optimizer, self.device)

    # Generation

    @torch.inference_mode()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        stop_ids: list[int] | None = None,
    ) -> torch.Tensor:
        """Return ``idx`` (B, T) followed by up to ``max_new_tokens`` sampled tokens.

        With ``use_cache`` each step runs the network on the newest token only, reusing
        the keys and values of the tokens before it. Once the context holds block_size
        tokens the window slides, every position shifts, and the cache is rebuilt from the
        last block_size tokens: cached and uncached generation give the same tokens.
        Generation ends early once every row has produced ``stop_ids``.
        """
        block_size = self.config.block_size
        stop = StopTracker(stop_ids, idx)
        cache = None
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and cache[0][0].size(2) < block_size:
                logits, cache = self(idx[:, -1:], cache)  # (B, 1, V): the newest token only
            else:
                logits, cache = self(idx[:, -block_size:])  # (B, T, V): the whole window
            next_token = sample_from_logits(
                logits[:, -1],
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
            )  # (B,)
            idx = torch.cat([idx, next_token[:, None]], dim=1)  # (B, T + 1)
            if stop.update(idx):
                break
        return idx
