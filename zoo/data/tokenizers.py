"""Tokenizers whose whole state is plain values, so it travels inside a checkpoint.

Three kinds: ``char`` (the characters of a corpus), ``byte`` (UTF-8 bytes, 256 ids) and
``bpe`` (byte-level byte-pair encoding, GPT-2's scheme, learned from a corpus with
Hugging Face ``tokenizers``; its state is the tokenizer's JSON as one string). Each
encodes text to ids (``encode``, a list; ``encode_array``, a NumPy array for whole
corpora), decodes ids to text, and says how many characters each id starts
(``char_counts``), from which bits per character follow for any kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import Any

import numpy as np

from zoo.errors import ConfigError

MAX_CODE_POINT = 0x110000  # one past the last Unicode code point


def code_points(text: str) -> np.ndarray:
    """Return the Unicode code points of ``text``, (len(text),) uint32."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def starts_a_character(byte_values: np.ndarray) -> np.ndarray:
    """Return, per UTF-8 byte, whether it starts a character (is not a 10xxxxxx continuation)."""
    return (byte_values & 0xC0) != 0x80


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

    def _refuse_unknown(self, unknown: Iterable[str]) -> None:
        raise ConfigError(
            f"the text holds characters the model never saw in training: {sorted(unknown)!r}; "
            f"use only characters of its vocabulary: {self.chars!r}"
        )

    def encode(self, text: str) -> list[int]:
        """Return the ids of ``text``; raise a clear error for characters outside the vocabulary."""
        unknown = set(text) - self._ids.keys()
        if unknown:
            self._refuse_unknown(unknown)
        return [self._ids[c] for c in text]

    @cached_property
    def _id_of_code_point(self) -> np.ndarray:
        table = np.full(MAX_CODE_POINT, -1, dtype=np.int32)  # 4.4 MB: one entry a code point
        table[code_points(self.chars)] = np.arange(len(self.chars), dtype=np.int32)
        return table

    def encode_array(self, text: str) -> np.ndarray:
        """Return the ids of ``text`` as int64, (len(text),), by table lookup (no Python loop)."""
        ids = self._id_of_code_point[code_points(text)]
        if (ids < 0).any():
            self._refuse_unknown({chr(c) for c in code_points(text)[ids < 0]})
        return ids.astype(np.int64)

    def decode(self, ids) -> str:
        """Return the text of a sequence of ids."""
        return "".join(self.chars[int(i)] for i in ids)

    def char_counts(self) -> list[int]:
        """Return, per id, the number of characters it starts: 1 for every character."""
        return [1] * self.vocab_size

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

    def encode_array(self, text: str) -> np.ndarray:
        """Return the UTF-8 bytes of ``text`` as int64 ids."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids) -> str:
        """Return the text of a sequence of byte ids; invalid UTF-8 becomes U+FFFD."""
        # A sampled sequence can stop inside a multi-byte character or hold byte
        # sequences that are not UTF-8; "replace" keeps decoding total.
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def char_counts(self) -> list[int]:
        """Return, per byte value, 1 if it starts a UTF-8 character, 0 for a continuation byte."""
        return starts_a_character(np.arange(256)).astype(int).tolist()

    def state_dict(self) -> dict[str, Any]:
        """Return the tokenizer as plain values."""
        return {"kind": self.kind}


def byte_level_alphabet() -> dict[int, str]:
    """Return GPT-2's map of the 256 byte values to printable characters (byte-level BPE's
    alphabet, Radford et al. 2019, ``bytes_to_unicode``): printable Latin-1 bytes map to
    themselves, the others to code points from 256 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [b for b in range(256) if b not in printable]
    return {
        **{b: chr(b) for b in printable},
        **{b: chr(256 + n) for n, b in enumerate(others)},
    }


class BPETokenizer:
    """Byte-level byte-pair encoding (GPT-2's scheme, Sennrich et al. 2016 on UTF-8 bytes),
    learned from a corpus with Hugging Face ``tokenizers``.

    Its first 256 ids are the byte values, so it encodes any text, including characters
    the corpus never held, and ``decode(encode(text)) == text``. The state is the
    tokenizer's JSON as one string: a checkpoint holding it loads with
    ``weights_only=True`` and rebuilds the tokenizer with nothing else.
    """

    kind = "bpe"

    def __init__(self, json: str):
        from tokenizers import Tokenizer

        self.json = json
        self._tokenizer = Tokenizer.from_str(json)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        """Return a tokenizer of at most ``vocab_size`` ids learned from ``texts`` (an iterable
        of strings, read once); fewer where the corpus has fewer pairs to merge."""
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 256:
            raise ConfigError(
                f"a byte-level BPE vocabulary holds the 256 byte values and the merges: "
                f"data.vocab_size must be at least 256, got {vocab_size}"
            )
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte: any text encodes
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer.to_str())

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Return the ids of ``text``."""
        return self._tokenizer.encode(text).ids

    def encode_array(self, text: str, piece_chars: int = 1 << 18) -> np.ndarray:
        """Return the ids of ``text`` as int64, encoding pieces of it in parallel.

        Pieces end after a newline, where byte-level BPE's pre-tokenizer splits anyway.
        """
        pieces, start = [], 0
        while start < len(text):
            end = text.find("\n", start + piece_chars) + 1 or len(text)
            pieces.append(text[start:end])
            start = end
        encodings = self._tokenizer.encode_batch(pieces)
        ids = [np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)

    def decode(self, ids) -> str:
        """Return the text of a sequence of ids; bytes that are not UTF-8 become U+FFFD."""
        return self._tokenizer.decode([int(i) for i in ids])

    def char_counts(self) -> list[int]:
        """Return, per id, the number of characters its bytes start."""
        byte_of = {char: byte for byte, char in byte_level_alphabet().items()}
        counts = []
        for index in range(self.vocab_size):
            token = self._tokenizer.id_to_token(index)
            values = np.array([byte_of[char] for char in token], dtype=np.int64)
            counts.append(int(starts_a_character(values).sum()))
        return counts

    def state_dict(self) -> dict[str, Any]:
        """Return the tokenizer as plain values: its kind and its JSON."""
        return {"kind": self.kind, "json": self.json}


TOKENIZERS = {
    CharTokenizer.kind: CharTokenizer,
    ByteTokenizer.kind: ByteTokenizer,
    BPETokenizer.kind: BPETokenizer,
}
Tokenizer = CharTokenizer | ByteTokenizer | BPETokenizer


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """Return the tokenizer stored by ``state_dict()``."""
    kind = state.get("kind")
    if kind not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; known kinds: {sorted(TOKENIZERS)}")
    arguments = {k: v for k, v in state.items() if k != "kind"}
    return TOKENIZERS[kind](**arguments)
