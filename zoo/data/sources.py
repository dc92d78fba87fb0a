"""Where text comes from: files, folders of files and http(s) URLs, read through one reader.

Every text zoo reads (a corpus, a folder of corpora, a prompt file) is decoded here as
UTF-8 with an optional byte-order mark (Python's ``utf-8-sig``: a BOM never becomes a
character of the text), in chunks so that a corpus larger than memory streams through.
Bytes that are not UTF-8 raise one ConfigError naming the file, the byte offset and
the fix. Downloads stream in chunks into a partial file, under a size cap and a deadline.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from zoo.errors import ConfigError, DataNotFoundError, DownloadError

BOM = "\ufeff"  # U+FEFF, the byte-order mark: EF BB BF in UTF-8
CHUNK_BYTES = 1 << 22  # 4 MiB: what a reader decodes at a time


def strip_bom(text: str) -> str:
    """Return ``text`` without a leading byte-order mark (a prompt pasted from a BOM file)."""
    return text.removeprefix(BOM)


def iter_text(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Yield the text of a UTF-8 file in chunks of at most ``chunk_bytes`` bytes, BOM dropped.

    A character is never split between chunks. Raises DataNotFoundError for a missing
    file and ConfigError, naming the file and the byte offset, for bytes that are not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"text file not found: {path}")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes of the file read before this chunk
    with open(path, "rb") as file:
        while True:
            data = file.read(chunk_bytes)
            if offset == 0 and data.startswith(codecs.BOM_UTF8):
                data, offset = data[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
            pending = len(decoder.getstate()[0])  # bytes of a character the last chunk cut
            try:
                text = decoder.decode(data, final=not data)
            except UnicodeDecodeError as error:
                position = offset - pending + error.start
                raise ConfigError(
                    f"{path} is not UTF-8 text: byte {position} (0x{error.object[error.start]:02x})"
                    f" cannot be decoded; save the file as UTF-8 (e.g. iconv -f cp1252 -t utf-8 "
                    f"'{path}' > converted.txt) and use the converted file"
                ) from None
            offset += len(data)
            if text:
                yield text
            if not data:
                return


def read_text(path: str | Path) -> str:
    """Return the whole text of a small UTF-8 file (a prompt), read as :func:`iter_text` reads."""
    return "".join(iter_text(path))


def text_files(folder: str | Path) -> list[Path]:
    """Return the files of a folder of texts, recursively, sorted by their relative path.

    Hidden files and folders (``.git``, ``.DS_Store``) are skipped. Raises
    DataNotFoundError when there is none.
    """
    folder = Path(folder)
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not files:
        raise DataNotFoundError(
            f"no text files found under {folder}; pass a folder that holds some"
        )
    return files


def iter_texts(files: Iterable[Path], separator: str) -> Iterator[str]:
    """Yield the chunks of several files in turn, with ``separator`` between two files."""
    for index, path in enumerate(files):
        if index and separator:
            yield separator
        yield from iter_text(path)


def files_fingerprint(files: Iterable[Path]) -> list[list[Any]]:
    """Return what identifies the files' contents cheaply: path, size and modification time.

    A corpus is re-prepared when any of them changes (a file edited, added or removed).
    """
    return [[str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns] for path in files]


def url_cache_name(url: str) -> str:
    """Return the file name a URL is cached under: a hash of the URL, then its basename."""
    from urllib.parse import urlparse

    name = os.path.basename(urlparse(url).path) or "text.txt"
    return f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{name}"


def download(url: str, destination: Path, max_bytes: int, timeout_s: float) -> Path:
    """Return ``destination`` after streaming ``url`` into it, at most ``max_bytes`` bytes
    within ``timeout_s`` seconds.

    The body is written chunk by chunk into a partial file in the same folder, renamed
    into place once complete, so an interrupted download or a process downloading in
    parallel never leaves a half-written file under the final name. Raises DownloadError
    (one line: what was exceeded and the setting that raises it) for a body over the
    cap, a download past the deadline, or a URL that cannot be fetched.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=destination.parent, suffix=".part")
    deadline = time.monotonic() + timeout_s
    fix = "or download the file yourself and pass its path as data.path"
    too_slow = f"{url} took longer than data.download_timeout_s={timeout_s:g} s; raise it, {fix}"
    received = 0
    try:
        with (
            os.fdopen(handle, "wb") as file,
            urllib.request.urlopen(url, timeout=timeout_s) as response,
        ):
            # read1: whatever one receive returns, so the deadline is checked however slowly
            # the server sends (read(n) would wait for n bytes).
            while chunk := response.read1(1 << 16):
                received += len(chunk)
                if received > max_bytes:
                    raise DownloadError(
                        f"{url} sends more than data.max_download_mb={max_bytes / 2**20:g} MB; "
                        f"raise data.max_download_mb, {fix}"
                    )
                if time.monotonic() > deadline:
                    raise DownloadError(too_slow)
                file.write(chunk)
        os.replace(partial, destination)
    except DownloadError:
        raise
    except TimeoutError:
        raise DownloadError(too_slow) from None
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"could not download {url}: {error}; check the URL, {fix}") from None
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return destination
