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


class ByteTokenizer:
    """Maps text to its UTF-8 bytes: a fixed vocabulary of 256 ids that covers any text."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        """Return the UTF-8 bytes of ``text`` as ids."""
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        """Return the text of a sequence of byte ids; invalid UTF-8 becomes U+FFFD."""
        # A sampled sequence can stop inside a multi-byte character or hold byte
        # sequences that are not UTF-8; "replace" keeps decoding total.
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def state_dict(self) -> dict[str, Any]:
        """Return the tokenizer as plain values."""
        return {"kind": self.kind}


TOKENIZERS = {CharTokenizer.kind: CharTokenizer, ByteTokenizer.kind: ByteTokenizer}


def tokenizer_from_state(state: dict[str, Any]):
    """Return the tokenizer stored by ``state_dict()``."""
    kind = state.get("kind")
    if kind not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; known kinds: {sorted(TOKENIZERS)}")
    arguments = {k: v for k, v in state.items() if k != "kind"}
    return TOKENIZERS[kind](**arguments)
