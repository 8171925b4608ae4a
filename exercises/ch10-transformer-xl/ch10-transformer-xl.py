# %% [markdown]
# # Exercise 10 · Transformer-XL
#
# This notebook goes with chapter 10. You will write
#
# 1. the relative shift that realigns scores computed against relative positions;
# 2. Transformer-XL's relative attention scores with the global biases `u` and `v`;
# 3. the memory update that keeps the last `mem_len` positions, detached;
# 4. and count which entries of a shifted score matrix are exact.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind, and checks the
# numeric answer. tfcourse's Transformer-XL functions are switched off while your code is being checked.

# %% locked id=setup
import math

import torch
import torch.nn.functional as F

from tfcourse import positions as ref_positions
from tfcourse.grading import Mistake, check_answered, check_function, check_value, guard, inputs, mistakes
from tfcourse.models import transformer_xl as ref_xl

# %% [markdown]
# ## 1. The relative shift (2 points)
#
# `x` has shape `(..., Tq, Tk)` with `Tq <= Tk`; the queries are the last `Tq` of the `Tk` positions. Column
# `r` of `x` was computed against the relative distance `Tk - 1 - r` (decreasing distances). Return the
# `(..., Tq, Tk)` tensor with
#
# `out[..., i, j] = x[..., i, j + Tq - 1 - i]`   for every `j <= i + Tk - Tq`
#
# so that column `j` now means key `j`. Row `i` moves left by `Tq - 1 - i`. The trick of the paper
# (appendix B) does all rows at once: pad one zero column on the left, view the result as `(..., Tk + 1, Tq)`,
# drop the first row and view it back as `(..., Tq, Tk)`. Entries right of `j = i + Tk - Tq` are masked
# later, so the tests ignore them.


# %% solution id=rel_shift
def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """(..., Tq, Tk) scores against distances Tk-1 … 0 -> (..., Tq, Tk) scores against keys."""
    ### BEGIN SOLUTION
    *lead, tq, tk = x.shape
    padded = F.pad(x, (1, 0)).reshape(*lead, tk + 1, tq)  # one zero column on the left, read as (Tk + 1, Tq)
    return padded[..., 1:, :].reshape(*lead, tq, tk)  # drop the first row, read back as (Tq, Tk)
    ### END SOLUTION


# %% tests id=test_rel_shift points=2
def _kept(x):
    """Zero the entries right of j = i + Tk - Tq, which a causal mask removes."""
    tq, tk = x.shape[-2:]
    return x.masked_fill(~torch.ones(tq, tk, dtype=torch.bool).tril(tk - tq), 0)


def _compare_kept(fn):
    def compared(*args):
        out = fn(*args)
        return _kept(out) if isinstance(out, torch.Tensor) and out.dim() >= 2 else out

    compared.__name__ = fn.__name__
    return compared


def _rows_reversed(x):
    # tfcourse's shift of the rows in reverse order: row i moves left by i instead of Tq - 1 - i
    return _kept(_kept(ref_positions.rel_shift(x.flip(-2))).flip(-2))


def _pad_right(x):
    # a zero column on the right instead of the left moves every entry of the result one step on
    shifted = ref_positions.rel_shift(x).flatten(-2)  # (..., Tq·Tk)
    return _kept(torch.cat([shifted[..., 1:], torch.zeros_like(shifted[..., :1])], dim=-1).view_as(x))


def _drop_last(x):
    # keeping the first Tq·Tk entries of the padded rows instead of the last: tfcourse's result moved Tq steps
    # on, behind the padded first row's first Tq entries
    tq = x.shape[-2]
    shifted = ref_positions.rel_shift(x).flatten(-2)  # (..., Tq·Tk)
    start = torch.cat([torch.zeros_like(x[..., 0, :1]), x[..., 0, : tq - 1]], dim=-1)  # (..., Tq): 0, row 0
    return _kept(torch.cat([start, shifted[..., : shifted.shape[-1] - tq]], dim=-1).view_as(x))


def _scores_inputs(lead=True):
    tq = inputs.size(1, 5)
    tk = tq + inputs.size(0, 4)
    shape = (inputs.size(1, 2), inputs.size(1, 2)) if lead else ()
    return {"x": inputs.randn(*shape, tq, tk)}


_shift_mistakes = [
    Mistake(
        "row-shift-reversed",
        "your rows move the wrong way: row i must move left by Tq - 1 - i (the first query the most, the last "
        "query not at all)",
        _rows_reversed,
    ),
    Mistake("pad-right", "the zero column goes on the left (F.pad(x, (1, 0))), not on the right", _pad_right),
    Mistake("drop-last-row", "after the reshape to (Tk + 1, Tq), drop the first row, not the last", _drop_last),
]
_forbid_xl = guard.TRANSFORMER_XL
check_function(
    _compare_kept(rel_shift),
    lambda x: _kept(ref_positions.rel_shift(x)),
    _scores_inputs,
    name="shifted scores",
    mistakes=_shift_mistakes,
    forbidden=_forbid_xl,
)
### BEGIN HIDDEN TESTS
# hidden: no leading dims, a single query, float64
check_function(
    _compare_kept(rel_shift),
    lambda x: _kept(ref_positions.rel_shift(x)),
    lambda: {"x": inputs.randn(1, inputs.size(1, 6), dtype=torch.float64)},
    name="shifted scores",
    mistakes=_shift_mistakes,
    forbidden=_forbid_xl,
)
check_function(
    _compare_kept(rel_shift),
    lambda x: _kept(ref_positions.rel_shift(x)),
    lambda: _scores_inputs(lead=False),
    name="shifted scores",
    mistakes=_shift_mistakes,
    forbidden=_forbid_xl,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. Relative attention scores (3 points)
#
# With queries `q` `(B, H, Tq, Dh)`, keys `k` `(B, H, Tk, Dh)` (memory and current segment), projected
# relative embeddings `r` `(H, Tk, Dh)` whose row `r` holds distance `Tk - 1 - r`, and the learned global
# biases `u`, `v` `(H, Dh)`, return the `(B, H, Tq, Tk)` scores
#
# `A = ((q + u)·kᵀ + rel_shift((q + v)·rᵀ)) / √Dh`
#
# that is terms (a) + (c) (content) and (b) + (d) (position) of the paper. Use your `rel_shift` from part 1.
# Return float32; the tests ignore the entries that the causal mask removes.


# %% solution id=relative_scores
def relative_scores(
    q: torch.Tensor, k: torch.Tensor, r: torch.Tensor, u: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Transformer-XL's ((q + u)·k + shift((q + v)·r)) / √Dh: -> (B, H, Tq, Tk)."""
    ### BEGIN SOLUTION
    content = (q + u[:, None]) @ k.transpose(-2, -1)  # (B, H, Tq, Tk): (a) + (c)
    position = rel_shift((q + v[:, None]) @ r.transpose(-2, -1))  # (B, H, Tq, Tk): (b) + (d)
    return (content + position) / math.sqrt(q.shape[-1])
    ### END SOLUTION


# %% tests id=test_relative_scores points=3
def _xl_inputs():
    b, h, dh = inputs.size(1, 2), inputs.size(1, 3), inputs.size(2, 8)
    tq = inputs.size(1, 5)
    tk = tq + inputs.size(0, 4)
    return {
        "q": inputs.randn(b, h, tq, dh),
        "k": inputs.randn(b, h, tk, dh),
        "r": inputs.randn(h, tk, dh),
        "u": inputs.randn(h, dh),
        "v": inputs.randn(h, dh),
    }


def _xl_scores(q, k, r, u, v):
    return _kept(ref_xl.relative_attention_scores(q, k, r, u, v))


_score_mistakes = [
    Mistake(
        "biases-swapped",
        "u and v are swapped: u (content bias) goes with the keys, v (position bias) with the relative embeddings",
        lambda q, k, r, u, v: _xl_scores(q, k, r, v, u),
    ),
    Mistake(
        "no-biases",
        "your scores leave out the global biases: the content term uses q + u and the position term q + v",
        lambda q, k, r, u, v: _xl_scores(q, k, r, 0 * u, 0 * v),
    ),
    Mistake(
        "missing-scale",
        mistakes.MESSAGES["missing-scale"],
        lambda q, k, r, u, v: _xl_scores(q, k, r, u, v) * math.sqrt(q.shape[-1]),
    ),
    Mistake(
        "position-not-shifted",
        "the position term must go through rel_shift: (q + v)·rᵀ is computed against distances, not keys",
        # the content term with r as the keys and v as the bias is the position term, unshifted
        lambda q, k, r, u, v: _xl_scores(q, k, 0 * r, u, v) + _xl_scores(q, r.expand_as(k), 0 * r, v, v),
    ),
]
check_function(
    _compare_kept(relative_scores),
    _xl_scores,
    _xl_inputs,
    name="relative scores",
    mistakes=_score_mistakes,
    forbidden=_forbid_xl,
)
### BEGIN HIDDEN TESTS
# hidden: more trials, including segments without memory (Tk = Tq)
check_function(
    _compare_kept(relative_scores),
    _xl_scores,
    _xl_inputs,
    name="relative scores",
    mistakes=_score_mistakes,
    forbidden=_forbid_xl,
    trials=4,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. The memory update (2 points)
#
# After a segment, each layer's memory becomes the last `mem_len` positions of `[memory ∘ hidden]` along the
# time axis, with the gradient stopped (the paper's SG): the memory is a constant for the next segment.
# `memory` is `(B, M, D)` or `None` (the first segment) and `hidden` `(B, T, D)`; return
# `(B, min(M + T, mem_len), D)`. Careful with `mem_len = 0`: `x[:, -0:]` keeps everything.


# %% solution id=update_memory
def update_memory(memory, hidden: torch.Tensor, mem_len: int) -> torch.Tensor:
    """The last mem_len positions of [memory ∘ hidden], detached."""
    ### BEGIN SOLUTION
    context = hidden if memory is None else torch.cat([memory, hidden], dim=1)  # (B, M + T, D)
    start = max(0, context.shape[1] - mem_len)
    return context[:, start:].detach()
    ### END SOLUTION


# %% tests id=test_update_memory points=2
def _with_grad_flag(fn):
    """Call fn with a hidden state that requires grad; return (memory, whether it still requires grad)."""

    def flagged(memory, hidden, mem_len):
        out = fn(memory, hidden.clone().requires_grad_(), mem_len)
        return (out.detach(), out.requires_grad) if isinstance(out, torch.Tensor) else out

    flagged.__name__ = fn.__name__
    return flagged


def _memory_inputs(first=False, mem_len=None):
    b, d, t = inputs.size(1, 3), inputs.size(1, 4), inputs.size(1, 5)
    m = inputs.size(0, 5)
    return {
        "memory": None if first else inputs.randn(b, m, d),
        "hidden": inputs.randn(b, t, d),
        "mem_len": inputs.size(1, 7) if mem_len is None else mem_len,
    }


def _oldest(memory, hidden, mem_len):
    # tfcourse's memory of the time-reversed sequence, reversed back: the first mem_len positions
    if memory is None:
        return ref_xl.update_memory(None, hidden.flip(1), mem_len).flip(1)
    return ref_xl.update_memory(hidden.flip(1), memory.flip(1), mem_len).flip(1)


_memory_mistakes = [
    Mistake(
        "not-detached",
        "your memory still requires grad: detach it (the stop-gradient SG), or every segment's backward pass "
        "would run through all the previous ones",
        lambda memory, hidden, n: (ref_xl.update_memory(memory, hidden, n), True),
    ),
    Mistake(
        "kept-oldest",
        "you kept the oldest positions; the memory keeps the most recent mem_len",
        lambda memory, hidden, n: (_oldest(memory, hidden, n), False),
    ),
    Mistake(
        "hidden-only",
        "your memory holds the current segment only; concatenate the old memory first, then keep the last mem_len",
        lambda memory, hidden, n: (ref_xl.update_memory(None, hidden, n), False),
    ),
    Mistake(
        "minus-zero",
        "with mem_len = 0 your memory keeps everything: x[:, -0:] is x[:, 0:]; mem_len = 0 leaves an empty memory",
        lambda memory, hidden, n: (ref_xl.update_memory(memory, hidden, n or 1_000_000), False),  # 0: keep all
    ),
]


def _reference_memory(memory, hidden, mem_len):
    out = ref_xl.update_memory(memory, hidden.clone().requires_grad_(), mem_len)
    return out, out.requires_grad


check_function(
    _with_grad_flag(update_memory),
    _reference_memory,
    _memory_inputs,
    name="(new memory, requires_grad)",
    mistakes=_memory_mistakes,
    forbidden=_forbid_xl,
)
### BEGIN HIDDEN TESTS
# hidden: the first segment (no memory yet) and mem_len = 0
check_function(
    _with_grad_flag(update_memory),
    _reference_memory,
    lambda: _memory_inputs(first=True),
    name="(new memory, requires_grad)",
    mistakes=_memory_mistakes,
    forbidden=_forbid_xl,
)
check_function(
    _with_grad_flag(update_memory),
    _reference_memory,
    lambda: _memory_inputs(mem_len=0),
    name="(new memory, requires_grad)",
    mistakes=_memory_mistakes,
    forbidden=_forbid_xl,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Which shifted entries are exact? (1 point)
#
# A segment of `Tq = 4` queries attends over `Tk = 10` keys (6 memory positions and the segment itself).
# After `rel_shift`, how many of the `4 × 10` entries are exact, that is, are kept by the causal mask?
# Set `answer_exact_entries` to a number.

# %% solution id=exact_entries
answer_exact_entries = None  # replace None with your answer
### BEGIN SOLUTION
answer_exact_entries = 34
### END SOLUTION

# %% tests id=test_exact_entries points=1
check_answered(answer_exact_entries, "answer_exact_entries")
### BEGIN HIDDEN TESTS
check_value(
    answer_exact_entries,
    34,
    "answer_exact_entries",
    rel=0,
    abs_tol=0.01,
    mistakes={
        40: "not every entry is exact: entries right of j = i + Tk - Tq hold values wrapped in from the next row",
        10: "the queries see the whole memory too: query i sits at position 6 + i and sees keys 0 … 6 + i",
        30: "query i sees keys 0 … 6 + i, that is 7 + i keys, itself included",
    },
)
### END HIDDEN TESTS
