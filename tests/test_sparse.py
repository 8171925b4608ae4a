"""Sparse attention (Child et al. 2019): hand-drawn masks, reachability, fast paths vs the dense one, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.helpers import assert_close, randn
from tfcourse import _sparse_blocked
from tfcourse.attention import scaled_dot_product_attention
from tfcourse.sparse import (
    PatternDensity,
    SparsePattern,
    fixed_pattern,
    pattern_density,
    sparse_attention,
    strided_pattern,
)


def grid(rows: str) -> torch.Tensor:
    """Parse a mask drawn as rows of 1 (may attend) and . (may not), rows separated by spaces."""
    return torch.tensor([[c == "1" for c in row] for row in rows.split()])


def reach(later: torch.Tensor, earlier: torch.Tensor) -> torch.Tensor:
    """Pairs (i, j) connected by attending with ``earlier`` in one layer, then with ``later`` in the next."""
    return (later.float() @ earlier.float()) > 0  # (n, n) @ (n, n): some k with later[i, k] and earlier[k, j]


def assert_fast_close(fast: torch.Tensor, reference: torch.Tensor) -> None:
    """float32 to 1e-5 on the CPU; GPU kernels (FlexAttention) sum in another order, so 1e-4 there."""
    if fast.is_cuda:
        torch.testing.assert_close(fast.cpu(), reference.cpu(), atol=1e-4, rtol=1e-4)
    else:
        assert_close(fast, reference)


def tril(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


def qkv(gen, n, b=2, h=2, dh=16, dv=None, device="cpu", dtype=torch.float32, grad=False):
    tensors = (
        randn(b, h, n, dh, gen=gen, device=device, dtype=dtype),
        randn(b, h, n, dh, gen=gen, device=device, dtype=dtype),
        randn(b, h, n, dv or dh, gen=gen, device=device, dtype=dtype),
    )
    return tuple(x.requires_grad_(grad) for x in tensors)


# ---------------------------------------------------------------------------------------------------------
# The patterns, drawn by hand from the definitions of §4.3


def test_strided_pattern_literal():
    # n = 6, l = 2: A(1) = {max(0, i - 2), ..., i} (l + 1 = 3 keys), A(2) = {j <= i : (i - j) mod 2 = 0}.
    first = grid("1..... 11.... 111... .111.. ..111. ...111")
    second = grid("1..... .1.... 1.1... .1.1.. 1.1.1. .1.1.1")
    merged = grid("1..... 11.... 111... .111.. 1.111. .1.111")
    assert torch.equal(strided_pattern(6, 2, factorized=True), torch.stack([first, second]))
    assert torch.equal(strided_pattern(6, 2), merged)


def test_strided_pattern_literal_with_longer_stride():
    expected = grid("1....... 11...... 111..... 1111.... .1111... ..1111.. 1..1111. .1..1111")
    assert torch.equal(strided_pattern(8, 3), expected)


def test_fixed_pattern_literal():
    # n = 6, l = 3, c = 1: own block, and the last cell (index 2 mod 3) of every block.
    first = grid("1..... 11.... 111... ...1.. ...11. ...111")
    second = grid("...... ...... ..1... ..1... ..1... ..1..1")  # no summary cell before position 2 yet
    merged = grid("1..... 11.... 111... ..11.. ..111. ..1111")
    assert torch.equal(fixed_pattern(6, 3, 1, factorized=True), torch.stack([first, second]))
    assert torch.equal(fixed_pattern(6, 3, 1), merged)


def test_fixed_pattern_literal_with_two_summary_cells():
    expected = grid("1....... 11...... 111..... 1111.... ..111... ..1111.. ..11111. ..111111")
    assert torch.equal(fixed_pattern(8, 4, 2), expected)


def test_non_causal_patterns_literal():
    # Strided: the window becomes |i - j| <= l; fixed: whole blocks and every block's summary cells.
    assert torch.equal(strided_pattern(5, 2, causal=False), grid("111.1 1111. 11111 .1111 1.111"))
    assert torch.equal(fixed_pattern(6, 3, 1, causal=False), grid("111..1 111..1 111..1 ..1111 ..1111 ..1111"))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "pattern",
    [SparsePattern.strided(23, 4), SparsePattern.strided(16, 16), SparsePattern.fixed(23, 5, 2)],
    ids=["strided", "stride=n", "fixed"],
)
def test_factorised_subsets_union_to_the_merged_pattern(pattern, causal):
    pattern = SparsePattern(pattern.kind, pattern.n, pattern.period, pattern.c, causal)
    first, second = (part.mask() for part in pattern.factorize())
    assert torch.equal(first | second, pattern.mask())
    assert not torch.equal(second, pattern.mask())  # the second subset alone really is smaller
    if causal:  # the causal pattern is the non-causal one restricted to j <= i
        both_ways = SparsePattern(pattern.kind, pattern.n, pattern.period, pattern.c, causal=False)
        assert torch.equal(pattern.mask(), both_ways.mask() & tril(pattern.n))


# ---------------------------------------------------------------------------------------------------------
# Every position reaches every earlier one in two steps (§4.2), with subsets of size O(√n)


@pytest.mark.parametrize("n,stride", [(64, 8), (50, 7), (100, 10)])
def test_strided_subsets_connect_everything_in_two_steps(n, stride):
    first, second = strided_pattern(n, stride, factorized=True)
    assert torch.equal(reach(second, first), tril(n))  # window, then stride
    assert torch.equal(reach(first, second), tril(n))  # stride, then window
    assert not torch.equal(reach(first, first), tril(n))  # one subset alone cannot do it
    assert not torch.equal(first | second, tril(n))  # nor can one step
    assert int((first | second).sum(dim=1).max()) <= stride + 1 + n // stride


@pytest.mark.parametrize("n,block,c", [(64, 8, 1), (50, 7, 2), (96, 16, 4)])
def test_fixed_subsets_connect_everything_in_two_steps(n, block, c):
    first, second = fixed_pattern(n, block, c, factorized=True)
    both = first | second  # one layer with one head per subset
    assert torch.equal(reach(both, both), tril(n))
    # The path of the paper: a summary cell gathers its block (A1), later positions read it (A2).
    assert torch.equal(reach(second, first) | first, tril(n))
    assert not torch.equal(reach(first, first), tril(n))
    assert not torch.equal(both, tril(n))


# ---------------------------------------------------------------------------------------------------------
# Densities


def test_density_literal_values():
    strided = SparsePattern.strided(8, 3)  # 28 allowed pairs, drawn in test_strided_pattern_literal_with_longer_stride
    assert pattern_density(strided, block_size=4) == PatternDensity(28 / 64, 3 / 4)
    fixed = SparsePattern.fixed(8, 4, 1)  # rows hold 1, 2, 3, 4, 2, 3, 4, 5 keys
    assert pattern_density(fixed, block_size=4) == PatternDensity(24 / 64, 3 / 4)
    assert pattern_density(fixed, block_size=2) == PatternDensity(24 / 64, 8 / 16)
    causal = SparsePattern.strided(10, 10)  # the window covers everything: full causal attention
    assert pattern_density(causal, block_size=3) == PatternDensity(55 / 100, 10 / 16)  # 4 × 4 tiles, last partial
    assert pattern_density(SparsePattern.fixed(6, 3, 1, causal=False), block_size=3).element == 24 / 36


def test_density_matches_the_dense_mask():
    pattern = SparsePattern.fixed(300, 16, 3)
    mask = pattern.mask()
    tiles = torch.nn.functional.pad(mask, (0, 20, 0, 20)).view(5, 64, 5, 64).any(dim=3).any(dim=1)  # (5, 5)
    density = pattern_density(pattern, block_size=64)
    assert density.element == pytest.approx(int(mask.sum()) / 300**2)
    assert density.block == pytest.approx(int(tiles.sum()) / 25)
    assert density.block > 2 * density.element  # tiles are coarser than pairs


def test_gpu_layout_is_far_sparser_than_the_natural_order():
    # Every stride-th column touches every tile; in residue-major order the strided subset is block-diagonal.
    pattern = SparsePattern.strided(2048, 64)
    natural = pattern_density(pattern, block_size=128).block
    assert natural > 0.5
    assert _sparse_blocked.flex_tile_density(pattern, "cpu") < natural / 2.5


# ---------------------------------------------------------------------------------------------------------
# The fast paths agree with the dense reference path

PATTERNS = [
    pytest.param(SparsePattern("strided", 64, 8), id="strided-merged"),
    pytest.param(SparsePattern("strided", 37, 6, subset=1), id="strided-A1"),
    pytest.param(SparsePattern("strided", 130, 9, subset=2), id="strided-A2"),
    pytest.param(SparsePattern("strided", 130, 12, causal=False), id="strided-noncausal"),
    pytest.param(SparsePattern("fixed", 64, 16, 4), id="fixed-merged"),
    pytest.param(SparsePattern("fixed", 37, 8, 2, subset=1), id="fixed-A1"),
    pytest.param(SparsePattern("fixed", 130, 16, 3, subset=2), id="fixed-A2"),
    pytest.param(SparsePattern("fixed", 130, 20, 5, causal=False), id="fixed-noncausal"),
    pytest.param(SparsePattern("fixed", 300, 32, 8), id="fixed-n300"),
    pytest.param(SparsePattern("strided", 300, 17), id="strided-n300"),
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_fast_path_equals_reference(gen, device, pattern):
    q, k, v = qkv(gen, pattern.n, dv=32, device=device)
    fast = sparse_attention(q, k, v, pattern)  # blocked on CPU, FlexAttention on CUDA
    reference = sparse_attention(q, k, v, pattern, impl="reference")
    assert fast.shape == (2, 2, pattern.n, 32) and fast.dtype == torch.float32 and fast.device == q.device
    assert_fast_close(fast, reference)
    assert_close(sparse_attention(q, k, v, pattern, impl="blocked"), reference)  # the blocked path on any device
    dense = scaled_dot_product_attention(q, k, v, pattern.mask(device), impl="reference")
    assert_close(reference, dense)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_fast_path_gradients_equal_reference(gen, device, pattern):
    q, k, v = qkv(gen, pattern.n, device=device, grad=True)
    upstream = randn(2, 2, pattern.n, 16, gen=gen, device=device)
    grads = [
        torch.autograd.grad(sparse_attention(q, k, v, pattern, impl=impl), (q, k, v), upstream)
        for impl in ("auto", "reference")
    ]
    for fast, reference in zip(*grads, strict=True):
        assert_fast_close(fast, reference)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("pattern", PATTERNS)
def test_flex_layouts_on_cpu_equal_reference(gen, pattern):
    # Eager FlexAttention on the CPU checks the GPU path's permutation, gathering and masks (forward only).
    q, k, v = qkv(gen, pattern.n)
    flex = sparse_attention(q, k, v, pattern, impl="flex")
    assert_close(flex, sparse_attention(q, k, v, pattern, impl="reference"))


def test_blocked_path_in_many_small_chunks(gen, monkeypatch):
    # Tiny chunks exercise the split into groups and query rows and the causal key prefixes.
    monkeypatch.setattr(_sparse_blocked, "_CHUNK_ELEMENTS", 200)
    _sparse_blocked._plan.cache_clear()
    try:
        for pattern in (SparsePattern.strided(150, 7), SparsePattern.fixed(150, 16, 4), SparsePattern.fixed(150, 4, 1)):
            _, plan = _sparse_blocked._plan(pattern, _sparse_blocked.parts(pattern)[-1][0], "cpu", 4)
            assert sum(len(rows) for rows in plan) > 3
            q, k, v = qkv(gen, 150)
            assert_close(
                sparse_attention(q, k, v, pattern, impl="blocked"), sparse_attention(q, k, v, pattern, impl="reference")
            )
    finally:
        _sparse_blocked._plan.cache_clear()


def test_bfloat16_follows_the_inputs(gen, device):
    pattern = SparsePattern.fixed(70, 16, 4)
    q, k, v = qkv(gen, 70, device=device, dtype=torch.bfloat16)
    fast = sparse_attention(q, k, v, pattern)
    assert fast.dtype == torch.bfloat16 and fast.device == q.device
    assert_close(fast, sparse_attention(q.float(), k.float(), v.float(), pattern, impl="reference"), torch.bfloat16)


def test_one_subset_per_group_of_heads(gen, device):
    # Factorised attention: heads 0-1 use A(1), heads 2-3 use A(2), checked against per-head dense masks.
    pattern = SparsePattern.strided(40, 6)
    q, k, v = qkv(gen, 40, h=4, device=device)
    masks = strided_pattern(40, 6, factorized=True, device=device).repeat_interleave(2, dim=0)  # (4, n, n)
    expected = scaled_dot_product_attention(q, k, v, masks, impl="reference")
    for impl in ("auto", "reference"):
        assert_fast_close(sparse_attention(q, k, v, pattern.factorize(), impl=impl), expected)
    merged = sparse_attention(q, k, v, pattern)
    assert not torch.allclose(merged, expected)  # the head groups really do differ from the merged pattern


@pytest.mark.parametrize("impl", ["auto", "reference"])
def test_queries_without_keys_give_zeros_and_finite_gradients(gen, device, impl):
    # With A(2) of the fixed pattern alone, positions 0..l-c-1 have no summary cell to attend to yet.
    pattern = SparsePattern("fixed", 40, 8, 2, subset=2)
    q, k, v = qkv(gen, 40, device=device, grad=True)
    out = sparse_attention(q, k, v, pattern, impl=impl)
    assert torch.equal(out[:, :, :6], torch.zeros_like(out[:, :, :6]))
    assert bool((out[:, :, 6:].abs().sum(-1) > 0).all())
    out.square().sum().backward()
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all()
    assert torch.equal(q.grad[:, :, :6], torch.zeros_like(q.grad[:, :, :6]))


def test_explicit_scale(gen):
    pattern = SparsePattern.strided(50, 7)
    q, k, v = qkv(gen, 50)
    fast = sparse_attention(q, k, v, pattern, scale=0.3)
    assert_close(fast, scaled_dot_product_attention(q, k, v, pattern.mask(), scale=0.3, impl="reference"))
    assert not torch.allclose(fast, sparse_attention(q, k, v, pattern))


# ---------------------------------------------------------------------------------------------------------
# Memory: the blocked path never builds an n × n matrix

MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, torch
    from tfcourse.sparse import SparsePattern, sparse_attention
    n = 16384
    q, k, v = (torch.randn(1, 1, n, 16) for _ in range(3))
    peaks = {}
    for pattern in (SparsePattern.strided(n, 128), SparsePattern.fixed(n, 128, 8)):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with torch.no_grad():
            out = sparse_attention(q, k, v, pattern)
        peaks[pattern.kind] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
        assert torch.isfinite(out).all()
    print(json.dumps(peaks))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")
def test_blocked_path_peak_memory_is_far_below_n_squared():
    # A fresh process, so the peak resident size (ru_maxrss) measures this computation alone.
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    n_squared_floats = 16384**2 * 4  # 1 GiB: one dense float32 score matrix
    for kind in ("strided", "fixed"):
        assert peaks[kind] < n_squared_floats / 5, f"{kind}: peak grew by {peaks[kind] / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------------------------------
# Bad input


def test_pattern_errors_name_the_argument_and_values():
    with pytest.raises(ValueError, match="stride must be positive, got 0"):
        strided_pattern(8, 0)
    with pytest.raises(TypeError, match="block must be an int"):
        fixed_pattern(8, 2.5, 1)
    with pytest.raises(ValueError, match="c must be at most block=4, got c=5"):
        fixed_pattern(8, 4, 5)
    with pytest.raises(ValueError, match="c must be positive, got 0"):
        SparsePattern.fixed(8, 4, 0)
    with pytest.raises(ValueError, match="n must be positive, got -3"):
        SparsePattern.strided(-3, 2)
    with pytest.raises(ValueError, match="kind must be one of"):
        SparsePattern("dilated", 8, 2)
    with pytest.raises(ValueError, match="subset must be None"):
        SparsePattern("strided", 8, 2, subset=3)
    with pytest.raises(TypeError, match="causal must be a bool"):
        SparsePattern.strided(8, 2, causal="yes")
    with pytest.raises(ValueError, match="block_size must be positive"):
        pattern_density(SparsePattern.strided(8, 2), block_size=0)


def test_attention_errors_name_the_argument_and_shapes(gen):
    q, k, v = qkv(gen, 12)
    pattern = SparsePattern.strided(12, 3)
    with pytest.raises(
        ValueError, match=r"pattern.n=10 does not match the sequence length of q, shape \(2, 2, 12, 16\)"
    ):
        sparse_attention(q, k, v, SparsePattern.strided(10, 3))
    with pytest.raises(ValueError, match=r"q must have 4 dimensions, got shape \(2, 12, 16\)"):
        sparse_attention(q[0], k[0], v[0], pattern)
    with pytest.raises(TypeError, match="share a dtype"):
        sparse_attention(q, k.double(), v, pattern)
    with pytest.raises(TypeError, match="k must be a floating-point tensor, got dtype torch.int64"):
        sparse_attention(q, k.long(), v, pattern)
    with pytest.raises(ValueError, match=r"q \(2, 2, 12, 16\), k \(2, 2, 11, 16\)"):
        sparse_attention(q, k[:, :, :11], v, pattern)
    with pytest.raises(ValueError, match=r"3 patterns do not divide the H=2 heads"):
        sparse_attention(q, k, v, [pattern] * 3)
    with pytest.raises(TypeError, match="got a tensor"):
        sparse_attention(q, k, v, pattern.mask())
    with pytest.raises(ValueError, match="impl must be one of"):
        sparse_attention(q, k, v, pattern, impl="triton")
