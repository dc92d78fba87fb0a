"""Judge generated play text: speaker format and real words.

    python bench/judge_text.py path/to/samples.txt [more.txt ...]

Prints, per file: the share of speeches (blank-line separated blocks after the
first) that open with a speaker line such as "ROMEO:", and the share of
generated words that occur in the Shakespeare corpus — the same two figures for
a character-shuffled copy of the corpus come first as the floor.
"""

import random
import re
import sys

from zoo.data.shakespeare import shakespeare_text

SPEAKER = re.compile(r"^[A-Z][A-Za-z' .-]*:$")
WORD = re.compile(r"[A-Za-z']+")


def judge(text: str, vocabulary: set[str]) -> dict[str, float]:
    """Return the speaker-line share of speeches and the real-word share of words in ``text``."""
    samples = [s.split("=====\n", 1)[-1] for s in text.split("===== sample")[1:]] or [text]
    speeches = [block for s in samples for block in s.split("\n\n")[1:-1] if block.strip()]
    words = [w.lower() for s in samples for w in WORD.findall(s)]
    return {
        "speeches": len(speeches),
        "speaker_line_share": sum(bool(SPEAKER.match(b.strip().splitlines()[0])) for b in speeches)
        / max(1, len(speeches)),
        "real_word_share": sum(w in vocabulary for w in words) / max(1, len(words)),
    }


def main(paths: list[str]) -> None:
    corpus = shakespeare_text()
    vocabulary = {w.lower() for w in WORD.findall(corpus)}
    characters = list(corpus[:20000])
    random.Random(0).shuffle(characters)
    print(f"{'shuffled characters':<60} {judge(''.join(characters), vocabulary)}")
    print(f"{'real text (first 20,000 characters)':<60} {judge(corpus[:20000], vocabulary)}")
    for path in paths:
        with open(path, encoding="utf-8") as file:
            print(f"{path:<60} {judge(file.read(), vocabulary)}")


if __name__ == "__main__":
    main(sys.argv[1:])
