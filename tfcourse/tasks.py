"""Small tasks cut from the corpus for the book's trained experiments (BERT in chapter 8, T5 in chapter 9).

The corpus (:mod:`tfcourse.corpus`) stores each play as speeches, ``"SPEAKER:\\nline\\nline"`` separated by
blank lines. This module turns that into what pre-training and fine-tuning need:

- :func:`speeches`: one play as a list of :class:`Speech` (speaker, text, play);
- :func:`genre_split`: the plays of two genres split into training and evaluation plays, so that a
  genre classifier is scored on plays it never saw (character names cannot give the answer away);
- :func:`pad_rows`: ragged id lists → a right-padded ``(B, T)`` tensor and its ``(B, T)`` validity mask;
- :func:`collate_pairs`: next-sentence pairs (:func:`tfcourse.pretraining.nsp_pairs`) → one padded BERT batch
  of ``[CLS] A [SEP] B [SEP]`` inputs with segment ids and labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from tfcourse._checks import check_nonnegative_int, check_positive_int
from tfcourse.pretraining import SentencePair, pack_pair

__all__ = ["GENRE_EVAL_PLAYS", "PairBatch", "Speech", "collate_pairs", "genre_split", "pad_rows", "speeches"]

GENRE_EVAL_PLAYS = ("hamlet", "twelfth-night")
"""Plays whose speeches only ever *evaluate* a genre classifier: one tragedy (held out of all training in the
book) and one comedy."""


class Speech(NamedTuple):
    """One speech of a play: who speaks, what they say (lines joined by newlines), and the play's name."""

    speaker: str
    text: str
    play: str


def speeches(name: str) -> list[Speech]:
    """The speeches of play ``name`` in order (see :func:`tfcourse.corpus.play_text`)."""
    from tfcourse.corpus import play_text

    out = []
    for block in play_text(name).split("\n\n"):
        head, _, body = block.strip("\n").partition("\n")
        if head.endswith(":") and body.strip():
            out.append(Speech(head[:-1], body.strip(), name))
    return out


def genre_split(
    genres: Sequence[str] = ("comedies", "tragedies"), eval_plays: Sequence[str] = GENRE_EVAL_PLAYS
) -> tuple[dict[str, str], dict[str, str]]:
    """Plays of ``genres`` as ``(train, evaluation)`` dicts from play name to genre.

    Raises:
        ValueError: for an unknown genre or evaluation play, or an evaluation play of another genre.
    """
    from tfcourse.corpus import plays

    table = {name: play.genre for name, play in plays().items()}
    known = sorted(set(table.values()))
    for genre in genres:
        if genre not in known:
            raise ValueError(f"unknown genre {genre!r}; the corpus has {', '.join(known)}")
    for name in eval_plays:
        if name not in table:
            raise ValueError(f"no play named {name!r} in the corpus")
        if table[name] not in genres:
            raise ValueError(f"evaluation play {name!r} is a {table[name][:-1]}, not one of {tuple(genres)}")
    chosen = {name: genre for name, genre in table.items() if genre in genres}
    train = {n: g for n, g in chosen.items() if n not in eval_plays}
    return train, {n: chosen[n] for n in eval_plays}


def pad_rows(rows: Sequence[Sequence[int]], pad_value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ragged id lists: ``(B, T)`` long ids (``T`` = the longest row) and ``(B, T)`` bool, True at
    real tokens."""
    if isinstance(rows, str) or not isinstance(rows, Sequence) or len(rows) == 0:
        raise ValueError(f"rows must be a non-empty list of id lists, got {rows!r:.60}")
    width = max(len(row) for row in rows)
    if width == 0:
        raise ValueError("every row is empty")
    ids = torch.full((len(rows), width), pad_value, dtype=torch.long)  # (B, T)
    valid = torch.zeros(len(rows), width, dtype=torch.bool)  # (B, T)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        valid[r, : len(row)] = True
    return ids, valid


class PairBatch(NamedTuple):
    """A padded batch of BERT sentence pairs; tensors are ``(B, T)`` except ``labels`` ``(B,)``."""

    input_ids: torch.Tensor
    """``[CLS] A [SEP] B [SEP]`` then padding."""
    token_type_ids: torch.Tensor
    """The segment ids, 0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]`` and 0 on padding."""
    valid: torch.Tensor
    """bool, True at real tokens."""
    labels: torch.Tensor
    """NSP labels, ``IS_NEXT`` (0) or ``NOT_NEXT`` (1)."""


def collate_pairs(
    pairs: Sequence[SentencePair],
    *,
    cls_token_id: int,
    sep_token_id: int,
    pad_token_id: int = 0,
    max_length: int = 64,
) -> PairBatch:
    """Pack sentence pairs of token-id lists with :func:`~tfcourse.pretraining.pack_pair` (truncating the
    longer segment first) and pad them into one :class:`PairBatch`."""
    if isinstance(pairs, SentencePair) or not isinstance(pairs, Sequence) or len(pairs) == 0:
        raise ValueError("pairs must be a non-empty list of SentencePair")
    check_positive_int("max_length", max_length)
    check_nonnegative_int("pad_token_id", pad_token_id)
    packed = [
        pack_pair(p.a, p.b, cls_token_id=cls_token_id, sep_token_id=sep_token_id, max_length=max_length) for p in pairs
    ]
    ids, valid = pad_rows([p.input_ids.tolist() for p in packed], pad_token_id)
    types, _ = pad_rows([p.token_type_ids.tolist() for p in packed], 0)
    labels = torch.tensor([p.label for p in pairs], dtype=torch.long)
    return PairBatch(ids, types, valid, labels)
