"""A prior over a VQ-VAE's codes: an autoregressive model of the code grid that draws images.

van den Oord et al. (2017, sec. 4.1) fit a PixelCNN to the codes of a trained VQ-VAE and
draw images by sampling codes from it and decoding them; VQ-VAE-2 (Razavi et al. 2019)
does the same with larger priors, and VQGAN (Esser et al. 2021) with a GPT over the codes
in raster order. Here the frozen first stage, a ``vqvae`` checkpoint copied into this
model, encodes every training image once to its code grid (h, w); the prior models
p(c | y) = Π_i p(c_i | c_<i, y) over the n = h·w codes in raster order (y the class when
``conditional``), and its loss is the next-code cross-entropy in nats per code.

Backbones:

- ``gpt``: zoo's GPT Transformer (gpt.py) over a vocabulary of the K codes and the first
  tokens: each sequence starts with its class, token K + y (or one start token, K, when
  unconditional), and the logits are read over the K codes only. Sampling uses the
  Transformer's key/value cache.
- ``pixelcnn``: zoo's Gated PixelCNN (pixelcnn.py) over the code grid, each code embedded
  as a vector and the grid taken as an image of one colour, with a softmax over the K
  codes at each position and the class as a bias of its gates.

Sampling draws the codes one at a time with temperature, top-k and top-p
(zoo/nn/decoding.py) and decodes them with the frozen VQ-VAE.

The two stages bound the data's likelihood: the encoder is deterministic, so the ELBO with
q(c | x) a point mass at the codes c(x) gives −log p(x | y) ≤ −log p(x | c(x)) − log p(c(x) | y):
the VQ-VAE's reconstruction bits/dim plus this model's nats per code times n / (C·H·W·ln 2)
(:func:`two_stage_bits_per_dim`).

Shapes: B batch, (h, w) the code grid, n = h·w codes per image, K codebook entries,
V = K + first tokens the GPT's vocabulary, C = n_embd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError
from zoo.metrics import perplexity
from zoo.models.base import GenerativeModule, check_fractions, check_sizes
from zoo.models.gpt import (
    DEFAULT_OPTIMIZER,
    DEFAULT_SCHEDULER,
    POSITIONS,
    GPTConfig,
    Transformer,
    decay_groups,
    fused_option,
)
from zoo.models.pixelcnn import GatedPixelCNN
from zoo.nn.decoding import sample_from_logits

BACKBONES = ("gpt", "pixelcnn")


def two_stage_bits_per_dim(
    reconstruction_bpd: float, nats_per_code: float, num_codes: int, num_dims: int
) -> float:
    """Return the two-stage model's bound on −log p(x) in bits/dim: the decoder's cost of the
    image given its codes (bits/dim) plus the prior's cost of the codes, ``num_codes`` codes
    at ``nats_per_code`` spread over the image's ``num_dims`` values."""
    return reconstruction_bpd + nats_per_code * num_codes / (num_dims * math.log(2))


# Backbones: codes (B, h, w) and classes (B,) or None → logits (B, n, K) ---------------------


class CodeTransformer(nn.Module):
    """The gpt backbone: reads [first token, c_0, …, c_{n−2}] and predicts c_0, …, c_{n−1}."""

    def __init__(self, codebook_size: int, config: GPTConfig):
        super().__init__()
        self.codebook_size = codebook_size
        self.transformer = Transformer(config)  # vocabulary K codes + the first tokens

    def first_tokens(self, labels: torch.Tensor | None, count: int, device) -> torch.Tensor:
        """Return the token (B,) that starts each sequence: K + class, or K unconditioned."""
        if labels is None:
            return torch.full((count,), self.codebook_size, dtype=torch.long, device=device)
        return labels + self.codebook_size

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        b = codes.size(0)
        first = self.first_tokens(labels, b, codes.device)  # (B,)
        tokens = torch.cat([first[:, None], codes.view(b, -1)[:, :-1]], dim=1)  # (B, n)
        logits, _ = self.transformer(tokens)  # (B, n, V)
        return logits[..., : self.codebook_size]  # (B, n, K): a distribution over codes only

    def generate(
        self,
        labels: torch.Tensor | None,
        count: int,
        length: int,
        draw: Callable[[torch.Tensor], torch.Tensor],
        device,
    ) -> torch.Tensor:
        """Return ``count`` code sequences (count, length), each drawn with ``draw`` from the
        logits (count, K) of its next code; the newest token alone runs through the network,
        the keys and values of the earlier ones come from the cache."""
        first = self.first_tokens(labels, count, device)
        logits, cache = self.transformer(first[:, None])  # (B, 1, V)
        codes = []
        for position in range(length):
            code = draw(logits[:, -1, : self.codebook_size])  # (B,)
            codes.append(code)
            if position + 1 < length:
                logits, cache = self.transformer(code[:, None], cache)  # (B, 1, V)
        return torch.stack(codes, dim=1)  # (B, n)


class CodePixelCNN(nn.Module):
    """The pixelcnn backbone: each code embedded as a vector of ``channels`` values, the grid
    (B, channels, h, w) read by a Gated PixelCNN of one colour with K logits per position."""

    def __init__(
        self,
        codebook_size: int,
        channels: int,
        num_layers: int,
        kernel_size: int,
        first_kernel_size: int,
        num_classes: int,
        dropout: float,
    ):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, channels)
        self.network = GatedPixelCNN(
            in_channels=channels,
            channels=channels,
            num_layers=num_layers,
            kernel_size=kernel_size,
            first_kernel_size=first_kernel_size,
            params_per_channel=codebook_size,
            num_classes=num_classes,
            dropout=dropout,
            colours=1,
        )

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        x = self.embedding(codes).permute(0, 3, 1, 2)  # (B, channels, h, w)
        logits = self.network(x, labels)  # (B, K, h, w)
        return logits.flatten(2).transpose(1, 2)  # (B, n, K) in raster order


# The LightningModule -------------------------------------------------------------------------


class VQPrior(GenerativeModule):
    """An autoregressive prior over a frozen VQ-VAE's code grid; samples are decoded images."""

    family = "vq_prior"
    stage_one_families = ("vqvae",)
    compiled_networks = ("prior",)
    logged_metrics = ("loss", "perplexity")

    def __init__(
        self,
        spec: dict[str, Any],
        stage_one: dict[str, Any] | None = None,
        backbone: str = "gpt",
        conditional: bool = True,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        position: str = "learned",
        bias: bool = False,
        channels: int = 64,
        num_layers: int = 8,
        kernel_size: int = 3,
        first_kernel_size: int = 5,
        dropout: float = 0.1,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = DEFAULT_SCHEDULER,
        scheduler_interval: str = "step",
    ):
        optimizer = optimizer or DEFAULT_OPTIMIZER  # before save_hyperparameters records it
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        if stage_one is None:
            raise ConfigError(
                "the vq_prior family models the codes of a trained VQ-VAE: pass its checkpoint, "
                "model.stage_one=outputs/vqvae_<data>/<run>/checkpoints/last.ckpt"
            )
        if backbone not in BACKBONES:
            raise ConfigError(f"model.backbone must be gpt or pixelcnn, got {backbone!r}")
        check_sizes(n_layer=n_layer, n_head=n_head, n_embd=n_embd, channels=channels)
        check_sizes(num_layers=num_layers)
        check_fractions(dropout=dropout)
        self.stage_one = self.build_stage_one(stage_one)  # frozen, in eval mode
        self.num_classes = self.conditional_classes(conditional)
        self.code_shape = self.stage_one.code_shape  # (h, w)
        self.codebook_size = self.stage_one.codebook_size  # K
        length = self.code_shape[0] * self.code_shape[1]  # n
        if backbone == "gpt":
            if position not in POSITIONS:
                raise ConfigError(
                    f"model.position must be one of {list(POSITIONS)}, got {position!r}"
                )
            if n_embd % n_head or (position == "rotary" and (n_embd // n_head) % 2):
                raise ConfigError(
                    f"model.n_embd={n_embd} must be a multiple of model.n_head={n_head} (with an "
                    "even quotient for rotary positions)"
                )
            config = GPTConfig(
                vocab_size=self.codebook_size + max(self.num_classes, 1),  # codes, first tokens
                block_size=length,  # the first token and n − 1 codes
                n_layer=n_layer,
                n_head=n_head,
                n_embd=n_embd,
                dropout=dropout,
                bias=bias,
                position=position,
            )
            self.prior = CodeTransformer(self.codebook_size, config)
        else:
            for name, size in (
                ("kernel_size", kernel_size),
                ("first_kernel_size", first_kernel_size),
            ):
                if size < 3 or size % 2 == 0:
                    raise ConfigError(f"model.{name} must be odd and at least 3, got {size}")
            self.prior = CodePixelCNN(
                self.codebook_size,
                channels,
                num_layers,
                kernel_size,
                first_kernel_size,
                self.num_classes,
                dropout,
            )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Return the codes (B, h, w), long, of images (B, C, H, W) in [-1, 1]: what this
        model is trained on (zoo.data.EncodedDataModule encodes the data once)."""
        return self.stage_one.encode(images)

    def forward(self, codes: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Return the logits (B, n, K) of each code of ``codes`` (B, h, w) given the codes
        before it in raster order (and the class, ``labels`` (B,), when conditional)."""
        return self.prior(codes, labels)

    # Objective

    def _step(self, batch, stage: str) -> torch.Tensor:
        codes, y = batch  # (B, h, w) long, (B,)
        logits = self(codes, self.batch_labels(y))  # (B, n, K)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), codes.flatten())  # nats/code
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        if stage != "train":
            self.log(f"{stage}/perplexity", perplexity(loss), on_epoch=True)
        return loss

    # Optimisation

    def parameter_groups(self):
        """Return the prior's AdamW groups as the GPT's (the frozen first stage has none):
        decay on every ≥2-D tensor, none on biases and norms."""
        return decay_groups(self.prior.parameters())

    def optimizer_options(self) -> dict[str, Any]:
        """Return AdamW's fused kernel where the device has one (CPU, CUDA), as the GPT does."""
        return fused_option(self.hparams.optimizer, self.device)

    # Sampling

    @torch.no_grad()
    def generate_codes(
        self,
        num_samples: int,
        labels: torch.Tensor | None = None,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Return ``num_samples`` code grids (N, h, w) drawn code by code in raster order.

        ``labels`` (N,) are the classes of a conditional model. The gpt backbone reuses its
        key/value cache unless ``use_cache`` is false; otherwise (and for the pixelcnn
        backbone) the whole grid runs through the network for every code. Both give the
        same codes. Raises ValueError for a temperature below 0 or top_p outside (0, 1].
        """
        h, w = self.code_shape
        draw = partial(
            sample_from_logits,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )
        was_training = self.training
        self.eval()  # no dropout while drawing
        try:
            if self.hparams.backbone == "gpt" and use_cache:
                codes = self.prior.generate(labels, num_samples, h * w, draw, self.device)
            else:
                codes = torch.zeros(num_samples, h * w, dtype=torch.long, device=self.device)
                for position in range(h * w):  # later codes are zeros the model never sees
                    logits = self(codes.view(-1, h, w), labels)[:, position]  # (N, K)
                    codes[:, position] = draw(logits)
        finally:
            self.train(was_training)
        return codes.view(num_samples, h, w)

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        labels: int | list[int] | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> torch.Tensor:
        """Return ``num_samples`` images (N, C, H, W) in [-1, 1]: code grids drawn from the
        prior, decoded by the frozen VQ-VAE.

        ``labels`` picks the classes of a conditional model (one class, or a list repeated
        to fill N; every class in turn when None). ``temperature`` sharpens (< 1) or flattens
        (> 1) each code's distribution, 0 takes the most likely code; ``top_k`` keeps the k
        most likely codes, ``top_p`` the most likely ones whose mass reaches p.
        """
        label_ids = self.sample_labels(labels, num_samples)
        codes = self.generate_codes(
            num_samples,
            label_ids,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
        )
        return self.stage_one.decode(codes)
