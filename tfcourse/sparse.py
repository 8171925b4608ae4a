r"""Sparse attention: the strided and fixed patterns of Child et al. (2019), and attention restricted to them.

"Generating Long Sequences with Sparse Transformers" (Child, Gray, Radford and Sutskever, 2019) replaces
full attention, O(n²) in time and memory, by *factorised* attention: head m of p lets position i attend
only to a subset :math:`A_i^{(m)}` of size about :math:`\sqrt[p]{n}`, and the subsets are chosen so that
every position still reaches every earlier one within p + 1 steps (§4.2). With p = 2 and a period l ≈ √n
(the paper's *stride* or *block length*) the two patterns of §4.3 are

* **strided**: :math:`A^{(1)}_i = \{t, …, i\}` with :math:`t = \max(0, i - l)` (the previous l positions
  and i itself: l + 1 keys, as the paper's formula says) and :math:`A^{(2)}_i = \{j : (i - j) \bmod l = 0\}`
  (every l-th position). Suits data with a periodic structure such as images and audio. (The text's
  "previous l locations" could also be read as l keys including i; the merged pattern is the same either
  way, since i − l belongs to :math:`A^{(2)}`, and only :math:`A^{(1)}` alone differs.)
* **fixed**: :math:`A^{(1)}_i = \{j : \lfloor j/l \rfloor = \lfloor i/l \rfloor\}` (the own block) and
  :math:`A^{(2)}_i = \{j : j \bmod l \in \{l - c, …, l - 1\}\}` (the last c "summary" cells of every
  block). Suits text, whose structure is not periodic in l.

With ``causal=True`` both keep only :math:`j \le i`. Without it the sets are used as written, except that
the strided window becomes the symmetric :math:`|i - j| \le l` (the paper defines strided attention only
for autoregressive models; this mirror image makes the causal pattern the non-causal one with
:math:`j \le i`). Two ways to combine the subsets (§5.1): **factorised**, one subset per head (or per
layer), and **merged**, their union in every head. Masks follow :mod:`tfcourse.masks`: True = may attend.
Strided with n = 8, l = 3 and fixed with n = 8, l = 4, c = 1, causal, merged (``1`` = may attend)::

    strided_pattern(8, 3)         fixed_pattern(8, 4, 1)
    1 . . . . . . .               1 . . . . . . .
    1 1 . . . . . .               1 1 . . . . . .
    1 1 1 . . . . .               1 1 1 . . . . .
    1 1 1 1 . . . .               1 1 1 1 . . . .
    . 1 1 1 1 . . .               . . . 1 1 . . .      <- column 3 summarises block 0
    . . 1 1 1 1 . .               . . . 1 1 1 . .
    1 . . 1 1 1 1 .               . . . 1 1 1 1 .
    . 1 . . 1 1 1 1               . . . 1 1 1 1 1

:func:`sparse_attention` computes attention under a pattern by a dense reference path (the mask through
:func:`tfcourse.attention.scaled_dot_product_attention`) or by fast paths whose cost grows with the number of
attended pairs rather than n² (see ``tfcourse._sparse_blocked``). The fast paths need the pattern's
*description*, not its n × n mask, so patterns are :class:`SparsePattern` objects that can also produce
the mask.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from tfcourse import _sparse_blocked
from tfcourse._checks import check_floating, check_positive_int, check_rank
from tfcourse.attention import scaled_dot_product_attention

__all__ = ["PatternDensity", "SparsePattern", "fixed_pattern", "pattern_density", "sparse_attention", "strided_pattern"]

_KINDS = ("strided", "fixed")
_IMPLS = ("auto", "reference", "blocked", "flex")


@dataclass(frozen=True)
class SparsePattern:
    """A sparse attention pattern of Child et al. (2019), §4.3, described by its parameters, not its mask.

    Build one with :meth:`SparsePattern.strided` or :meth:`SparsePattern.fixed`. The fast paths of
    :func:`sparse_attention` compute the keys each query needs from these numbers;
    :meth:`SparsePattern.mask` draws the dense ``(n, n)`` mask for teaching and for the reference path.

    Attributes:
        kind: ``"strided"`` or ``"fixed"``.
        n: sequence length.
        period: l, the paper's stride (strided) or block length (fixed); both patterns repeat every l.
        c: number of summary cells at the end of each block (fixed only; None for strided).
        causal: keep only keys ``j <= i``.
        subset: 1 for :math:`A^{(1)}` alone, 2 for :math:`A^{(2)}` alone, None for their union (merged).
    """

    kind: str
    n: int
    period: int
    c: int | None = None
    causal: bool = True
    subset: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        check_positive_int("n", self.n)
        check_positive_int("stride" if self.kind == "strided" else "block", self.period)
        if self.kind == "fixed":
            check_positive_int("c", self.c)
            if self.c > self.period:
                raise ValueError(f"c must be at most block={self.period}, got c={self.c}")
        elif self.c is not None:
            raise ValueError(f"c applies to the fixed pattern only, got c={self.c} for kind='strided'")
        if not isinstance(self.causal, bool):
            raise TypeError(f"causal must be a bool, got {type(self.causal).__name__}")
        if self.subset not in (None, 1, 2):
            raise ValueError(f"subset must be None (merged), 1 or 2, got {self.subset!r}")

    @classmethod
    def strided(cls, n: int, stride: int, causal: bool = True) -> SparsePattern:
        """The merged strided pattern: the window ``{max(0, i - stride), …, i}`` ∪ every stride-th key."""
        return cls("strided", n, stride, None, causal)

    @classmethod
    def fixed(cls, n: int, block: int, c: int, causal: bool = True) -> SparsePattern:
        """The merged fixed pattern: the own block ∪ the last ``c`` cells of every block."""
        return cls("fixed", n, block, c, causal)

    def factorize(self) -> tuple[SparsePattern, SparsePattern]:
        """The two subsets :math:`A^{(1)}` and :math:`A^{(2)}`, one per head (or layer) in factorised attention."""
        return (
            SparsePattern(self.kind, self.n, self.period, self.c, self.causal, 1),
            SparsePattern(self.kind, self.n, self.period, self.c, self.causal, 2),
        )

    def allows(self, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """Whether query position ``i`` may attend to key position ``j`` (int tensors that broadcast).

        This predicate is the definition every path uses: the dense mask evaluates it on all pairs, the
        blocked kernel on the pairs it gathers, and FlexAttention compiles it into a ``mask_mod``.
        """
        distance = i - j
        if self.kind == "strided":
            first = distance.abs() <= self.period  # causal: {i - l, …, i}
            second = distance % self.period == 0
        else:
            first = i // self.period == j // self.period
            second = j % self.period >= self.period - self.c
        allowed = first if self.subset == 1 else second if self.subset == 2 else first | second
        if self.causal:
            return allowed & (distance >= 0)
        return allowed.expand(distance.shape)  # the summary columns alone depend on j only

    def mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The dense ``(n, n)`` bool mask, True = may attend (O(n²) memory: for small n and teaching)."""
        positions = torch.arange(self.n, device=device)  # (n,)
        return self.allows(positions[:, None], positions[None, :]).contiguous()  # (n, 1) vs (1, n) -> (n, n)


def _stack(pattern: SparsePattern, factorized: bool, device) -> torch.Tensor:
    """The merged ``(n, n)`` mask, or the two subsets' masks stacked ``(2, n, n)``."""
    if not factorized:
        return pattern.mask(device)  # (n, n)
    return torch.stack([part.mask(device) for part in pattern.factorize()])  # (2, n, n)


def strided_pattern(
    n: int, stride: int, causal: bool = True, *, factorized: bool = False, device: torch.device | str | None = None
) -> torch.Tensor:
    """Mask of the strided pattern (Child et al. 2019, §4.3): a local window plus every ``stride``-th key.

    :math:`A^{(1)}_i = \\{\\max(0, i - l), …, i\\}` and :math:`A^{(2)}_i = \\{j : (i - j) \\bmod l = 0\\}`
    with l = ``stride``, keeping ``j <= i`` when causal (see the module docstring for the non-causal form).
    With n = 6, l = 2, causal (``1`` = may attend)::

        factorized=True: A(1)     A(2)           merged (factorized=False)
        1 . . . . .      1 . . . . .             1 . . . . .
        1 1 . . . .      . 1 . . . .             1 1 . . . .
        1 1 1 . . .      1 . 1 . . .             1 1 1 . . .
        . 1 1 1 . .      . 1 . 1 . .             . 1 1 1 . .
        . . 1 1 1 .      1 . 1 . 1 .             1 . 1 1 1 .
        . . . 1 1 1      . 1 . 1 . 1             . 1 . 1 1 1

    Args:
        n: sequence length.
        stride: l, the paper suggests l ≈ √n.
        causal: keep only ``j <= i``.
        factorized: return the two subsets stacked (one per head) instead of their union.
        device: device of the mask.

    Returns:
        ``(n, n)`` bool mask (merged), or ``(2, n, n)`` with :math:`A^{(1)}, A^{(2)}` when ``factorized``;
        the latter broadcasts against scores ``(B, 2, n, n)``, one subset per head.
    """
    return _stack(SparsePattern.strided(n, stride, causal), factorized, device)


def fixed_pattern(
    n: int,
    block: int,
    c: int,
    causal: bool = True,
    *,
    factorized: bool = False,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Mask of the fixed pattern (Child et al. 2019, §4.3): the own block plus the blocks' summary cells.

    :math:`A^{(1)}_i = \\{j : \\lfloor j/l \\rfloor = \\lfloor i/l \\rfloor\\}` and
    :math:`A^{(2)}_i = \\{j : j \\bmod l \\in \\{l - c, …, l - 1\\}\\}` with l = ``block``, keeping ``j <= i``
    when causal. The paper uses l ∈ {128, 256} and c ∈ {8, 16, 32}. With n = 6, l = 3, c = 1, causal::

        factorized=True: A(1)     A(2)           merged (factorized=False)
        1 . . . . .      . . . . . .             1 . . . . .
        1 1 . . . .      . . . . . .             1 1 . . . .
        1 1 1 . . .      . . 1 . . .             1 1 1 . . .
        . . . 1 . .      . . 1 . . .             . . 1 1 . .
        . . . 1 1 .      . . 1 . . .             . . 1 1 1 .
        . . . 1 1 1      . . 1 . . 1             . . 1 1 1 1

    Note the empty rows of :math:`A^{(2)}` alone: early queries have no summary cell to look at yet (their
    attention output is zero).

    Args:
        n: sequence length.
        block: l, the block length.
        c: summary cells per block, ``1 <= c <= block``.
        causal: keep only ``j <= i``.
        factorized: return the two subsets stacked (one per head) instead of their union.
        device: device of the mask.

    Returns:
        ``(n, n)`` bool mask (merged), or ``(2, n, n)`` with :math:`A^{(1)}, A^{(2)}` when ``factorized``.
    """
    return _stack(SparsePattern.fixed(n, block, c, causal), factorized, device)


class PatternDensity(NamedTuple):
    """How much of the n × n score matrix a pattern keeps."""

    element: float
    """Fraction of the n² (query, key) pairs that are allowed."""
    block: float
    """Fraction of the (query block, key block) tiles holding at least one allowed pair."""


def pattern_density(
    pattern: SparsePattern, block_size: int = 128, *, device: torch.device | str | None = None
) -> PatternDensity:
    """Element density and block density of ``pattern``, in the natural (unpermuted) order.

    Block density is what a block-sparse kernel pays for: a tile with one allowed pair costs as much as a
    full one. For the strided pattern it is high in the natural order (every l-th column touches every
    tile), which is why the GPU path permutes the sequence first (see ``tfcourse._sparse_blocked``).
    For reference, a full causal mask has element density (n + 1)/2n and block density close to 1/2.

    Args:
        pattern: the pattern to measure.
        block_size: tile edge; tiles at the end of the sequence may be partial.
        device: where to evaluate the pattern (a GPU makes n = 65536 quick); runs in chunks of rows, so
            memory stays O(n · block_size).

    Returns:
        :class:`PatternDensity` with both fractions.
    """
    if not isinstance(pattern, SparsePattern):
        raise TypeError(f"pattern must be a SparsePattern, got {type(pattern).__name__}")
    check_positive_int("block_size", block_size)
    n = pattern.n
    tiles = math.ceil(n / block_size)
    keys = torch.arange(tiles * block_size, device=device)  # (n_pad,) padded to whole tiles
    rows_per_step = block_size * max(1, (1 << 22) // (block_size * keys.numel()))
    allowed_pairs, busy_tiles = 0, 0
    for start in range(0, n, rows_per_step):
        queries = torch.arange(start, min(start + rows_per_step, n), device=device)  # (rows,)
        allowed = pattern.allows(queries[:, None], keys[None, :]) & (keys < n)  # (rows, n_pad)
        allowed_pairs += int(allowed.sum())
        padded = F.pad(allowed, (0, 0, 0, (-len(queries)) % block_size))  # (rows rounded up to tiles, n_pad)
        per_tile = padded.view(-1, block_size, tiles, block_size).any(dim=3).any(dim=1)  # (row tiles, tiles)
        busy_tiles += int(per_tile.sum())
    return PatternDensity(allowed_pairs / n**2, busy_tiles / tiles**2)


def _as_patterns(pattern: object) -> tuple[SparsePattern, ...]:
    """One pattern or a sequence of them, as a tuple; anything else is a TypeError."""
    if isinstance(pattern, SparsePattern):
        return (pattern,)
    if isinstance(pattern, Sequence) and pattern and all(isinstance(p, SparsePattern) for p in pattern):
        return tuple(pattern)
    if isinstance(pattern, torch.Tensor):
        raise TypeError(
            "pattern must be a SparsePattern (or a sequence of them), got a tensor; for an arbitrary mask "
            "use tfcourse.attention.scaled_dot_product_attention(q, k, v, mask)"
        )
    raise TypeError(f"pattern must be a SparsePattern or a non-empty sequence of them, got {pattern!r}")


def _check_sparse_args(q, k, v, patterns, scale, impl) -> None:
    """Validate :func:`sparse_attention`'s inputs, naming the argument and the shapes seen."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_floating(name, x)
        check_rank(name, x, 4)
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.shape != k.shape or q.shape[:3] != v.shape[:3]:
        raise ValueError(
            f"sparse self-attention needs q and k of one shape (B, H, T, Dh) and v of shape (B, H, T, Dv): "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    for p in patterns:
        if p.n != q.shape[2]:
            raise ValueError(f"pattern.n={p.n} does not match the sequence length of q, shape {tuple(q.shape)}")
    if q.shape[1] % len(patterns):
        raise ValueError(f"{len(patterns)} patterns do not divide the H={q.shape[1]} heads of q {tuple(q.shape)}")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float))):
        raise TypeError(f"scale must be None or a number, got {type(scale).__name__}")
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS}, got {impl!r}")


def sparse_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pattern: SparsePattern | Sequence[SparsePattern],
    *,
    scale: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Self-attention restricted to a sparse pattern: Attend(X, S) of Child et al. (2019), §4.2.

    Each query attends only to the keys its pattern allows, ``softmax(q·kᵀ·scale)`` taken over those keys,
    in float32. A query with no allowed key (possible with :math:`A^{(2)}` of the fixed pattern alone)
    gets zeros, never NaN.

    Paths (all give the same result; the fast ones support autograd where noted):

    * ``"reference"``: the dense ``(n, n)`` mask through :func:`tfcourse.attention.scaled_dot_product_attention`
      (``impl="reference"``); O(n²), for teaching and tests.
    * ``"blocked"``: gathers, per block of queries, only the keys the pattern can allow and runs a small
      dense softmax there, never building an n × n matrix; cost grows with the attended pairs. Any device,
      with autograd. The default on CPU.
    * ``"flex"``: FlexAttention with block masks (strided pattern on a permuted sequence, fixed pattern's
      summary keys gathered into a compact set), compiled. The default on CUDA. On CPU it runs FlexAttention
      eagerly (full score matrix, forward only), which is useful only to test it.

    Args:
        q: ``(B, H, T, Dh)`` queries.
        k: ``(B, H, T, Dh)`` keys.
        v: ``(B, H, T, Dv)`` values.
        pattern: a :class:`SparsePattern` with ``n == T`` used by every head, or a sequence of p patterns
            with p dividing H: heads ``[h·H/p, (h+1)·H/p)`` use pattern h. Factorised attention passes
            ``pattern.factorize()``.
        scale: score scale; ``None`` means ``1/√Dh``.
        impl: ``"auto"`` (flex on CUDA, blocked elsewhere), ``"reference"``, ``"blocked"`` or ``"flex"``.

    Returns:
        ``(B, H, T, Dv)`` output in ``v``'s dtype.
    """
    patterns = _as_patterns(pattern)
    _check_sparse_args(q, k, v, patterns, scale, impl)
    if impl == "auto":
        impl = "flex" if q.is_cuda else "blocked"
    if impl == "reference":
        return _reference(q, k, v, patterns, scale)
    kernel = _sparse_blocked.flex_attention_sparse if impl == "flex" else _sparse_blocked.blocked_attention
    per_group = q.shape[1] // len(patterns)
    outputs = [
        kernel(*(x[:, g * per_group : (g + 1) * per_group] for x in (q, k, v)), p, scale)  # (B, H/p, T, Dv)
        for g, p in enumerate(patterns)
    ]
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=1)  # (B, H, T, Dv)


def _reference(q, k, v, patterns, scale) -> torch.Tensor:
    """Dense path: one ``(n, n)`` mask per head group, repeated to ``(H, n, n)``."""
    masks = torch.stack([p.mask(q.device) for p in patterns])  # (p, n, n)
    mask = masks.repeat_interleave(q.shape[1] // len(patterns), dim=0)  # (H, n, n), broadcasts over B
    return scaled_dot_product_attention(q, k, v, mask, scale=scale, impl="reference")
