"""Fast paths of :func:`tfcourse.sparse.sparse_attention`: a blocked kernel (any device) and FlexAttention (GPU).

Both split a pattern into at most two *parts* whose key sets are disjoint for every query, and run each
part as many small dense attentions in a layout where the part is (nearly) dense. With l the period::

    part      pattern    one group of queries ...           ... and the keys it gathers        pairs computed
    local     strided    a block of bq consecutive queries   the window [start - l, end)        n·(bq + l)
    residue   strided    the queries ≡ r (mod l)             the keys ≡ r (mod l)               n²/l
    block     fixed      one block of l queries              the same block                     n·l
    summary   fixed      a block of queries                  every block's last c cells         n²·c/l

In the merged pattern the residue part skips the window (|i - j| <= l) and the summary part skips the own
block, so no pair is counted twice. Inside a group the exact predicate :meth:`SparsePattern.allows`
masks the pairs that the layout gathers but the pattern forbids.

Each part returns its output normalised over its own keys and the log-sum-exp of its scores, and
:func:`merge_parts` combines them: ``out = Σ_p exp(lse_p − lse) · out_p`` with ``lse = log Σ_p exp(lse_p)``,
the identity flash attention uses across key blocks. A part with no allowed key for a query reports
``lse = finfo.min`` (not ``-inf``), so merging never forms ``-inf − (-inf)``.

On a GPU the same parts become FlexAttention calls: local and block are block-sparse as they are; the
residue part runs on the sequence permuted to residue-major order (position ``a·l + r`` moves to
``r·R + a``), where it is block-diagonal; the summary part attends to the summary keys gathered into a
compact ``(B, H, ≈n·c/l, Dh)`` set.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # tfcourse.sparse imports this module
    from tfcourse.sparse import SparsePattern

Keep = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Elements of one chunk's (B, H, groups, Gq, Gk) score tensor: bounds the blocked kernel's working memory.
_CHUNK_ELEMENTS = 1 << 22
_FLEX_BLOCK = 128


def parts(pattern: SparsePattern) -> list[tuple[str, Keep]]:
    """The pattern's parts as ``(name, keep)``: ``keep(i, j)`` is the pattern restricted to the part's region."""
    allows, period = pattern.allows, pattern.period
    if pattern.kind == "strided":
        if pattern.subset is not None:
            return [("local" if pattern.subset == 1 else "residue", allows)]
        return [
            ("local", lambda i, j: allows(i, j) & ((i - j).abs() <= period)),
            ("residue", lambda i, j: allows(i, j) & ((i - j).abs() > period)),
        ]
    if pattern.subset is not None:
        return [("block" if pattern.subset == 1 else "summary", allows)]
    return [
        ("block", lambda i, j: allows(i, j) & (i // period == j // period)),
        ("summary", lambda i, j: allows(i, j) & (i // period != j // period)),
    ]


def summary_positions(pattern: SparsePattern, count: int, device) -> torch.Tensor:
    """Positions of the first ``count`` summary cells, in order: block b's are ``b·l + l − c, …, b·l + l − 1``."""
    index = torch.arange(count, device=device)  # (count,)
    return (index // pattern.c) * pattern.period + (pattern.period - pattern.c) + index % pattern.c


def merge_parts(outputs: list[torch.Tensor], lses: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """Combine per-part outputs ``(B, H, n, Dv)`` normalised over their own keys, using their ``(B, H, n)`` lse."""
    if len(outputs) == 1:
        return outputs[0].to(dtype)
    lse = torch.logsumexp(torch.stack(lses), dim=0)  # (B, H, n)
    weights = [torch.exp(part_lse - lse)[..., None] for part_lse in lses]  # (B, H, n, 1) each, summing to 1
    merged = sum(weight * out.float() for weight, out in zip(weights, outputs, strict=True))
    return merged.to(dtype)  # (B, H, n, Dv)


# ---------------------------------------------------------------------------------------------------------
# Blocked kernel


class _Layout(NamedTuple):
    """Where a part's groups live: positions for the mask, views of the tensors for the arithmetic."""

    q_pos: torch.Tensor
    """``(G, Gq)`` query positions; those outside ``[0, n)`` are padding and get dropped."""
    k_pos: torch.Tensor
    """``(G, Gk)`` key positions, sorted within each group, or ``(1, Gk)`` shared by all groups."""
    queries: Callable[[torch.Tensor], torch.Tensor]
    """``(B, H, n, D)`` → ``(B, H, G, Gq, D)``: a view of the (padded) input, no gather."""
    keys: Callable[[torch.Tensor], torch.Tensor]
    """``(B, H, n, D)`` → ``(B, H, G or 1, Gk, D)``."""
    restore: Callable[[torch.Tensor], torch.Tensor]
    """``(B, H, G, Gq, D)`` → ``(B, H, n, D)``: back to sequence order."""


def _pad(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    return F.pad(x, (0, 0, before, after))  # pads the sequence axis of (B, H, n, D)


def _blocks(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, H, n, D)`` → ``(B, H, ⌈n/size⌉, size, D)``, zero-padded."""
    b, h, n, d = x.shape
    return _pad(x, 0, -n % size).view(b, h, -1, size, d)  # (B, H, G·size, D) -> (B, H, G, size, D)


def _unblock(x: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, H, G, Gq, D)`` → ``(B, H, n, D)``, dropping padding at the end."""
    return x.flatten(2, 3)[:, :, :n]  # (B, H, G·Gq, D) -> (B, H, n, D)


def _layout(name: str, pattern: SparsePattern, device) -> _Layout:
    """The layout of one part (see the table in the module docstring)."""
    n, period = pattern.n, pattern.period
    arange = functools.partial(torch.arange, device=device)

    def unblock(x):
        return _unblock(x, n)

    if name == "local":
        size = min(max(period // 2, 16), 128)  # query block; it reads a window of size + l keys (2l non-causal)
        groups, after = math.ceil(n / size), period * (0 if pattern.causal else 1)
        width = size + period + after
        q_pos = arange(groups * size).view(groups, size)  # (G, bq)
        k_pos = q_pos[:, :1] - period + arange(width)  # (G, width)

        def windows(x):  # each query block's keys, as overlapping views of the padded sequence
            padded = _pad(x, period, groups * size - x.shape[2] + after)  # (B, H, l + G·bq [+ l], D)
            return padded.unfold(2, width, size).transpose(-2, -1)  # (B, H, G, D, width) -> (B, H, G, width, D)

        return _Layout(q_pos, k_pos, lambda x: _blocks(x, size), windows, unblock)
    rows = math.ceil(n / period)
    if name == "residue":
        positions = arange(rows)[None, :] * period + arange(period)[:, None]  # (l, R): a·l + r in row r

        def by_residue(x):
            return _blocks(x, period).transpose(2, 3)  # (B, H, R, l, D) -> (B, H, l, R, D)

        def restore(x):
            return _unblock(x.transpose(2, 3), n)  # (B, H, l, R, D) -> (B, H, R, l, D) -> (B, H, n, D)

        return _Layout(positions, positions, by_residue, by_residue, restore)
    if name == "block":
        positions = arange(rows * period).view(rows, period)  # (n/l, l)
        return _Layout(positions, positions, lambda x: _blocks(x, period), lambda x: _blocks(x, period), unblock)
    size = min(period, 128)
    q_pos = arange(math.ceil(n / size) * size).view(-1, size)  # (G, bq)
    columns = summary_positions(pattern, rows * pattern.c, device)
    columns = columns[columns < n] if bool((columns < n).any()) else columns[:1]  # one masked key rather than none

    def summaries(x):
        return x.index_select(2, columns.clamp(max=n - 1))[:, :, None]  # (B, H, 1, Ks, D): a compact key set

    return _Layout(q_pos, columns[None, :], lambda x: _blocks(x, size), summaries, unblock)  # keys (1, Ks)


class _Chunk(NamedTuple):
    """Groups ``groups`` × query rows ``rows`` × the first ``keys`` keys of a part, with their mask as a bias."""

    groups: slice
    rows: slice
    keys: int
    bias: torch.Tensor
    """``(g, r, keys)`` float32: 0 where allowed, ``finfo.min`` elsewhere."""
    nonempty: torch.Tensor | None
    """``(g, r, 1)`` float32, 1 for queries with at least one allowed key; None if all have one."""


@functools.lru_cache(maxsize=32)
def _plan(pattern: SparsePattern, name: str, device: str, heads: int) -> tuple[_Layout, list[list[_Chunk]]]:
    """Cut a part into chunks of at most ``_CHUNK_ELEMENTS`` scores over ``heads`` = B·H and precompute masks.

    Cached: a model calls the same pattern in every layer and step, and the masks do not depend on the data.
    Under a causal pattern a chunk reads only the (sorted) keys up to its last query.
    """
    layout = _layout(name, pattern, device)
    keep, n = dict(parts(pattern))[name], pattern.n
    (num_groups, num_rows), num_keys = layout.q_pos.shape, layout.k_pos.shape[1]
    rows_step = max(1, min(num_rows, _CHUNK_ELEMENTS // (heads * num_keys)))
    groups_step = max(1, _CHUNK_ELEMENTS // (heads * rows_step * num_keys))
    if layout.k_pos.shape[0] == 1 and pattern.causal:
        groups_step = min(groups_step, math.ceil(num_groups / 8))  # shared keys: finer chunks skip more
    plan = []
    for g in range(0, num_groups, groups_step):
        groups, row_chunks = slice(g, g + groups_step), []
        for r in range(0, num_rows, rows_step):
            rows = slice(r, r + rows_step)
            q_pos = layout.q_pos[groups, rows]  # (g, r)
            k_pos = layout.k_pos if layout.k_pos.shape[0] == 1 else layout.k_pos[groups]  # (g or 1, Gk)
            cut = num_keys
            if pattern.causal:
                last = q_pos.clamp(max=n - 1).amax(dim=1, keepdim=True)  # (g, 1)
                sorted_keys = k_pos.expand(len(last), -1).contiguous()  # (g, Gk)
                cut = max(1, int(torch.searchsorted(sorted_keys, last, right=True).max()))  # keys <= last query
            keys = k_pos[:, None, :cut]  # (g or 1, 1, cut)
            allowed = keep(q_pos[:, :, None], keys) & (keys >= 0) & (keys < n)  # (g, r, cut)
            bias = torch.zeros(allowed.shape, device=device).masked_fill(~allowed, torch.finfo(torch.float32).min)
            has_key = allowed.any(dim=-1, keepdim=True)  # (g, r, 1)
            nonempty = None if bool(has_key.all()) else has_key.float()
            row_chunks.append(_Chunk(groups, rows, cut, bias, nonempty))
        plan.append(row_chunks)
    return layout, plan


def _attend_chunk(q, k, v, chunk: _Chunk, scale: float, with_lse: bool):
    """Softmax attention of one chunk, ``(B, H, g, r, Dh)`` queries → ``(B, H, g, r, Dv)`` float32 (+ lse)."""
    scores = torch.matmul(q, k.transpose(-2, -1)).float()  # (B, H, g, r, Dh) @ (B, H, g, Dh, keys)
    scores = scores.mul_(scale).add_(chunk.bias)  # (B, H, g, r, keys); masked pairs sink to finfo.min
    row_max = scores.detach().amax(dim=-1, keepdim=True)  # (B, H, g, r, 1); the softmax does not depend on it
    weights = scores.sub_(row_max).exp_()  # masked pairs: exp(finfo.min - max) = 0
    total = weights.sum(dim=-1, keepdim=True)  # (B, H, g, r, 1), >= 1 (the largest score gives exp(0))
    output = torch.matmul(weights.to(v.dtype), v).float() / total  # (B, H, g, r, Dv): normalise after the product
    if chunk.nonempty is not None:
        output = output * chunk.nonempty  # a query with no allowed key saw only finfo.min scores: zero it
    lse = (row_max + total.log()).squeeze(-1) if with_lse else None  # (B, H, g, r); ≈ finfo.min when empty
    return output, lse


def _attend_part(q, k, v, pattern: SparsePattern, name: str, scale: float, with_lse: bool):
    """One part over the whole sequence; returns ``(B, H, n, Dv)`` float32 and the ``(B, H, n)`` lse (or None)."""
    layout, plan = _plan(pattern, name, str(q.device), q.shape[0] * q.shape[1])
    queries, keys, values = layout.queries(q), layout.keys(k), layout.keys(v)  # (B, H, G, Gq or Gk, D)
    shared = keys.shape[2] == 1
    outputs, lses = [], []
    for row_chunks in plan:
        pieces = []
        for chunk in row_chunks:
            groups = slice(None) if shared else chunk.groups
            pieces.append(
                _attend_chunk(
                    queries[:, :, chunk.groups, chunk.rows],  # (B, H, g, r, Dh)
                    keys[:, :, groups, : chunk.keys],  # (B, H, g or 1, keys, Dh)
                    values[:, :, groups, : chunk.keys],  # (B, H, g or 1, keys, Dv)
                    chunk,
                    scale,
                    with_lse,
                )
            )
        outputs.append(torch.cat([out for out, _ in pieces], dim=3))  # (B, H, g, Gq, Dv)
        lses.append(torch.cat([lse for _, lse in pieces], dim=3) if with_lse else None)  # (B, H, g, Gq)
    output = layout.restore(torch.cat(outputs, dim=2))  # (B, H, G, Gq, Dv) -> (B, H, n, Dv)
    lse = layout.restore(torch.cat(lses, dim=2)[..., None])[..., 0] if with_lse else None  # (B, H, n)
    return output, lse


def blocked_attention(q, k, v, pattern: SparsePattern, scale: float | None) -> torch.Tensor:
    """Sparse attention without any n × n tensor: ``(B, H, n, Dh)`` inputs → ``(B, H, n, Dv)`` output.

    Work and memory grow with the pairs the layouts read (a small multiple of the allowed pairs); one
    chunk's scores hold at most about ``_CHUNK_ELEMENTS`` numbers. Differentiable.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    names = [name for name, _ in parts(pattern)]
    results = [_attend_part(q, k, v, pattern, name, scale, len(names) > 1) for name in names]
    return merge_parts([out for out, _ in results], [lse for _, lse in results], v.dtype)


# ---------------------------------------------------------------------------------------------------------
# FlexAttention (GPU)


@functools.cache
def _compiled_flex() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _to_residue_major(x: torch.Tensor, period: int) -> torch.Tensor:
    """``(B, H, n, D)`` → ``(B, H, l·R, D)``: position ``a·l + r`` moves to ``r·R + a`` (zero padding at the end)."""
    b, h, n, d = x.shape
    rows = math.ceil(n / period)
    x = F.pad(x, (0, 0, 0, rows * period - n))  # (B, H, R·l, D)
    x = x.view(b, h, rows, period, d).transpose(2, 3)  # (B, H, R, l, D) -> (B, H, l, R, D)
    return x.reshape(b, h, period * rows, d)  # (B, H, l·R, D)


def _from_residue_major(x: torch.Tensor, period: int, n: int) -> torch.Tensor:
    """Inverse of :func:`_to_residue_major` for ``(B, H, l·R, D)``, dropping the padding → ``(B, H, n, D)``."""
    b, h, length, d = x.shape
    rows = length // period
    x = x.view(b, h, period, rows, d).transpose(2, 3)  # (B, H, l, R, D) -> (B, H, R, l, D)
    return x.reshape(b, h, length, d)[:, :, :n]  # (B, H, R·l, D) -> (B, H, n, D)


def _flex_layout(pattern: SparsePattern, name: str) -> tuple[Callable, Callable, int, int]:
    """How a part is laid out for FlexAttention: (query position of an index, key position of an index, lengths)."""
    n, period = pattern.n, pattern.period
    if name == "residue":
        rows = math.ceil(n / period)

        def position(index):  # index r·R + a holds position a·l + r
            return (index % rows) * period + index // rows

        return position, position, rows * period, rows * period
    if name == "summary":
        count = _FLEX_BLOCK * math.ceil(math.ceil(n / period) * pattern.c / _FLEX_BLOCK)

        def summary(index):
            return (index // pattern.c) * pattern.period + (pattern.period - pattern.c) + index % pattern.c

        return (lambda index: index), summary, n, count
    return (lambda index: index), (lambda index: index), n, n


@functools.lru_cache(maxsize=64)
def _block_mask(pattern: SparsePattern, name: str, device: str):
    """The part's FlexAttention ``BlockMask`` (built once per pattern, part and device)."""
    from torch.nn.attention.flex_attention import create_block_mask

    keep = dict(parts(pattern))[name]
    query_position, key_position, q_len, kv_len = _flex_layout(pattern, name)
    n = pattern.n

    def mask_mod(b, h, q_index, kv_index):
        i, j = query_position(q_index), key_position(kv_index)
        return keep(i, j) & (j < n)  # keys past n are padding

    on_gpu = torch.device(device).type == "cuda"
    return create_block_mask(
        mask_mod, None, None, q_len, kv_len, device=device, BLOCK_SIZE=_FLEX_BLOCK, _compile=on_gpu
    )


def _flex_part(q, k, v, pattern: SparsePattern, name: str, scale: float, with_lse: bool):
    """One part through FlexAttention; returns ``(B, H, n, Dv)`` and the ``(B, H, n)`` lse (or None)."""
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    n, period = pattern.n, pattern.period
    if name == "residue":
        q, k, v = (_to_residue_major(x, period) for x in (q, k, v))  # (B, H, l·R, D)
    elif name == "summary":
        _, key_position, _, count = _flex_layout(pattern, name)
        columns = key_position(torch.arange(count, device=q.device)).clamp(max=n - 1)  # (Ks,)
        k, v = k.index_select(2, columns), v.index_select(2, columns)  # (B, H, Ks, D): a compact key set
    block_mask = _block_mask(pattern, name, str(q.device))
    attend = _compiled_flex() if q.is_cuda else flex_attention  # eager on CPU: for testing the layouts only
    aux = AuxRequest(lse=True) if with_lse else None
    result = attend(q, k, v, block_mask=block_mask, scale=scale, return_aux=aux)
    output, lse = (result[0], result[1].lse) if with_lse else (result, None)
    if name == "residue":
        output = _from_residue_major(output, period, n)  # (B, H, n, Dv)
        lse = lse if lse is None else _from_residue_major(lse[..., None], period, n)[..., 0]  # (B, H, n)
    if lse is not None:
        lse = lse.clamp_min(torch.finfo(torch.float32).min)  # an empty row's -inf, made safe to merge
    return output, lse


def flex_attention_sparse(q, k, v, pattern: SparsePattern, scale: float | None) -> torch.Tensor:
    """Sparse attention through FlexAttention block masks: ``(B, H, n, Dh)`` → ``(B, H, n, Dv)``.

    Compiled on CUDA (forward and backward). Cost grows with the non-empty 128 × 128 tiles of each part's
    layout, which the residue permutation and the summary gathering keep close to the allowed pairs.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    names = [name for name, _ in parts(pattern)]
    results = [_flex_part(q, k, v, pattern, name, scale, len(names) > 1) for name in names]
    return merge_parts([out for out, _ in results], [lse for _, lse in results], v.dtype)


def flex_tile_density(pattern: SparsePattern, device: str) -> float:
    """Non-empty FlexAttention tiles over all parts, as a fraction of the ``ceil(n/128)²`` tiles of dense attention."""
    tiles = 0
    for name, _ in parts(pattern):
        block_mask = _block_mask(pattern, name, device)
        tiles += int(block_mask.kv_num_blocks.sum())
        if block_mask.full_kv_num_blocks is not None:
            tiles += int(block_mask.full_kv_num_blocks.sum())
    return tiles / math.ceil(pattern.n / _FLEX_BLOCK) ** 2
