"""Tokenizers whose whole state is plain values, so it travels inside a checkpoint."""

from __future__ import annotations

from typing import Any

from zoo.errors import ConfigError


class CharTokenizer:
    """Maps each character of a fixed vocabulary to an integer id."""

    kind = "char"

    def __init__(self, chars: str):
        if len(set(chars)) != len(chars):
            raise ConfigError("the vocabulary of a CharTokenizer must not repeat characters")
        self.chars = chars
        self._ids = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Return a tokenizer whose vocabulary is the sorted characters of ``text``."""
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        """Return the ids of ``text``; raise a clear error for characters outside the vocabulary."""
        unknown = sorted(set(text) - self._ids.keys())
        if unknown:
            raise ConfigError(
                f"the text holds characters the model never saw in training: {unknown!r}; "
                f"use only characters of its vocabulary: {self.chars!r}"
            )
        return [self._ids[c] for c in text]

    def decode(self, ids) -> str:
        """Return the text of a sequence of ids."""
        return "".join(self.chars[int(i)] for i in ids)

    def state_dict(self) -> dict[str, Any]:
        """Return the tokenizer as plain values."""
        return {"kind": self.kind, "chars": self.chars}


TOKENIZERS = {CharTokenizer.kind: CharTokenizer}


def tokenizer_from_state(state: dict[str, Any]):
    """Return the tokenizer stored by ``state_dict()``."""
    kind = state.get("kind")
    if kind not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; known kinds: {sorted(TOKENIZERS)}")
    arguments = {k: v for k, v in state.items() if k != "kind"}
    return TOKENIZERS[kind](**arguments)
