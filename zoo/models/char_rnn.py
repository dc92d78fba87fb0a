"""char-RNN: a character-level LSTM or GRU language model (Karpathy's char-rnn).

Embedding → stacked LSTM/GRU → linear read-out to the vocabulary. Trained on
random windows with next-character cross-entropy; reports nats/char and
perplexity; samples a character at a time, carrying the recurrent state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.models.base import LanguageModel, check_fractions, check_sizes
from zoo.nn.decoding import StopTracker, sample_from_logits
from zoo.nn.schedules import COSINE_OVER_THE_RUN

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class CharRNN(LanguageModel):
    """A recurrent language model over the tokenizer's characters."""

    family = "char_rnn"
    compiled_networks = ("rnn",)

    def __init__(
        self,
        spec: dict[str, Any],
        cell: str = "lstm",
        embedding_dim: int = 64,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        compile: bool = False,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = COSINE_OVER_THE_RUN,
        scheduler_interval: str = "epoch",
    ):
        optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 3e-3}
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        check_sizes(embedding_dim=embedding_dim, hidden_size=hidden_size, num_layers=num_layers)
        check_fractions(dropout=dropout)
        if cell not in CELLS:
            raise ConfigError(f"model.cell must be one of {sorted(CELLS)}, got {cell!r}")
        vocab_size = self.spec.vocab_size
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = CELLS[cell](
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor, state=None):
        """Return next-token logits (B, T, V) and the recurrent state after the last token."""
        h = self.embedding(tokens)  # (B, T, E)
        h, state = self.rnn(h, state)  # (B, T, H)
        return self.head(self.dropout(h)), state

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
        stop_ids: list[int] | None = None,
    ) -> torch.Tensor:
        """Return ``idx`` (B, T) followed by up to ``max_new_tokens`` sampled characters.

        The prompt is read once; each new character then advances the recurrent state by
        one step. Generation ends early once every row has produced ``stop_ids``.
        """
        stop = StopTracker(stop_ids, idx)
        logits, state = self(idx)  # (B, T, V): the whole prompt, once
        for _ in range(max_new_tokens):
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
            logits, state = self(next_token[:, None], state)  # (B, 1, V)
        return idx
