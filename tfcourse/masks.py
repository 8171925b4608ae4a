"""Attention masks: the one convention used everywhere in tfcourse.

**A mask is a** ``torch.bool`` **tensor in which True means "this query may attend to this key".** It
broadcasts to the scores' shape ``(B, H, Tq, Tk)``: rows are queries, columns are keys. Masks combine
with ``&`` (a pair is allowed only if every mask allows it); additive float biases (relative positions,
ALiBi-style penalties) combine with ``+``. :func:`mask_to_bias` is the single place where a boolean mask
becomes a float bias, using ``torch.finfo(dtype).min`` rather than a made-up large negative constant
(minus a billion overflows to ``-inf`` in float16 and turns a fully masked row into NaN).

A batch of two sequences of lengths 3 and 2, padded to T = 3, with a causal mask (``1`` = may attend)::

    lengths_to_mask([3, 2])  ->  [[1, 1, 1],
                                  [1, 1, 0]]            (B, T): which tokens are real

    attention_mask(valid, causal=True)  ->  (B, 1, Tq, Tk)

        sequence 0        sequence 1
        k0 k1 k2          k0 k1 k2
    q0   1  0  0      q0   1  0  0
    q1   1  1  0      q1   1  1  0
    q2   1  1  1      q2   0  0  0    <- q2 of sequence 1 is padding: its whole row is masked

Masking the padded *query* rows (not only the padded keys) is the subtle part: a padded query still
produces an output row, and unless it is masked or ignored in the loss it carries garbage into the model.
A fully masked row gives an output of zeros, never NaN, in :func:`tfcourse.attention.scaled_dot_product_attention`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tfcourse._checks import check_bool, check_nonnegative_int, check_rank, check_tensor

__all__ = ["attention_mask", "causal_mask", "lengths_to_mask", "mask_to_bias"]


def lengths_to_mask(
    lengths: torch.Tensor | Sequence[int], max_len: int | None = None, *, device: torch.device | None = None
) -> torch.Tensor:
    """Turn sequence lengths into a validity mask by broadcasting ``arange(T) < lengths[:, None]``.

    Args:
        lengths: ``(B,)`` integer tensor or sequence of ints, each in ``[0, max_len]``.
        max_len: padded length T; defaults to ``max(lengths)``.
        device: where to build the mask; defaults to ``lengths.device``.

    Returns:
        ``(B, T)`` bool tensor, True at real tokens and False at padding.
    """
    if not isinstance(lengths, torch.Tensor):
        lengths = torch.as_tensor(list(lengths), dtype=torch.long, device=device)
    check_rank("lengths", lengths, 1)
    if lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must hold integers, got dtype {lengths.dtype}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"lengths must be non-negative, got {lengths.tolist()}")
    longest = int(lengths.max()) if lengths.numel() else 0
    if max_len is None:
        max_len = longest
    check_nonnegative_int("max_len", max_len)
    if longest > max_len:
        raise ValueError(f"a length {longest} exceeds max_len={max_len}")
    device = device or lengths.device
    positions = torch.arange(max_len, device=device)  # (T,)
    return positions[None, :] < lengths.to(device)[:, None]  # (1, T) < (B, 1) -> (B, T)


def causal_mask(tq: int, tk: int | None = None, *, device: torch.device | None = None) -> torch.Tensor:
    """Look-ahead mask aligned to the bottom-right corner.

    Query ``i`` sits at absolute position ``tk - tq + i``: the queries are the *last* ``tq`` positions of
    the ``tk`` keys. With ``tq == tk`` this is the usual lower triangle; with a KV cache (``tq`` new tokens
    after ``tk - tq`` cached ones) the same call gives the rows the new tokens need::

        causal_mask(3)        causal_mask(2, 4)
        1 0 0                 1 1 1 0
        1 1 0                 1 1 1 1
        1 1 1

    (PyTorch's ``is_causal=True`` aligns to the top-left instead; the two agree only when ``tq == tk``.)

    Args:
        tq: number of queries.
        tk: number of keys; defaults to ``tq``.
        device: device of the result.

    Returns:
        ``(tq, tk)`` bool tensor, True where the query may attend.
    """
    check_nonnegative_int("tq", tq)
    tk = tq if tk is None else tk
    check_nonnegative_int("tk", tk)
    if tq > tk:
        raise ValueError(f"causal_mask needs tq <= tk (queries are the last tq keys), got tq={tq}, tk={tk}")
    query_pos = torch.arange(tk - tq, tk, device=device)  # (Tq,) absolute positions of the queries
    key_pos = torch.arange(tk, device=device)  # (Tk,)
    return key_pos[None, :] <= query_pos[:, None]  # (Tq, Tk)


def attention_mask(
    q_valid: torch.Tensor | None = None,
    k_valid: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Combine query padding, key padding and (optionally) the causal mask into one ``(B, 1, Tq, Tk)`` mask.

    Self-attention passes one validity mask (``k_valid`` defaults to ``q_valid``); cross-attention passes
    the decoder's as ``q_valid`` and the encoder's as ``k_valid`` with ``causal=False``.

    Args:
        q_valid: ``(B, Tq)`` bool, True at real query tokens. ``None`` means all queries are real, and
            then ``k_valid`` must be given.
        k_valid: ``(B, Tk)`` bool, True at real key tokens; defaults to ``q_valid``.
        causal: also apply :func:`causal_mask` (bottom-right aligned).

    Returns:
        ``(B, 1, Tq, Tk)`` bool mask, True = may attend. Rows of padded queries are entirely False.
    """
    if q_valid is None and k_valid is None:
        raise ValueError("attention_mask needs q_valid or k_valid (or both)")
    for name, valid in (("q_valid", q_valid), ("k_valid", k_valid)):
        if valid is not None:
            check_bool(name, valid)
            check_rank(name, valid, 2)
    k_valid = q_valid if k_valid is None else k_valid
    q_valid = torch.ones_like(k_valid) if q_valid is None else q_valid
    if q_valid.shape[0] != k_valid.shape[0]:
        raise ValueError(
            f"q_valid and k_valid disagree on the batch size: {tuple(q_valid.shape)} vs {tuple(k_valid.shape)}"
        )
    mask = q_valid[:, None, :, None] & k_valid[:, None, None, :]  # (B, 1, Tq, 1) & (B, 1, 1, Tk)
    if causal:
        mask = mask & causal_mask(q_valid.shape[1], k_valid.shape[1], device=mask.device)
    return mask  # (B, 1, Tq, Tk)


def mask_to_bias(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a boolean mask into an additive bias: 0 where True, ``finfo(dtype).min`` where False.

    ``finfo(dtype).min`` is the most negative finite number of the dtype, so adding it to a score drives
    that softmax weight to exactly zero without producing ``-inf`` (and NaN) on its own.

    Args:
        mask: bool tensor, True = may attend.
        dtype: floating dtype of the bias (match the scores).

    Returns:
        Float tensor of ``mask``'s shape.
    """
    check_tensor("mask", mask)
    check_bool("mask", mask)
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill(~mask, torch.finfo(dtype).min)
