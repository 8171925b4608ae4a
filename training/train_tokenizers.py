"""Rebuild the book's tokenizers (tfcourse/data/tokenizers/*.json) from the corpus's training split.

python training/train_tokenizers.py          # writes bpe-2048.json and wordpiece-2048.json
python training/train_tokenizers.py --check  # exits 1 if the shipped files differ from a fresh training run
"""

from __future__ import annotations

import argparse
import sys

from tfcourse import subword


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the shipped files, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for kind in subword.TOKENIZER_KINDS:
        fresh = subword.train_book_tokenizer(kind).to_str(pretty=True)
        target = subword._tokenizer_file(kind)
        if args.check:
            if not target.is_file() or target.read_text(encoding="utf-8") != fresh:
                stale.append(kind)
        else:
            with open(str(target), "w", encoding="utf-8") as out:
                out.write(fresh)
            print(f"wrote {target.name}")
    if stale:
        print(f"stale tokenizer files: {', '.join(stale)} (run python training/train_tokenizers.py)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
