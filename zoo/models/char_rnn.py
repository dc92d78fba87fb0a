"""char-RNN: a character-level LSTM or GRU language model (Karpathy's char-rnn).

Embedding → stacked LSTM/GRU → linear read-out to the vocabulary. Trained on
random windows with next-character cross-entropy; reports nats/char and
perplexity; samples a character at a time, carrying the recurrent state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.data.tokenizers import tokenizer_from_state
from zoo.errors import ConfigError
from zoo.models.base import LanguageModel
from zoo.nn.decoding import sample_from_logits, truncate_at_stop

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class CharRNN(LanguageModel):
    """A recurrent language model over the tokenizer's characters."""

    family = "char_rnn"

    def __init__(
        self,
        spec: dict[str, Any],
        cell: str = "lstm",
        embedding_dim: int = 64,
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        scheduler_interval: str = "epoch",
    ):
        optimizer = optimizer or {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 2e-3}
        super().__init__(spec, optimizer, scheduler, scheduler_interval)
        self.save_hyperparameters()
        if self.spec.modality != "text":
            raise ConfigError(
                "the char-RNN models text; choose a text data set (e.g. data=shakespeare)"
            )
        if cell not in CELLS:
            raise ConfigError(f"model.cell must be one of {sorted(CELLS)}, got {cell!r}")
        self.tokenizer = tokenizer_from_state(self.spec.tokenizer)
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

    # The shared sampling call

    @torch.no_grad()
    def sample(
        self,
        num_samples: int,
        *,
        generator: torch.Generator | None = None,
        prompt: str = "\n",
        max_new_tokens: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | None = None,
    ) -> list[str]:
        """Return ``num_samples`` texts: the prompt, then ``max_new_tokens`` sampled characters.

        Each text ends after the first ``stop`` string its generated part holds, if any.
        """
        if not prompt:
            raise ConfigError(
                "the char-RNN needs a prompt of at least one character (e.g. prompt='\\n')"
            )
        tokens = torch.tensor([self.tokenizer.encode(prompt)] * num_samples, device=self.device)
        logits, state = self(tokens)  # read the whole prompt once, keep the state
        generated = []
        for _ in range(max_new_tokens):
            next_token = sample_from_logits(
                logits[:, -1],
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
            )  # (B,)
            generated.append(next_token)
            logits, state = self(next_token[:, None], state)
        ids = torch.stack(generated, dim=1).tolist() if generated else [[]] * num_samples
        return [prompt + truncate_at_stop(self.tokenizer.decode(row), stop) for row in ids]
