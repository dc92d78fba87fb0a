"""PixelCNN: a Gated PixelCNN with the exact likelihood of discrete images, in bits/dim.

van den Oord et al. (2016), "Conditional Image Generation with PixelCNN Decoders":
p(x) = Π_i p(x_i | x_<i) over pixels in raster order and, within a pixel, over the
colour channels R → G → B. Two stacks remove the blind spot of masked convolutions:
the vertical stack sees every row above, the horizontal stack the pixels to the left
in the current row, and the vertical stack reaches the horizontal one shifted down a
row, so nothing from the current row or below leaks in. Colour is masked by channel
groups (PixelRNN, van den Oord et al. 2016a, fig. 2): the features of each layer are
split into one group per colour, and a group sees, at the current pixel, the groups
of earlier colours (mask A, the first layer) or of earlier colours and its own (mask B).

The distribution of each subpixel is a softmax over the data's own levels
(``likelihood="categorical"``) or a mixture of discretized logistics (PixelCNN++,
Salimans et al. 2017) with its own parameters per colour channel; a channel depends
on the earlier channels of its pixel through the channel masking, not through
PixelCNN++'s linear mean coupling.

Sampling draws one uniform per subpixel up front and inverts each subpixel's CDF,
so the fast path (the vertical stack once per row, the horizontal stack on the
current row only, cropped at the current column) gives the same samples as the
naive one (the whole network on the whole image for every subpixel).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.errors import ConfigError
from zoo.metrics import bits_per_dim
from zoo.models.base import GenerativeModule, check_fractions, check_sizes
from zoo.nn.distributions import (
    discretized_logistic_mixture_level_log_probs,
    discretized_logistic_mixture_log_prob,
    index_to_levels,
    inverse_cdf_sample,
    levels_to_index,
)
from zoo.nn.schedules import COSINE_OVER_THE_RUN

LIKELIHOODS = ("categorical", "discretized_logistic_mixture")

# Masked convolutions


def channel_groups(num_channels: int, num_groups: int) -> torch.Tensor:
    """Return the colour group (0 … num_groups-1) of each channel: contiguous, near-equal blocks."""
    return torch.arange(num_channels) * num_groups // num_channels


def shift_down(x: torch.Tensor) -> torch.Tensor:
    """Return x (B, C, H, W) moved down one row, zeros in the top row: row i then holds row i-1."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


class MaskedConv2d(nn.Conv2d):
    """A 1×width convolution over the current pixel and the width-1 pixels to its left.

    At the current pixel the weights are masked by colour group: with mask "A" an
    output group sees only input groups of earlier colours, with mask "B" also its own.
    Greyscale has one group, so "A" hides the current pixel and "B" shows it. Pixels
    to the left are earlier in raster order and always visible. ``width=1`` gives the
    masked 1×1 convolutions between layers.
    """

    def __init__(
        self, in_groups: torch.Tensor, out_groups: torch.Tensor, width: int, mask_type: str
    ):
        super().__init__(len(in_groups), len(out_groups), kernel_size=(1, width))
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        seen, seeing = in_groups.view(1, -1), out_groups.view(-1, 1)
        visible = seen < seeing if mask_type == "A" else seen <= seeing  # (out, in)
        mask = torch.ones_like(self.weight)  # (out, in, 1, width)
        mask[:, :, 0, -1] = visible.float()  # the last column is the current pixel
        # Rebuilt from the hyperparameters, so kept out of the checkpoint.
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.kernel_size[1] - 1, 0, 0, 0))  # pad on the left only: causal in columns
        return F.conv2d(x, self.weight * self.mask, self.bias)


class VerticalConv(nn.Conv2d):
    """A (k//2+1)×k convolution over the current row and the k//2 rows above it.

    Output row i sees input rows ≤ i, all columns within k//2; it reaches the
    horizontal stack only through :func:`shift_down`, so only rows < i get there.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(in_channels, out_channels, kernel_size=(kernel_size // 2 + 1, kernel_size))
        self.halo = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Left, right and top padding; none below, so row i never sees row i+1.
        return super().forward(F.pad(x, (self.halo, self.halo, self.halo, 0)))


def gate(x: torch.Tensor) -> torch.Tensor:
    """Return tanh(a) ⊙ σ(b) of x = [a, b] split along channels: (B, 2F, …) → (B, F, …)."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


# The network


class GatedLayer(nn.Module):
    """One layer of both stacks (van den Oord et al. 2016, fig. 2), with an optional class bias.

    The first layer (mask "A") reads the image and has no residual connection; the
    others (mask "B") read the previous layer's features and add their output to them.
    """

    def __init__(
        self,
        in_groups: torch.Tensor,
        hidden_groups: torch.Tensor,
        kernel_size: int,
        mask_type: str,
        num_classes: int,
        dropout: float,
    ):
        super().__init__()
        hidden = len(hidden_groups)
        gate_groups = hidden_groups.repeat(2)  # the tanh half and the sigmoid half
        self.vertical = VerticalConv(len(in_groups), 2 * hidden, kernel_size)
        self.horizontal = MaskedConv2d(in_groups, gate_groups, kernel_size // 2 + 1, mask_type)
        # The rows above are all known: no mask between the stacks.
        self.vertical_to_horizontal = nn.Conv2d(2 * hidden, 2 * hidden, kernel_size=1)
        self.skip = MaskedConv2d(hidden_groups, hidden_groups, 1, "B")
        self.output = MaskedConv2d(hidden_groups, hidden_groups, 1, "B")
        self.dropout = nn.Dropout(dropout)
        self.residual = mask_type == "B"
        # The class embedding h of the paper's eq. 4, added to both gates (V·h as a lookup).
        self.condition = nn.Embedding(num_classes, 2 * hidden) if num_classes else None

    def class_bias(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Return the class's bias of the gates, (B, 2F, 1, 1), or None when unconditional."""
        if self.condition is None:
            return None
        return self.condition(labels)[:, :, None, None]

    def vertical_step(
        self, v: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the vertical stack's output (B, F, H, W) and what it feeds the horizontal stack
        (B, 2F, H, W), whose row i holds rows < i only."""
        features = self.vertical(v)  # (B, 2F, H, W)
        to_horizontal = self.vertical_to_horizontal(shift_down(features))
        if bias is not None:
            features = features + bias
        return self.dropout(gate(features)), to_horizontal

    def horizontal_step(
        self, h: torch.Tensor, to_horizontal: torch.Tensor, bias: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the horizontal stack's output and the skip contribution, (B, F, H, W) each."""
        features = self.horizontal(h) + to_horizontal  # (B, 2F, H, W)
        if bias is not None:
            features = features + bias
        gated = self.dropout(gate(features))  # (B, F, H, W)
        out = self.output(gated)
        return (h + out if self.residual else out), self.skip(gated)


class GatedPixelCNN(nn.Module):
    """Maps images (B, C, H, W) to per-subpixel distribution parameters (B, C·P, H, W).

    The parameters of subpixel (i, c) depend only on pixels before i in raster order
    and on channels < c of pixel i. ``vertical`` and ``horizontal`` are the two halves
    of ``forward``, exposed for the fast sampler.

    ``colours`` is the number of values drawn per pixel, each a group of the input's
    channels (by default every channel is a colour: an image). A grid of embedded codes
    is one colour of many channels (``colours=1``): its output is then (B, P, H, W), the
    parameters of each position's one value.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        num_layers: int,
        kernel_size: int,
        first_kernel_size: int,
        params_per_channel: int,
        num_classes: int,
        dropout: float,
        colours: int | None = None,
    ):
        super().__init__()
        colours = colours or in_channels
        image_groups = channel_groups(in_channels, colours)  # channel c is colour c of an image
        hidden_groups = channel_groups(channels, colours)
        self.layers = nn.ModuleList(
            [GatedLayer(image_groups, hidden_groups, first_kernel_size, "A", num_classes, dropout)]
            + [
                GatedLayer(hidden_groups, hidden_groups, kernel_size, "B", num_classes, dropout)
                for _ in range(num_layers - 1)
            ]
        )
        # Output c·P … c·P+P-1 are colour c's parameters.
        output_groups = channel_groups(colours * params_per_channel, colours)
        self.head = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(hidden_groups, hidden_groups, 1, "B"),
            nn.ReLU(),
            MaskedConv2d(hidden_groups, output_groups, 1, "B"),
        )

    def class_biases(self, labels: torch.Tensor | None) -> list[torch.Tensor | None]:
        """Return each layer's class bias of the gates (None for an unconditional model)."""
        return [layer.class_bias(labels) for layer in self.layers]

    def vertical(self, x: torch.Tensor, biases: list[torch.Tensor | None]) -> list[torch.Tensor]:
        """Return each layer's input from the rows above to the horizontal stack, (B, 2F, H, W)."""
        v, to_horizontal = x, []
        for layer, bias in zip(self.layers, biases, strict=True):
            v, contribution = layer.vertical_step(v, bias)
            to_horizontal.append(contribution)
        return to_horizontal

    def horizontal(
        self,
        x: torch.Tensor,
        to_horizontal: list[torch.Tensor],
        biases: list[torch.Tensor | None],
    ) -> torch.Tensor:
        """Return the parameters (B, C·P, H', W') of rows of x (B, C, H', W'), given the vertical
        stack's input to those rows. Each row is computed on its own, so a row (or a row's
        first columns) gives the same values as the whole image does there."""
        h, skips = x, 0
        for layer, contribution, bias in zip(self.layers, to_horizontal, biases, strict=True):
            h, skip = layer.horizontal_step(h, contribution, bias)
            skips = skips + skip
        return self.head(skips)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        biases = self.class_biases(labels)
        return self.horizontal(x, self.vertical(x, biases), biases)


# The LightningModule


class PixelCNN(GenerativeModule):
    """A (class-conditional) Gated PixelCNN whose exact NLL is reported in bits/dim."""

    family = "pixelcnn"
    compiled_networks = ("network",)
    logged_metrics = ("loss", "bpd")

    def __init__(
        self,
        spec: dict[str, Any],
        channels: int = 64,
        num_layers: int = 8,
        kernel_size: int = 3,
        first_kernel_size: int = 7,
        likelihood: str = "categorical",
        num_mixtures: int = 5,
        conditional: bool = False,
        dropout: float = 0.0,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = COSINE_OVER_THE_RUN,
        scheduler_interval: str = "epoch",
    ):
        optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        check_sizes(channels=channels, num_layers=num_layers, num_mixtures=num_mixtures)
        check_fractions(dropout=dropout)
        if likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"model.likelihood must be one of {', '.join(LIKELIHOODS)}; got {likelihood!r}"
            )
        for name, size in (("kernel_size", kernel_size), ("first_kernel_size", first_kernel_size)):
            if size < 3 or size % 2 == 0:
                raise ConfigError(f"model.{name} must be odd and at least 3, got {size}")
        c, h, w = self.spec.shape
        if channels < c:
            raise ConfigError(
                f"model.channels={channels} cannot hold one feature group per colour of the "
                f"{c}-channel images: use at least {c} (a multiple of {c} splits them evenly)"
            )
        if num_layers < 1 or num_mixtures < 1:
            raise ConfigError(
                f"model.num_layers and model.num_mixtures must be at least 1, got {num_layers} "
                f"and {num_mixtures}"
            )
        self.num_classes = self.conditional_classes(conditional)
        self.num_levels = self.spec.num_levels
        self.num_dims = c * h * w
        self.params_per_channel = (
            self.num_levels if likelihood == "categorical" else 3 * num_mixtures
        )
        self.network = GatedPixelCNN(
            in_channels=c,
            channels=channels,
            num_layers=num_layers,
            kernel_size=kernel_size,
            first_kernel_size=first_kernel_size,
            params_per_channel=self.params_per_channel,
            num_classes=self.num_classes,
            dropout=dropout,
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Return the distribution parameters (B, C·P, H, W) of every subpixel of x."""
        return self.network(x, labels)

    # Likelihood of x under the network's output

    def subpixel_log_probs(self, params: torch.Tensor) -> torch.Tensor:
        """Return log P(level) of every level, (..., L), from one subpixel's parameters (..., P)."""
        params = params.float()  # likelihood math in float32, whatever the network's precision
        if self.hparams.likelihood == "categorical":
            return params.log_softmax(dim=-1)
        logit_weights, means, log_scales = params.chunk(3, dim=-1)  # (..., K) each
        return discretized_logistic_mixture_level_log_probs(
            logit_weights, means, log_scales, self.num_levels
        )

    def log_likelihood(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Return log p(x) of each image, summed over its subpixels: (B,) in nats."""
        b, c, h, w = x.shape
        params = params.float().view(b, c, self.params_per_channel, h, w)  # (B, C, P, H, W)
        if self.hparams.likelihood == "categorical":
            index = levels_to_index(x, self.num_levels).unsqueeze(2)  # (B, C, 1, H, W)
            log_prob = params.log_softmax(dim=2).gather(2, index).squeeze(2)
        else:
            logit_weights, means, log_scales = params.permute(0, 1, 3, 4, 2).chunk(3, dim=-1)
            log_prob = discretized_logistic_mixture_log_prob(
                x, logit_weights, means, log_scales, self.num_levels
            )  # (B, C, H, W)
        return log_prob.flatten(1).sum(dim=1)

    # Objective

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        nll = -self.log_likelihood(x, self(x, self.batch_labels(y)))  # (B,) nats
        loss = bits_per_dim(nll.mean(), self.num_dims)  # the exact NLL: loss and bpd agree
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}/bpd", loss, on_step=False, on_epoch=True)
        return loss

    # The shared sampling call

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        labels: int | list[int] | None = None,
        temperature: float = 1.0,
        fast: bool = True,
    ) -> torch.Tensor:
        """Return ``num_samples`` images (N, C, H, W) in [-1, 1] drawn subpixel by subpixel.

        ``labels`` picks the classes of a conditional model (one class, or a list
        repeated to fill N). ``temperature`` sharpens (< 1) or flattens (> 1) every
        subpixel's distribution to p^(1/T); 0 takes the most likely level. ``fast``
        computes only what a subpixel can depend on; ``fast=False`` runs the whole
        network on the whole image for every subpixel. Both draw the same samples.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        label_ids = self.sample_labels(labels, num_samples)
        c, h, w = self.spec.shape
        # One uniform per subpixel, drawn before anything else: both paths use the same ones.
        uniform = torch.rand(num_samples, c, h, w, generator=generator, device=self.device)
        x = torch.zeros(num_samples, c, h, w, device=self.device)
        was_training = self.training
        self.eval()  # dropout off: sampling is deterministic given the uniforms
        try:
            draw = self._draw_fast if fast else self._draw_naive
            draw(x, uniform, label_ids, temperature)
        finally:
            self.train(was_training)
        return x

    def _draw_subpixel(
        self,
        x: torch.Tensor,
        params: torch.Tensor,
        uniform: torch.Tensor,
        channel: int,
        row: int,
        column: int,
        temperature: float,
    ) -> None:
        """Fill x[:, channel, row, column] from the parameters (N, C·P) of that pixel."""
        p = self.params_per_channel
        log_probs = self.subpixel_log_probs(params[:, channel * p : (channel + 1) * p])  # (N, L)
        index = inverse_cdf_sample(log_probs, uniform[:, channel, row, column], temperature)
        x[:, channel, row, column] = index_to_levels(index, self.num_levels)

    def _draw_naive(self, x, uniform, labels, temperature) -> None:
        c, h, w = self.spec.shape
        for row in range(h):
            for column in range(w):
                for channel in range(c):
                    params = self.network(x, labels)  # (N, C·P, H, W): everything, every time
                    self._draw_subpixel(
                        x, params[:, :, row, column], uniform, channel, row, column, temperature
                    )

    def _draw_fast(self, x, uniform, labels, temperature) -> None:
        c, h, w = self.spec.shape
        biases = self.network.class_biases(labels)
        for row in range(h):
            # What the rows above give row `row`: the vertical stack on rows 0 … row only
            # (it never looks down, and its row `row` input reaches no one yet).
            to_horizontal = [
                t[:, :, row : row + 1] for t in self.network.vertical(x[:, :, : row + 1], biases)
            ]  # (N, 2F, 1, W) each
            for column in range(w):
                # The horizontal stack on this row up to this column: it never looks right.
                inputs = [t[..., : column + 1] for t in to_horizontal]
                for channel in range(c):
                    params = self.network.horizontal(
                        x[:, :, row : row + 1, : column + 1], inputs, biases
                    )  # (N, C·P, 1, column+1)
                    self._draw_subpixel(
                        x, params[:, :, 0, column], uniform, channel, row, column, temperature
                    )
