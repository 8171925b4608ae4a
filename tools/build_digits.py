"""Rebuild tfcourse/data/digits.json.gz, the 8x8 handwritten digits, from a scikit-learn wheel.

The images are the test part of the UCI "Optical Recognition of Handwritten Digits" data set (E. Alpaydin and
C. Kaynak, 1998; CC BY 4.0): 1,797 digits written by 13 people, each a 32x32 bitmap reduced to 8x8 cells that
count the ink pixels of a 4x4 block, so every cell is an integer 0..16. scikit-learn ships this copy as
``sklearn/datasets/data/digits.csv.gz`` (one image per row: 64 values in raster order, then the digit); this
script reads that file straight out of the wheel, so the book needs neither scikit-learn nor its dependencies.
Usage (the wheel comes from the package index):

    pip download --no-deps scikit-learn==1.9.1 -d /tmp/skl
    python tools/build_digits.py /tmp/skl/scikit_learn-1.9.1-*.whl

Each image is stored as a 64-character string, one character per cell (``0-9`` then ``a-g`` for 10..16). The
output is byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tfcourse" / "data" / "digits.json.gz"
MEMBER = "sklearn/datasets/data/digits.csv.gz"
DIGITS = "0123456789abcdefg"  # cell value v is DIGITS[v]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="a scikit-learn wheel (any platform: the data file is the same)")
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.wheel) as wheel:
        packed = wheel.read(MEMBER)
    images, labels = [], []
    for line in gzip.decompress(packed).decode("ascii").split():
        values = [int(v) for v in line.split(",")]
        if len(values) != 65 or not all(0 <= v <= 16 for v in values[:64]) or not 0 <= values[64] <= 9:
            raise ValueError(f"unexpected row in {MEMBER}: {line[:60]}...")
        images.append("".join(DIGITS[v] for v in values[:64]))
        labels.append(str(values[64]))
    payload = {
        "source": "UCI Optical Recognition of Handwritten Digits (test part; Alpaydin and Kaynak 1998), CC BY 4.0",
        "file": f"{MEMBER} of {args.wheel.name}",
        "file_sha256": hashlib.sha256(packed).hexdigest(),
        "alphabet": DIGITS,
        "images": images,
        "labels": "".join(labels),
    }
    data = json.dumps(payload, sort_keys=True, indent=0).encode("ascii")
    OUT.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    print(f"{len(images)} images -> {OUT.name} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
