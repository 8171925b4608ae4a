# %% [markdown]
# # Exercise 12 · Sparse attention patterns
#
# This notebook goes with chapter 12. Masks are `(n, n)` `torch.bool` tensors, True = query `i` (row) may
# attend to key `j` (column). You will write
#
# 1. the strided pattern of Child et al. (2019), merged or factorised;
# 2. the fixed pattern;
# 3. the element and block density of a pattern;
# 4. and count the allowed pairs of a strided pattern.
#
# Run the test cell under each part to check your answer. The tests draw new random inputs every time and
# compare your results with `tfcourse`; the grader runs a few more tests of the same kind, and checks the
# numeric answer. tfcourse's pattern functions are switched off while your code is being checked.

# %% locked id=setup
import torch

from tfcourse import masks as ref_masks
from tfcourse import sparse as ref_sparse
from tfcourse.grading import Mistake, check_answered, check_function, check_value, guard, inputs

# %% [markdown]
# ## 1. The strided pattern (3 points)
#
# With period `l = stride`, the two subsets are
#
# - `A1`: the local window `{max(0, i - l), …, i}`: the previous `l` positions **and** `i` itself, `l + 1` keys;
# - `A2`: every `l`-th position counting back from `i`: `{j : (i - j) mod l = 0}`.
#
# With `causal`, keep only `j <= i`; without it, the window is the symmetric `|i - j| <= l` and `A2` is used
# as written. Return the merged mask `A1 ∪ A2` `(n, n)`, or with `factorized` the two subsets stacked
# `(2, n, n)` (`A1` first). Build them by broadcasting position grids, without a Python loop.


# %% solution id=strided_pattern
def strided_pattern(n: int, stride: int, causal: bool, factorized: bool) -> torch.Tensor:
    """Strided pattern: (n, n) merged, or (2, n, n) factorised."""
    ### BEGIN SOLUTION
    i = torch.arange(n)[:, None]  # (n, 1) queries
    j = torch.arange(n)[None, :]  # (1, n) keys
    window = (i - j).abs() <= stride  # (n, n)
    every_l = (i - j) % stride == 0  # (n, n)
    if causal:
        window, every_l = window & (j <= i), every_l & (j <= i)
    return torch.stack([window, every_l]) if factorized else window | every_l
    ### END SOLUTION


# %% tests id=test_strided_pattern points=3
def _strided(n, stride, causal, factorized):
    return ref_sparse.strided_pattern(n, stride, causal, factorized=factorized)


def _combined(window, every_l, causal, factorized):
    """The two subsets, each (n, n) or one row for every query, kept causal or not, stacked or merged."""
    n = window.shape[-1]
    window, every_l = window.expand(n, n), every_l.expand(n, n)
    if causal:
        window, every_l = window & ref_masks.causal_mask(n), every_l & ref_masks.causal_mask(n)
    return torch.stack([window, every_l]) if factorized else window | every_l


def _window_of_l_keys(n, stride, causal, factorized):
    # tfcourse's window for stride - 1 (just the diagonal for stride 1) with the every-stride-th keys of stride
    window = _strided(n, stride - 1, False, True)[0] if stride > 1 else torch.eye(n, dtype=torch.bool)
    return _combined(window, _strided(n, stride, False, True)[1], causal, factorized)


def _columns_mod_l(n, stride, causal, factorized):
    # every query gets the keys of query 0's second subset: the columns j with j mod stride = 0
    window, every_l = _strided(n, stride, False, True)
    return _combined(window, every_l[0], causal, factorized)


def _strided_inputs(causal=True, factorized=None):
    n = inputs.size(2, 14)
    factorized = bool(inputs.size(0, 1)) if factorized is None else factorized
    return {"n": n, "stride": inputs.size(1, max(1, n // 2)), "causal": causal, "factorized": factorized}


_strided_mistakes = [
    Mistake(
        "window-of-l-keys",
        "your window holds l keys; the paper's A1 is {i - l, …, i}, the previous l positions and i itself (l + 1 keys)",
        _window_of_l_keys,
    ),
    Mistake(
        "columns-mod-l",
        "A2 holds the keys at distances that are multiples of l from the query, (i - j) mod l = 0, not the "
        "columns j mod l = 0 (that is closer to the fixed pattern)",
        _columns_mod_l,
    ),
    Mistake(
        "not-causal",
        "the causal pattern keeps only keys j <= i",
        lambda n, s, c, f: _strided(n, s, False, f),
    ),
]
check_function(
    strided_pattern,
    _strided,
    lambda: _strided_inputs(factorized=True),
    name="strided pattern",
    mistakes=_strided_mistakes,
    forbidden=guard.SPARSE,
)
check_function(
    strided_pattern,
    _strided,
    lambda: _strided_inputs(factorized=False),
    name="strided pattern",
    mistakes=_strided_mistakes,
    forbidden=guard.SPARSE,
)
### BEGIN HIDDEN TESTS
# hidden: non-causal, a single position, stride 1
check_function(
    strided_pattern,
    _strided,
    lambda: _strided_inputs(causal=False),
    name="strided pattern (non-causal)",
    mistakes=_strided_mistakes,
    forbidden=guard.SPARSE,
)
check_function(
    strided_pattern,
    _strided,
    lambda: {"n": 1, "stride": 1, "causal": True, "factorized": True},
    name="strided pattern",
    forbidden=guard.SPARSE,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 2. The fixed pattern (3 points)
#
# With block length `l = block` and `c` summary cells per block (`1 <= c <= l`):
#
# - `A1`: the own block, `{j : j // l == i // l}`;
# - `A2`: the last `c` cells of every block, `{j : j mod l >= l - c}`.
#
# With `causal`, keep only `j <= i`. Return the merged mask `(n, n)`, or with `factorized` the two subsets
# stacked `(2, n, n)`.


# %% solution id=fixed_pattern
def fixed_pattern(n: int, block: int, c: int, causal: bool, factorized: bool) -> torch.Tensor:
    """Fixed pattern: (n, n) merged, or (2, n, n) factorised."""
    ### BEGIN SOLUTION
    i = torch.arange(n)[:, None]  # (n, 1)
    j = torch.arange(n)[None, :]  # (1, n)
    own_block = (i // block == j // block).expand(n, n)
    summaries = (j % block >= block - c).expand(n, n)
    if causal:
        own_block, summaries = own_block & (j <= i), summaries & (j <= i)
    return torch.stack([own_block, summaries]) if factorized else own_block | summaries
    ### END SOLUTION


# %% tests id=test_fixed_pattern points=3
def _fixed(n, block, c, causal, factorized):
    return ref_sparse.fixed_pattern(n, block, c, causal, factorized=factorized)


def _first_c_cells(n, block, c, causal, factorized):
    # the summary columns of a longer pattern read from column block - c on: j mod block < c
    first = _fixed(n + block, block, c, False, True)[1][0, block - c : block - c + n]  # (n,)
    return _combined(_fixed(n, block, c, False, True)[0], first, causal, factorized)


def _fixed_inputs(causal=True, factorized=None):
    n, block = inputs.size(3, 14), inputs.size(2, 5)
    factorized = bool(inputs.size(0, 1)) if factorized is None else factorized
    return {"n": n, "block": block, "c": inputs.size(1, block - 1), "causal": causal, "factorized": factorized}


_fixed_mistakes = [
    Mistake(
        "first-c-cells",
        "the summary cells are the last c of each block (j mod l >= l - c), not the first c",
        _first_c_cells,
    ),
    Mistake(
        "c-plus-one-cells",
        "your blocks have c + 1 summary cells: j mod l >= l - c",
        lambda n, b, c, ca, f: _fixed(n, b, min(c + 1, b), ca, f),
    ),
    Mistake(
        "not-causal", "the causal pattern keeps only keys j <= i", lambda n, b, c, ca, f: _fixed(n, b, c, False, f)
    ),
]
check_function(
    fixed_pattern,
    _fixed,
    lambda: _fixed_inputs(factorized=True),
    name="fixed pattern",
    mistakes=_fixed_mistakes,
    forbidden=guard.SPARSE,
)
check_function(
    fixed_pattern,
    _fixed,
    lambda: _fixed_inputs(factorized=False),
    name="fixed pattern",
    mistakes=_fixed_mistakes,
    forbidden=guard.SPARSE,
)
### BEGIN HIDDEN TESTS
# hidden: non-causal, and c = block (every cell summarises)
check_function(
    fixed_pattern,
    _fixed,
    lambda: _fixed_inputs(causal=False),
    name="fixed pattern (non-causal)",
    mistakes=_fixed_mistakes,
    forbidden=guard.SPARSE,
)
check_function(
    fixed_pattern,
    _fixed,
    lambda: {"n": 7, "block": 3, "c": 3, "causal": True, "factorized": False},
    name="fixed pattern",
    forbidden=guard.SPARSE,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 3. Element and block density (2 points)
#
# A pattern's **element density** is the fraction of the `n²` (query, key) pairs it allows. A block-sparse
# kernel works on `block_size × block_size` tiles and pays for every tile holding at least one allowed pair;
# the **block density** is the fraction of the `ceil(n / block_size)²` tiles that do (tiles at the end may be
# partial). Return both, `(element, block)` as Python floats, for the causal, merged strided pattern with
# `n` and `stride` (use your `strided_pattern`).


# %% solution id=strided_density
def strided_density(n: int, stride: int, block_size: int) -> tuple[float, float]:
    """(element density, block density) of the causal merged strided pattern."""
    ### BEGIN SOLUTION
    mask = strided_pattern(n, stride, True, False)  # (n, n)
    tiles = -(-n // block_size)
    padded = torch.zeros(tiles * block_size, tiles * block_size, dtype=torch.bool)
    padded[:n, :n] = mask
    busy = padded.view(tiles, block_size, tiles, block_size).any(dim=3).any(dim=1)  # (tiles, tiles)
    return mask.sum().item() / n**2, busy.sum().item() / tiles**2
    ### END SOLUTION


# %% tests id=test_strided_density points=2
def _density(n, stride, block_size):
    return tuple(ref_sparse.pattern_density(ref_sparse.SparsePattern.strided(n, stride), block_size))


def _density_inputs():
    n = inputs.size(4, 40)
    return {"n": n, "stride": inputs.size(2, 6), "block_size": inputs.size(2, 8)}


def _over_causal_half(n, stride, block_size):
    element, block = _density(n, stride, block_size)
    return element * n**2 / (n * (n + 1) / 2), block


_density_mistakes = [
    Mistake(
        "element-over-causal-pairs",
        "the element density divides by all n² pairs, not by the n(n + 1)/2 pairs of the causal triangle",
        _over_causal_half,
    ),
]
check_function(
    strided_density,
    _density,
    _density_inputs,
    name="(element density, block density)",
    mistakes=_density_mistakes,
    forbidden=guard.SPARSE,
)
### BEGIN HIDDEN TESTS
check_function(
    strided_density,
    _density,
    lambda: {"n": 10, "stride": 3, "block_size": 4},
    name="(element density, block density) with partial tiles",
    mistakes=_density_mistakes,
    forbidden=guard.SPARSE,
    trials=1,
)
### END HIDDEN TESTS

# %% [markdown]
# ## 4. Counting allowed pairs (1 point)
#
# How many (query, key) pairs does the causal, merged strided pattern with `n = 16` and `stride = 4` allow?
# Set `answer_strided_pairs` to a number (work it out by hand, then check it with your function).

# %% solution id=strided_pairs
answer_strided_pairs = None  # replace None with your answer
### BEGIN SOLUTION
answer_strided_pairs = 82
### END SOLUTION

# %% tests id=test_strided_pairs points=1
check_answered(answer_strided_pairs, "answer_strided_pairs")
### BEGIN HIDDEN TESTS
check_value(
    answer_strided_pairs,
    82,
    "answer_strided_pairs",
    rel=0,
    abs_tol=0.01,
    mistakes={
        136: "that is the full causal mask; the strided pattern keeps the window and every 4th key only",
        70: "that is the window A1 alone; add the keys of A2 that lie outside the window",
        256: "that is every pair; the pattern is causal and sparse",
    },
)
### END HIDDEN TESTS
