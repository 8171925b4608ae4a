"""Sparse attention speed: the fast path of sparse_attention vs dense attention at long lengths.

Run ``python benchmarks/sparse.py`` (or ``make benchmark``). It prints one line per measurement and writes
``benchmarks/results/sparse-<device>.json``. Here ``ratio`` is a *time* ratio, sparse / dense (lower is
better), printed next to the pattern's densities. Patterns as in Child et al. (2019): strided with l = √n,
fixed with l = 128, c = 8, both causal and merged. Goals from the issue tracker:

* CPU (float32, n ≥ 4096): the blocked path beats dense attention, with the same mask through
  ``tfcourse.scaled_dot_product_attention`` and PyTorch's own causal kernel: ratio < 1.
* GPU (bf16, n up to 65536): against PyTorch's causal flash kernel, ratio ≤ 1.2 × the tile ratio, i.e.
  the 128 × 128 tiles FlexAttention visits in the permuted/gathered layouts over the tiles causal attention
  visits: the sparse kernel should cost no more per tile than the dense one.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report, start, time_it

from tfcourse import SparsePattern, pattern_density, scaled_dot_product_attention, sparse_attention
from tfcourse._sparse_blocked import flex_tile_density


def patterns(n: int) -> list[tuple[str, SparsePattern]]:
    """The paper's settings: strided with l ≈ √n, fixed with l = 128 and c = 8 (clipped for short n)."""
    stride = 2 ** round(math.log2(math.sqrt(n)))
    block = min(128, n)
    return [
        (f"strided l={stride}", SparsePattern.strided(n, stride)),
        (f"fixed l={block} c=8", SparsePattern.fixed(n, block, min(8, block))),
    ]


def timed(fn) -> float:
    """Seconds per call of ``fn`` without autograd, after one warm-up call (FlexAttention compiles then)."""

    def run():
        with torch.no_grad():
            fn()

    run()
    return time_it(run)


def timed_backward(fn) -> float:
    """Seconds per forward + backward of ``fn().sum()``, after one warm-up call."""

    def run():
        fn().sum().backward()

    run()
    return time_it(run)


def causal_tiles(n: int, tile: int = 128) -> float:
    """Fraction of the ``⌈n/tile⌉²`` tiles that causal attention visits."""
    blocks = math.ceil(n / tile)
    return (blocks + 1) / (2 * blocks)


def compare(device: str, dtype: torch.dtype, batch: int, heads: int, n: int, head_dim: int, dense_mask: bool):
    """Rows for one length: each pattern vs dense with its mask (when it fits) and vs PyTorch's causal kernel."""
    if device == "cuda":
        # Every length and pattern compiles its own FlexAttention kernels; starting afresh keeps the run under
        # torch.compile's recompile limit, past which FlexAttention would fall back to its slow eager form.
        torch.compiler.reset()
    q, k, v = (torch.randn(batch, heads, n, head_dim, device=device, dtype=dtype) for _ in range(3))
    t_causal = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    shape, rows = f"B={batch} H={heads} n={n} Dh={head_dim}", []
    cpu_goal = "< 1.0" if n >= 4096 else "n/a below n = 4096"
    for label, pattern in patterns(n):
        density = pattern_density(pattern, block_size=128, device=device)
        t_sparse = timed(lambda pattern=pattern: sparse_attention(q, k, v, pattern))
        common = {
            "shape": shape,
            "dtype": str(dtype).removeprefix("torch."),
            "block_density": density.block,
            "element_density": density.element,
            "sparse_ms": t_sparse * 1e3,
        }
        if device == "cuda":
            tile_ratio = flex_tile_density(pattern, device) / causal_tiles(n)
            common["tile_ratio"] = tile_ratio
        if dense_mask:
            mask = pattern.mask(device)
            t_masked = timed(lambda mask=mask: scaled_dot_product_attention(q, k, v, mask))
            rows.append(
                {
                    "what": f"sparse {label} vs dense with its mask",
                    **common,
                    "dense_ms": t_masked * 1e3,
                    "ratio": t_sparse / t_masked,
                    "goal": cpu_goal if device == "cpu" else "(dense cannot skip masked tiles)",
                }
            )
        goal = cpu_goal if device == "cpu" else f"<= {1.2 * common['tile_ratio']:.3f} (1.2 × tile ratio)"
        rows.append(
            {
                "what": f"sparse {label} vs F.sdpa causal",
                **common,
                "dense_ms": t_causal * 1e3,
                "ratio": t_sparse / t_causal,
                "goal": goal,
            }
        )
    return rows


def compare_training(device: str, dtype: torch.dtype, batch: int, heads: int, n: int, head_dim: int):
    """Forward + backward of each pattern vs PyTorch's causal kernel, as a learner's training step sees it."""
    if device == "cuda":
        torch.compiler.reset()  # as in compare()
    q, k, v = (torch.randn(batch, heads, n, head_dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    t_causal = timed_backward(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
    rows = []
    for label, pattern in patterns(n):
        t_sparse = timed_backward(lambda pattern=pattern: sparse_attention(q, k, v, pattern))
        rows.append(
            {
                "what": f"sparse {label} fwd+bwd vs F.sdpa causal",
                "shape": f"B={batch} H={heads} n={n} Dh={head_dim}",
                "dtype": str(dtype).removeprefix("torch."),
                "sparse_ms": t_sparse * 1e3,
                "dense_ms": t_causal * 1e3,
                "ratio": t_sparse / t_causal,
                "goal": "(training step, for information)",
            }
        )
    return rows


def main() -> None:
    args, env = start(__doc__)
    rows = []
    if args.device == "cuda":
        lengths = [4096] if args.quick else [4096, 16384, 65536]
        for n in lengths:
            rows += compare("cuda", torch.bfloat16, 1, 16, n, 64, dense_mask=n <= 16384)
        rows += compare_training("cuda", torch.bfloat16, 1, 16, lengths[-1] if args.quick else 16384, 64)
    else:
        lengths = [1024] if args.quick else [4096, 16384]
        for n in lengths:
            rows += compare("cpu", torch.float32, 1, 4, n, 64, dense_mask=True)
        rows += compare_training("cpu", torch.float32, 1, 4, lengths[0], 64)
    report("sparse", rows, env, args)


if __name__ == "__main__":
    main()
