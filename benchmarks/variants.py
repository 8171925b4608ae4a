"""What position schemes and training cost on top of plain attention, and how close decoding is to memory speed.

Run ``python benchmarks/variants.py``. In one run it measures, for ``MultiHeadAttention``:

* forward and forward+backward FLOP/s as a fraction of a same-run matrix product;
* the time of each bias variant (T5 bucket bias, Shaw relative bias, RoPE) relative to plain causal
  attention — goal ≤ 1.2;
* the per-token time of one KV-cached decoding step against the bytes-over-bandwidth floor (the cache
  and the weights must be read once per token), with the bandwidth measured by a same-run copy.

On a GPU it uses bfloat16 and T = 4096; on the CPU float32 and T = 1024. Results go to
``benchmarks/results/variants-<device>.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import matmul_flops_per_second, report, start, time_it

from tfcourse import KVCache, MultiHeadAttention, RotaryEmbedding, ShawRelativeBias, T5RelativeBias


def mha_flops(batch: int, length: int, width: int, causal: bool) -> float:
    """Forward FLOPs: four projections plus QKᵀ and AV (half of those when causal)."""
    projections = 4 * 2 * batch * length * width * width
    attention = 4 * batch * length * length * width / (2 if causal else 1)
    return projections + attention


def throughput(device: str, dtype: torch.dtype, batch: int, length: int, width: int, heads: int) -> list[dict]:
    """MultiHeadAttention FLOP/s (forward, forward+backward) as a fraction of a square matmul's."""
    mha = MultiHeadAttention(width, heads).to(device=device, dtype=dtype)
    x = torch.randn(batch, length, width, device=device, dtype=dtype, requires_grad=True)
    peak = matmul_flops_per_second(4096 if device == "cuda" else 2048, dtype, device)
    rows = []
    for causal in (False, True):
        flops = mha_flops(batch, length, width, causal)
        forward = time_it(lambda causal=causal: mha(x, causal=causal))
        training = time_it(lambda causal=causal: mha(x, causal=causal).sum().backward())
        for mode, seconds, work in (("forward", forward, flops), ("forward+backward", training, 3 * flops)):
            rows.append(
                {
                    "what": f"MultiHeadAttention {mode}{' causal' if causal else ''} vs matmul",
                    "shape": f"B={batch} T={length} D={width} H={heads}",
                    "dtype": str(dtype).removeprefix("torch."),
                    "tflops": work / seconds / 1e12,
                    "matmul_tflops": peak / 1e12,
                    "ratio": work / seconds / peak,
                    "goal": ">= 0.4 (GPU)" if device == "cuda" else "(for information)",
                }
            )
    return rows


def bias_variants(device: str, dtype: torch.dtype, batch: int, length: int, width: int, heads: int) -> list[dict]:
    """Causal attention with each relative-position scheme, timed against plain causal attention."""
    torch.manual_seed(0)
    plain = MultiHeadAttention(width, heads).to(device=device, dtype=dtype)
    rope = MultiHeadAttention(width, heads, rotary=RotaryEmbedding(width // heads)).to(device=device, dtype=dtype)
    rope.load_state_dict(plain.state_dict())
    t5 = T5RelativeBias(heads).to(device=device, dtype=dtype)
    shaw = ShawRelativeBias(heads, 128).to(device=device, dtype=dtype)
    x = torch.randn(batch, length, width, device=device, dtype=dtype)
    variants = {
        "T5 bucket bias": lambda: plain(x, causal=True, bias=t5(length)),
        "Shaw relative bias": lambda: plain(x, causal=True, bias=shaw(length)),
        "RoPE": lambda: rope(x, causal=True),
    }
    rows = []
    with torch.no_grad():
        base = time_it(lambda: plain(x, causal=True))
        for name, fn in variants.items():
            seconds = time_it(fn)
            rows.append(
                {
                    "what": f"causal attention with {name} vs plain",
                    "shape": f"B={batch} T={length} D={width} H={heads}",
                    "dtype": str(dtype).removeprefix("torch."),
                    "variant_ms": seconds * 1e3,
                    "plain_ms": base * 1e3,
                    "ratio": seconds / base,
                    "goal": "<= 1.2",
                }
            )
    return rows


def copy_bandwidth(device: str) -> float:
    """Bytes per second of a large same-run copy (read + write)."""
    source = torch.empty(64 * 2**20 if device == "cuda" else 16 * 2**20, device=device)  # 256 / 64 MiB
    target = torch.empty_like(source)
    seconds = time_it(lambda: target.copy_(source))
    return 2 * source.numel() * source.element_size() / seconds


def decode_step(device: str, dtype: torch.dtype, batch: int, cached: int, width: int, heads: int) -> list[dict]:
    """One cached decoding step's time against the floor set by reading the cache and the weights."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(width, heads).to(device=device, dtype=dtype).eval()
    cache = KVCache(batch, heads, cached + 1, width // heads, dtype=dtype, device=device)
    cache.update(*(torch.randn(batch, heads, cached, width // heads, device=device, dtype=dtype) for _ in range(2)))
    token = torch.randn(batch, 1, width, device=device, dtype=dtype)

    def step():
        cache.length = cached  # overwrite the same slot each time: the cache length stays fixed
        mha(token, causal=True, cache=cache)

    with torch.no_grad():
        seconds = time_it(step)
    element = torch.finfo(dtype).bits // 8
    bytes_read = (2 * batch * cached * width + 4 * width * width) * element  # K and V caches, four weight matrices
    floor = bytes_read / copy_bandwidth(device)
    return [
        {
            "what": f"KV-cached decode step over {cached} cached tokens",
            "shape": f"B={batch} D={width} H={heads}",
            "dtype": str(dtype).removeprefix("torch."),
            "step_ms": seconds * 1e3,
            "floor_ms": floor * 1e3,
            "ratio": floor / seconds,
            "goal": "(fraction of memory speed; 1 = the floor)",
        }
    ]


def main() -> None:
    args, env = start(__doc__)
    if args.device == "cuda":
        dtype, batch, length, width, heads, cached = torch.bfloat16, 2, 4096, 1024, 16, 16384
    else:
        dtype, batch, length, width, heads, cached = torch.float32, 2, 1024, 512, 8, 4096
    if args.quick:
        batch, length, width, heads, cached = 1, 128, 64, 4, 256
    rows = throughput(args.device, dtype, batch, length, width, heads)
    rows += bias_variants(args.device, dtype, batch, length, width, heads)
    rows += decode_step(args.device, dtype, 1, cached, width, heads)
    report("variants", rows, env, args)


if __name__ == "__main__":
    main()
