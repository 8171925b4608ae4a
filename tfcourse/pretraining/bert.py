"""BERT's pre-training data: masked-LM corruption and next-sentence pairs (Devlin et al. 2019, §3.1)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from tfcourse._checks import check_nonnegative_int, check_positive_int, check_probability, check_rank
from tfcourse.pretraining._common import IGNORE_INDEX, check_id, check_ids, uniform

__all__ = ["IS_NEXT", "NOT_NEXT", "MaskedLM", "PackedPair", "SentencePair", "mlm_mask", "nsp_pairs", "pack_pair"]

IS_NEXT = 0
"""The NSP label saying that B is the sentence that follows A (Hugging Face's convention)."""
NOT_NEXT = 1
"""The NSP label saying that B is a random sentence from another document."""


# ---------------------------------------------------------------------------------------------------------
# Masked language modelling (BERT)


class MaskedLM(NamedTuple):
    """What :func:`mlm_mask` returns; every field has the shape of ``input_ids``."""

    input_ids: torch.Tensor
    """The corrupted ids (``[MASK]``, random or original at selected positions; the original elsewhere)."""
    labels: torch.Tensor
    """``torch.long``: the original id at selected positions, ``IGNORE_INDEX`` (-100) elsewhere."""
    selected: torch.Tensor
    """bool, True at the positions the loss is computed on (all three groups)."""
    masked: torch.Tensor
    """bool, True where the token became the mask token."""
    randomized: torch.Tensor
    """bool, True where the token became a random id (which may, rarely, equal the original)."""


def mlm_mask(
    input_ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids: Sequence[int] = (),
    pad_token_id: int | None = None,
    mlm_probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    generator: torch.Generator | None = None,
) -> MaskedLM:
    """BERT's masked-LM corruption (Devlin et al. 2019, §3.1 and appendix A.1).

    Each real token is selected independently with probability ``mlm_probability``, as in Hugging Face's
    ``DataCollatorForLanguageModeling`` (BERT's own pipeline took exactly ``round(0.15·n)`` per sequence:
    the same rate on average). One uniform draw ``u`` per token splits the selection: ``u < mask_fraction``
    → mask token, the next ``random_fraction`` → random id, the rest unchanged. Keeping some tokens visible
    softens the mismatch with fine-tuning, where ``[MASK]`` never appears.

    Random ids are drawn uniformly from the vocabulary **without** the special, mask and pad tokens. BERT and
    Hugging Face draw from all ids; for a real vocabulary the difference is negligible, and excluding them
    keeps ``[PAD]`` or ``[SEP]`` out of sentences and the "random" group apart from the "mask" group. A
    random id may still equal the original token (probability 1/V' for V' allowed ids).

    Args:
        input_ids: integer ids of any shape, e.g. ``(B, T)``, each in ``[0, vocab_size)``.
        mask_token_id: id of ``[MASK]``.
        vocab_size: V, number of ids.
        special_token_ids: ids that are never selected nor drawn (``[CLS]``, ``[SEP]``, ...).
        pad_token_id: padding id, treated as special; ``None`` if the batch has no padding.
        mlm_probability: chance that a real token is selected.
        mask_fraction: share of the selected tokens replaced by ``mask_token_id``.
        random_fraction: share replaced by a random id; ``mask_fraction + random_fraction <= 1``.
        generator: source of randomness (any device); ``None`` uses the global generator.

    Returns:
        :class:`MaskedLM` with the corrupted ids, the labels and the boolean groups.
    """
    vocab_size = check_positive_int("vocab_size", vocab_size)
    check_ids("input_ids", input_ids, vocab_size)
    excluded = {check_id("mask_token_id", mask_token_id, vocab_size)}
    excluded.update(check_id(f"special_token_ids[{i}]", s, vocab_size) for i, s in enumerate(special_token_ids))
    if pad_token_id is not None:
        excluded.add(check_id("pad_token_id", pad_token_id, vocab_size))
    p = check_probability("mlm_probability", mlm_probability)
    p_mask = check_probability("mask_fraction", mask_fraction)
    p_random = check_probability("random_fraction", random_fraction)
    if p_mask + p_random > 1.0 + 1e-12:
        raise ValueError(f"mask_fraction + random_fraction must be at most 1, got {mask_fraction} + {random_fraction}")
    device, shape = input_ids.device, tuple(input_ids.shape)
    allowed = torch.ones(vocab_size, dtype=torch.bool, device=device)  # (V,) ids a random token may take
    allowed[sorted(excluded)] = False
    allowed_ids = allowed.nonzero().squeeze(1)  # (V',)
    if p_random > 0 and allowed_ids.numel() == 0:
        raise ValueError(f"random_fraction={random_fraction} but every one of the {vocab_size} ids is special")

    eligible = allowed[input_ids]  # a token is eligible exactly when it is not special
    selected = eligible & (uniform(shape, generator, device) < p)
    u = uniform(shape, generator, device)  # one draw decides the group, so the groups never overlap
    masked = selected & (u < p_mask)
    randomized = selected & (u >= p_mask) & (u < p_mask + p_random)
    has_random = allowed_ids.numel() > 0
    random_ids = allowed_ids[uniform(shape, generator, device, allowed_ids.numel())] if has_random else input_ids
    corrupted = torch.where(masked, torch.full_like(input_ids, mask_token_id), input_ids)
    corrupted = torch.where(randomized, random_ids.to(input_ids.dtype), corrupted)
    labels = torch.where(selected, input_ids.long(), IGNORE_INDEX)
    return MaskedLM(corrupted, labels, selected, masked, randomized)


# ---------------------------------------------------------------------------------------------------------
# Next-sentence prediction (BERT)


@dataclass(frozen=True)
class SentencePair:
    """One NSP example. Sentences are whatever the documents hold (token-id lists, or strings in the book)."""

    a: Any
    b: Any
    label: int
    """``IS_NEXT`` (0) if ``b`` follows ``a`` in its document, ``NOT_NEXT`` (1) otherwise."""
    a_source: tuple[int, int]
    """``(document, sentence)`` index of ``a``."""
    b_source: tuple[int, int]
    """``(document, sentence)`` index of ``b``."""


def _check_documents(documents: Sequence[Sequence[Any]]) -> None:
    if isinstance(documents, str) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of documents, got {type(documents).__name__}")
    if len(documents) < 2:
        raise ValueError(f"documents must hold at least 2 documents (NotNext needs another one), got {len(documents)}")
    for i, doc in enumerate(documents):
        if isinstance(doc, str) or not isinstance(doc, Sequence):
            raise TypeError(f"documents[{i}] must be a list of sentences, got {type(doc).__name__}")
        if len(doc) == 0:
            raise ValueError(f"documents[{i}] is empty")
    if all(len(doc) < 2 for doc in documents):
        lengths = [len(doc) for doc in documents]
        raise ValueError(f"no document has two sentences in a row to pair, got document lengths {lengths}")


def _pick(u: float, n: int) -> int:
    """Turn a uniform draw in [0, 1) into a uniform index in [0, n)."""
    return min(int(u * n), n - 1)  # min guards against u * n rounding up to n


def nsp_pairs(
    documents: Sequence[Sequence[Any]],
    *,
    is_next_probability: float = 0.5,
    generator: torch.Generator | None = None,
) -> list[SentencePair]:
    """Next-sentence-prediction pairs (Devlin et al. 2019, §3.1, "Task #2").

    Every sentence that has a successor in its document becomes an ``a``, in order. With probability
    ``is_next_probability`` its ``b`` is that successor (``IS_NEXT``); otherwise, as in BERT's
    ``create_pretraining_data.py``, ``b`` is a uniformly chosen sentence of a uniformly chosen *other*
    document (``NOT_NEXT``), so a NotNext pair can never be a true continuation by accident.

    Args:
        documents: list of documents, each a non-empty list of sentences (usually lists of token ids;
            sentences are not inspected, so strings work too). At least 2 documents.
        is_next_probability: chance of a true next sentence.
        generator: source of randomness; ``None`` uses the global generator.

    Returns:
        One :class:`SentencePair` per sentence with a successor, in document order.
    """
    _check_documents(documents)
    p = check_probability("is_next_probability", is_next_probability)
    anchors = [(d, i) for d, doc in enumerate(documents) for i in range(len(doc) - 1)]
    draws = uniform((len(anchors), 3), generator, torch.device("cpu")).tolist()  # coin, document, sentence
    pairs = []
    for (d, i), (coin, u_doc, u_sent) in zip(anchors, draws, strict=True):
        if coin < p:
            b_source, label = (d, i + 1), IS_NEXT
        else:
            other = _pick(u_doc, len(documents) - 1)  # uniform over the other documents:
            other += int(other >= d)  # skip the anchor's own
            b_source, label = (other, _pick(u_sent, len(documents[other]))), NOT_NEXT
        pairs.append(SentencePair(documents[d][i], documents[b_source[0]][b_source[1]], label, (d, i), b_source))
    return pairs


class PackedPair(NamedTuple):
    """A sentence pair as BERT input; both fields are ``(T,)`` ``torch.long``."""

    input_ids: torch.Tensor
    """``[CLS] A [SEP] B [SEP]``."""
    token_type_ids: torch.Tensor
    """0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``: selects the segment embedding."""


def _as_id_list(name: str, seq: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(seq, torch.Tensor):
        check_rank(name, seq, 1)
        seq = seq.tolist()
    if isinstance(seq, str) or not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in seq):
        raise TypeError(f"{name} must be a sequence of int token ids, got {seq!r:.60}")
    if len(seq) == 0:
        raise ValueError(f"{name} is empty; a pair needs a token in each segment")
    return [int(t) for t in seq]


def pack_pair(
    a: Sequence[int] | torch.Tensor,
    b: Sequence[int] | torch.Tensor,
    *,
    cls_token_id: int,
    sep_token_id: int,
    max_length: int | None = None,
    device: torch.device | str | None = None,
) -> PackedPair:
    """Pack two segments as ``[CLS] A [SEP] B [SEP]`` with segment ids (Devlin et al. 2019, §3, Figure 2).

    Too long a pair loses tokens from the end of the *longer* segment, one at a time (``B`` on ties), as in
    BERT's ``truncate_seq_pair``, so the shorter segment keeps as much as possible.

    Args:
        a: first segment, token ids (list or 1-D tensor), non-empty.
        b: second segment, likewise.
        cls_token_id: id of ``[CLS]``.
        sep_token_id: id of ``[SEP]``.
        max_length: total length with the special tokens, at least 5; ``None`` keeps everything.
        device: device of the result.

    Returns:
        :class:`PackedPair` of ``(T,)`` tensors with ``T = len(A) + len(B) + 3 <= max_length``.
    """
    a, b = _as_id_list("a", a), _as_id_list("b", b)
    check_nonnegative_int("cls_token_id", cls_token_id)
    check_nonnegative_int("sep_token_id", sep_token_id)
    if max_length is not None:
        if check_positive_int("max_length", max_length) < 5:
            raise ValueError(f"max_length must be at least 5 ([CLS] A [SEP] B [SEP]), got {max_length}")
        while len(a) + len(b) > max_length - 3:
            (a if len(a) > len(b) else b).pop()
    ids = [cls_token_id, *a, sep_token_id, *b, sep_token_id]
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return PackedPair(torch.tensor(ids, device=device), torch.tensor(types, device=device))
