"""Small images for autoregressive image models: 1,797 handwritten digits, 8x8 cells with 17 grey levels.

The images are the test part of the UCI "Optical Recognition of Handwritten Digits" data set (Alpaydin and
Kaynak, 1998; CC BY 4.0), the copy that scikit-learn ships; ``tools/build_digits.py`` derives
``data/digits.json.gz`` from it and ``data/PROVENANCE.md`` records the origin. Each cell counts the ink pixels
of a 4x4 block of the original 32x32 bitmap, so it is an integer from 0 (white) to 16 (fully inked).

An image becomes a sequence the way Image GPT and the Sparse Transformer flatten theirs: cells in raster order
(row by row), each grey level one token. :func:`to_sequences` puts a class token first, so that a model trained
on the sequences can be asked for a given digit::

    [CLASS_OFFSET + digit, cell(0, 0), cell(0, 1), ..., cell(7, 7)]

65 tokens, from a vocabulary of 27 (17 grey levels and 10 class tokens).

The held-out split (every fifth image of each digit) is never trained on.
"""

from __future__ import annotations

import functools
import gzip
import json
from importlib import resources

import torch

from tfcourse._checks import check_rank, check_tensor

__all__ = [
    "CLASS_OFFSET",
    "LEVELS",
    "SIDE",
    "SPLITS",
    "VOCAB_SIZE",
    "from_sequences",
    "load_digits",
    "provenance",
    "tile",
    "to_sequences",
]

SIDE = 8
"""Images are ``SIDE x SIDE`` cells."""
LEVELS = 17
"""Grey levels 0..16 (a cell counts the inked pixels of a 4x4 block)."""
CLASS_OFFSET = LEVELS
"""Token id of the class token for digit ``d`` is ``CLASS_OFFSET + d``."""
VOCAB_SIZE = LEVELS + 10
"""Grey levels plus one class token per digit."""
SPLITS = ("train", "heldout", "all")


@functools.lru_cache(maxsize=1)
def _payload() -> dict:
    raw = resources.files("tfcourse").joinpath("data", "digits.json.gz").read_bytes()
    return json.loads(gzip.decompress(raw))


@functools.lru_cache(maxsize=3)
def _split(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    payload = _payload()
    alphabet = {c: i for i, c in enumerate(payload["alphabet"])}
    images = torch.tensor([[alphabet[c] for c in row] for row in payload["images"]], dtype=torch.long)
    labels = torch.tensor([int(c) for c in payload["labels"]], dtype=torch.long)
    # Rank of each image among the images of its own digit: every fifth of each digit is held out.
    rank = torch.zeros_like(labels)
    for digit in range(10):
        where = labels == digit
        rank[where] = torch.arange(int(where.sum()))
    keep = {"train": rank % 5 != 4, "heldout": rank % 5 == 4, "all": rank >= 0}[split]
    return images[keep].view(-1, SIDE, SIDE), labels[keep]


def load_digits(split: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """The digits of one split: ``images`` ``(N, 8, 8)`` int64 in ``[0, 16]`` and ``labels`` ``(N,)`` in
    ``[0, 9]``. ``"heldout"`` is every fifth image of each digit (355 of them), ``"train"`` the other 1,442."""
    images, labels = _split(split)
    return images.clone(), labels.clone()


def to_sequences(images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Flatten ``(N, 8, 8)`` images into ``(N, 64)`` raster-order token ids, or ``(N, 65)`` with the class
    token ``CLASS_OFFSET + label`` in front when ``labels`` ``(N,)`` are given."""
    check_tensor("images", images)
    check_rank("images", images, 3)
    if tuple(images.shape[1:]) != (SIDE, SIDE):
        raise ValueError(f"images must have shape (N, {SIDE}, {SIDE}), got {tuple(images.shape)}")
    pixels = images.reshape(images.shape[0], SIDE * SIDE).long()  # (N, 64), row by row
    if labels is None:
        return pixels
    check_tensor("labels", labels)
    if tuple(labels.shape) != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    return torch.cat([CLASS_OFFSET + labels.long()[:, None], pixels], dim=1)  # (N, 65)


def from_sequences(ids: torch.Tensor) -> torch.Tensor:
    """Images ``(N, 8, 8)`` from the last 64 tokens of ``(N, T)`` ids (a class token in front is dropped);
    a class token where a pixel belongs (an untrained model may sample one) is shown as 0."""
    check_tensor("ids", ids)
    check_rank("ids", ids, 2)
    if ids.shape[1] < SIDE * SIDE:
        raise ValueError(f"ids need at least {SIDE * SIDE} tokens per row, got shape {tuple(ids.shape)}")
    pixels = ids[:, -SIDE * SIDE :]
    pixels = pixels.masked_fill(pixels >= LEVELS, 0)
    return pixels.reshape(-1, SIDE, SIDE)  # (N, 8, 8)


def tile(images: torch.Tensor, gap: int = 1) -> torch.Tensor:
    """One picture of a ``(R, C, h, w)`` grid of images: ``(R·(h+gap) − gap, C·(w+gap) − gap)`` float32, with
    NaN in the gaps (drawn as background by ``imshow``), so that a whole grid is one ``imshow`` call."""
    check_tensor("images", images)
    check_rank("images", images, 4)
    if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
        raise ValueError(f"gap must be a non-negative int, got {gap!r}")
    r, c, h, w = images.shape
    canvas = torch.full((r, c, h + gap, w + gap), float("nan"))
    canvas[:, :, :h, :w] = images.float()
    canvas = canvas.permute(0, 2, 1, 3).reshape(r * (h + gap), c * (w + gap))  # rows of images side by side
    return canvas[: r * (h + gap) - gap, : c * (w + gap) - gap]


def provenance() -> dict[str, str]:
    """Where the shipped images come from: source and licence, the file they were read from, its SHA-256."""
    payload = _payload()
    return {key: payload[key] for key in ("source", "file", "file_sha256")}
