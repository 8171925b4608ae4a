"""Attention speed: tfcourse vs PyTorch's nn.MultiheadAttention, and attention vs a plain matmul.

Run ``python benchmarks/attention.py`` (or ``make benchmark``). It prints one line per measurement and
writes ``benchmarks/results/attention-<device>.json``. Goals from the issue tracker:

* ``MultiHeadAttention`` no slower than ``nn.MultiheadAttention(need_weights=False)``: ratio ≥ 1.0.
* Attention forward throughput ≥ 0.8 of a same-run float32 matmul on CPU (B=2, H=8, T=1024, Dh=64);
  on GPU (bf16, T=4096) report TFLOP/s and the fraction of a bf16 matmul (goal ≥ 0.4).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import matmul_flops_per_second, report, start, time_it

from tfcourse import MultiHeadAttention, scaled_dot_product_attention


def compare_with_torch_mha(device: str, dtype: torch.dtype, batch: int, length: int, width: int, heads: int):
    """Forward and forward+backward time of ours vs ``nn.MultiheadAttention``; ratio = theirs / ours."""
    theirs = nn.MultiheadAttention(width, heads, batch_first=True).to(device=device, dtype=dtype)
    ours = MultiHeadAttention.from_torch(theirs)
    x = torch.randn(batch, length, width, device=device, dtype=dtype, requires_grad=True)
    rows = []
    for causal in (False, True):
        mask = torch.ones(length, length, device=device).tril().bool() if causal else None

        def their_forward(mask=mask):
            return theirs(x, x, x, attn_mask=None if mask is None else ~mask, need_weights=False)[0]

        def our_forward(causal=causal):
            return ours(x, causal=causal)

        for mode in ("forward", "forward+backward"):
            if mode == "forward":
                theirs.eval(), ours.eval()

                def run_theirs():
                    with torch.no_grad():
                        their_forward()

                def run_ours():
                    with torch.no_grad():
                        our_forward()
            else:
                theirs.train(), ours.train()

                def run_theirs():
                    their_forward().sum().backward()

                def run_ours():
                    our_forward().sum().backward()

            t_theirs, t_ours = time_it(run_theirs), time_it(run_ours)
            rows.append(
                {
                    "what": f"MultiHeadAttention {mode}{' causal' if causal else ''}",
                    "shape": f"B={batch} T={length} D={width} H={heads}",
                    "dtype": str(dtype).removeprefix("torch."),
                    "ours_ms": t_ours * 1e3,
                    "torch_ms": t_theirs * 1e3,
                    "ratio": t_theirs / t_ours,
                    "goal": ">= 1.0",
                }
            )
    return rows


def attention_vs_matmul(device: str, dtype: torch.dtype, batch: int, heads: int, length: int, head_dim: int):
    """Attention forward FLOP/s as a fraction of a same-run square matmul's FLOP/s."""
    q, k, v = (torch.randn(batch, heads, length, head_dim, device=device, dtype=dtype) for _ in range(3))
    peak = matmul_flops_per_second(4096 if device == "cuda" else 2048, dtype, device)
    rows = []
    for causal in (False, True):
        for impl in ("auto", "reference"):
            seconds = time_it(
                lambda impl=impl, causal=causal: scaled_dot_product_attention(q, k, v, causal=causal, impl=impl)
            )
            flops = 4 * batch * heads * length**2 * head_dim / (2 if causal else 1)  # QKᵀ and AV
            rows.append(
                {
                    "what": f"attention forward ({impl} path){' causal' if causal else ''}",
                    "shape": f"B={batch} H={heads} T={length} Dh={head_dim}",
                    "dtype": str(dtype).removeprefix("torch."),
                    "tflops": flops / seconds / 1e12,
                    "matmul_tflops": peak / 1e12,
                    "ratio": flops / seconds / peak,
                    "goal": (">= 0.4" if device == "cuda" else ">= 0.8") if impl == "auto" else "(teaching path)",
                }
            )
    return rows


def main() -> None:
    args, env = start(__doc__)
    rows = []
    if args.device == "cuda":
        rows += compare_with_torch_mha("cuda", torch.bfloat16, 8, 1024, 1024, 16)
        rows += attention_vs_matmul("cuda", torch.bfloat16, 2, 16, 4096, 64)
    else:
        b, t = (2, 64) if args.quick else (8, 256)
        rows += compare_with_torch_mha("cpu", torch.float32, b, t, 256, 8)
        rows += attention_vs_matmul("cpu", torch.float32, 2, 8, 256 if args.quick else 1024, 64)
    report("attention", rows, env, args)


if __name__ == "__main__":
    main()
