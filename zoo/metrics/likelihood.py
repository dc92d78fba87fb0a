"""Likelihood figures in the field's units: bits/dim for images; nats, perplexity and bits per
character for text."""

from __future__ import annotations

import math

import torch


def bits_per_dim(nll_nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Return a negative log-likelihood of whole examples, in nats, as bits per dimension.

    ``num_dims`` is C·H·W: the number of discrete values the likelihood covers.
    """
    return nll_nats / (num_dims * math.log(2.0))


def bits_per_character(nll_nats: torch.Tensor | float, num_chars: torch.Tensor | float):
    """Return a negative log-likelihood of a text, in nats, as bits per character of the text.

    The unit that compares language models over different tokenizers (characters, bytes,
    BPE): for a character-level model it is the loss per token divided by ln 2.
    """
    return nll_nats / (num_chars * math.log(2.0))


def perplexity(nats_per_token: torch.Tensor | float) -> torch.Tensor | float:
    """Return the perplexity of a mean negative log-likelihood per token in nats."""
    if isinstance(nats_per_token, torch.Tensor):
        return torch.exp(nats_per_token)
    return math.exp(nats_per_token)
