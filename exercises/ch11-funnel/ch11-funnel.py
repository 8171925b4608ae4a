# %% [markdown]
# # Exercise 11 · Funnel-Transformer pooling
#
# This notebook goes with chapter 11. You will write
#
# 1. the length of a sequence after one pooling step;
# 2. one pooling step, with [CLS] kept apart, and the pooled validity mask;
# 3. the up-sampling that gives the decoder one vector per input token again.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind. tfcourse's
# pooling functions are switched off while your code is being checked.

# %% locked id=setup
import math

import torch

from tfcourse import masks as ref_masks
from tfcourse.grading import Mistake, check_function, guard, inputs
from tfcourse.models import funnel as ref_funnel

# %% [markdown]
# ## 1. The pooled length (1 point)
#
# Pooling turns consecutive windows of `stride` positions into one; a last, shorter window still gives one
# position. With `separate_cls`, position 0 ([CLS]) stays out of pooling and is kept as it is, and
# `truncate_seq` then drops the last token before pooling. Return the length after one step (an `int`).


# %% solution id=pooled_length
def pooled_length(seq_len: int, stride: int, separate_cls: bool, truncate_seq: bool) -> int:
    """Length after one pooling step."""
    ### BEGIN SOLUTION
    if not separate_cls:
        return math.ceil(seq_len / stride)
    rest = seq_len - 1 - (1 if truncate_seq else 0)
    return 1 + math.ceil(max(rest, 0) / stride)
    ### END SOLUTION


# %% tests id=test_pooled_length points=1
def _length_inputs():
    return {
        "seq_len": inputs.size(3, 20),
        "stride": inputs.size(2, 3),
        "separate_cls": bool(inputs.size(0, 1)),
        "truncate_seq": bool(inputs.size(0, 1)),
    }


def _length(seq_len, stride, separate_cls, truncate_seq):
    return ref_funnel.pooled_length(seq_len, stride, separate_cls=separate_cls, truncate_seq=truncate_seq)


_length_mistakes = [
    Mistake(
        "cls-pooled",
        "[CLS] is kept apart: it adds one position of its own and the pooling covers the tokens after it",
        lambda t, s, c, tr: _length(t, s, False, tr),
    ),
    Mistake(
        "floor",
        "a last, shorter window still gives a position: round up (math.ceil), not down",
        lambda t, s, c, tr: _length(t + 1, s, c, tr) - 1,  # rounding r / s down is rounding (r + 1) / s up, less 1
    ),
]
for _ in range(4):
    check_function(
        pooled_length, _length, _length_inputs, name="pooled length", mistakes=_length_mistakes, forbidden=guard.FUNNEL
    )
### BEGIN HIDDEN TESTS
check_function(
    pooled_length,
    _length,
    lambda: {"seq_len": 3, "stride": 2, "separate_cls": True, "truncate_seq": True},
    name="pooled length",
    mistakes=_length_mistakes,
    forbidden=guard.FUNNEL,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. One pooling step (3 points)
#
# `x` is `(B, T, D)` and `valid` `(B, T)` bool, True at real tokens. Mean-pool windows of `stride`
# consecutive positions, as in part 1 (with `separate_cls`, position 0 is kept as it is and does not pool;
# with `truncate_seq` too, the last token is dropped first). A last, shorter window is the mean of the
# positions it has. Return `(pooled, pooled_valid)`: `(B, T', D)` in `x`'s dtype and `(B, T')` bool, where a
# pooled position is real only if **every** position in its window is real (so padding never leaks in).
#
# ```
# x = [c, a, b, d, e]   separate_cls=False:                [(c+a)/2, (b+d)/2, e]
#                       separate_cls, truncate_seq=False:  [c, (a+b)/2, (d+e)/2]
#                       separate_cls, truncate_seq=True:   [c, (a+b)/2, d]
# ```


# %% solution id=pool_sequence
def pool_sequence(x: torch.Tensor, valid: torch.Tensor, stride: int, separate_cls: bool, truncate_seq: bool):
    """One mean-pooling step: (B, T, D), (B, T) -> (pooled (B, T', D), pooled_valid (B, T'))."""
    ### BEGIN SOLUTION
    if separate_cls:
        end = x.shape[1] - 1 if truncate_seq else x.shape[1]
        cls, cls_valid, x, valid = x[:, :1], valid[:, :1], x[:, 1:end], valid[:, 1:end]
    pooled, real = [], []
    for start in range(0, x.shape[1], stride):
        pooled.append(x[:, start : start + stride].mean(dim=1))  # (B, D)
        real.append(valid[:, start : start + stride].all(dim=1))  # (B,)
    pooled, real = torch.stack(pooled, dim=1), torch.stack(real, dim=1)  # (B, n, D), (B, n)
    if separate_cls:
        pooled, real = torch.cat([cls, pooled], dim=1), torch.cat([cls_valid, real], dim=1)
    return pooled, real
    ### END SOLUTION


# %% tests id=test_pool_sequence points=3
def _pool(x, valid, stride, separate_cls, truncate_seq):
    return ref_funnel.pool_sequence(x, valid, stride, "mean", separate_cls=separate_cls, truncate_seq=truncate_seq)


def _pool_inputs(stride=2, separate_cls=True, truncate_seq=True, dtype=torch.float32):
    b, t, d = inputs.size(1, 4), inputs.size(3, 11), inputs.size(1, 6)
    return {
        "x": inputs.randn(b, t, d, dtype=dtype),
        "valid": ref_masks.lengths_to_mask(inputs.lengths(b, t, min_len=1), t),
        "stride": stride,
        "separate_cls": separate_cls,
        "truncate_seq": truncate_seq,
    }


def _valid_any(x, valid, stride, c, tr):
    pooled, _ = _pool(x, valid, stride, c, tr)
    all_padding = _pool(x, ~valid, stride, c, tr)[1]  # windows whose positions are all padding
    return pooled, ~all_padding  # a window counted as real if any position is


def _divided_by_stride(x, valid, stride, c, tr):
    pooled, pooled_valid = _pool(x, valid, stride, c, tr)
    rest = x.shape[1] - (1 + tr if c else 0)
    if rest % stride:  # the last window has rest % stride positions but was divided by stride
        pooled = pooled.clone()
        pooled[:, -1] *= (rest % stride) / stride
    return pooled, pooled_valid


_pool_mistakes = [
    Mistake(
        "cls-pooled",
        "[CLS] was pooled together with the next token; with separate_cls it must stay a position of its own",
        lambda x, valid, s, c, tr: _pool(x, valid, s, False, tr),
    ),
    Mistake(
        "no-truncation",
        "with truncate_seq the last token is dropped before pooling",
        lambda x, valid, s, c, tr: _pool(x, valid, s, c, False),
    ),
    Mistake(
        "valid-any",
        "a pooled position is real only if every position of its window is real (all, not any): otherwise "
        "padding leaks into a real position",
        _valid_any,
    ),
    Mistake(
        "last-window-by-stride",
        "the last, shorter window must be divided by the number of positions it has, not by stride",
        _divided_by_stride,
    ),
]
check_function(
    pool_sequence,
    _pool,
    _pool_inputs,
    name="(pooled, pooled_valid)",
    mistakes=_pool_mistakes,
    forbidden=guard.FUNNEL,
)
check_function(
    pool_sequence,
    _pool,
    lambda: _pool_inputs(separate_cls=False),
    name="(pooled, pooled_valid)",
    mistakes=_pool_mistakes,
    forbidden=guard.FUNNEL,
)
### BEGIN HIDDEN TESTS
# hidden: no truncation, stride 3, float64
check_function(
    pool_sequence,
    _pool,
    lambda: _pool_inputs(truncate_seq=False),
    name="(pooled, pooled_valid)",
    mistakes=_pool_mistakes,
    forbidden=guard.FUNNEL,
)
check_function(
    pool_sequence,
    _pool,
    lambda: _pool_inputs(stride=3, dtype=torch.float64),
    name="(pooled, pooled_valid)",
    mistakes=_pool_mistakes,
    forbidden=guard.FUNNEL,
    atol=1e-5,  # tfcourse accumulates the means in float32
    rtol=1e-4,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Up-sampling (2 points)
#
# The decoder needs one vector per input token again. `x` is `(B, T', D)`, the output of the last block,
# after pooling steps with a total factor `stride` (`2^k` for `k` steps). Repeat each position `stride`
# times **in place** (`a b` → `a a b b`, not `a b a b`), keep the first `target_len` positions (minus one with
# `separate_cls`) and fill any missing ones at the end (tokens that truncation dropped) with zeros. With
# `separate_cls`, [CLS] (position 0) maps back to position 0 only, once. Return `(B, target_len, D)`.


# %% solution id=upsample
def upsample(x: torch.Tensor, stride: int, target_len: int, separate_cls: bool) -> torch.Tensor:
    """(B, T', D) -> (B, target_len, D): each position repeated stride times."""
    ### BEGIN SOLUTION
    cls, rest = (x[:, :1], x[:, 1:]) if separate_cls else (None, x)
    rest_len = target_len - (1 if separate_cls else 0)
    rest = rest.repeat_interleave(stride, dim=1)[:, :rest_len]  # (B, <= rest_len, D)
    missing = rest_len - rest.shape[1]
    rest = torch.cat([rest, rest.new_zeros(rest.shape[0], missing, rest.shape[2])], dim=1)
    return rest if cls is None else torch.cat([cls, rest], dim=1)
    ### END SOLUTION


# %% tests id=test_upsample points=2
def _upsample(x, stride, target_len, separate_cls):
    return ref_funnel.upsample(x, stride, target_len, separate_cls=separate_cls)


def _upsample_inputs(separate_cls=True):
    b, d, t = inputs.size(1, 3), inputs.size(1, 5), inputs.size(4, 16)
    steps, length = inputs.size(1, 2), t
    for _ in range(steps):
        length = ref_funnel.pooled_length(length, 2, separate_cls=separate_cls, truncate_seq=separate_cls)
    return {"x": inputs.randn(b, length, d), "stride": 2**steps, "target_len": t, "separate_cls": separate_cls}


_upsample_mistakes = [
    Mistake(
        "cls-repeated",
        "[CLS] was repeated like the other positions; with separate_cls it maps back to position 0 only",
        lambda x, s, t, c: _upsample(x, s, t, False),
    ),
    Mistake(
        "tiled",
        "you tiled the sequence (a b -> a b a b); each position must be repeated in place (a b -> a a b b), "
        "for example with repeat_interleave",
        lambda x, s, t, c: _upsample(
            torch.cat([x[:, :1], x[:, 1:].repeat(1, s, 1)], 1) if c else x.repeat(1, s, 1), 1, t, c
        ),
    ),
]
check_function(
    upsample, _upsample, _upsample_inputs, name="up-sampled states", mistakes=_upsample_mistakes, forbidden=guard.FUNNEL
)
### BEGIN HIDDEN TESTS
check_function(
    upsample,
    _upsample,
    lambda: _upsample_inputs(separate_cls=False),
    name="up-sampled states",
    mistakes=_upsample_mistakes,
    forbidden=guard.FUNNEL,
)
### END HIDDEN TESTS
