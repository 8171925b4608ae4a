"""Generation speed: KV-cached decoding vs full recomputation, measured in the same run.

Run ``python benchmarks/generation.py``. It prints tokens per second with and without the cache for the
tiny GPT at 128, 512 and 1024 generated tokens (and, on a GPU, for a model of GPT-2 small's shape with
random weights), the speed-up, and the cached per-token time relative to the shortest run, which should
stay near 1 as the sequence grows. Goal: speed-up ≥ 10× at 1024 tokens on CPU. Results go to
``benchmarks/results/generation-<device>.json``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TIMING, report, start

from tfcourse.generation import generate
from tfcourse.models import GPT, GPTConfig


def seconds_to_generate(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool) -> float:
    """Best wall time of a few greedy generations (the first call warms up)."""
    best = float("inf")
    for _ in range(1 + TIMING["rounds"]):
        if prompt.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        generate(model, prompt, new_tokens, use_cache=use_cache)
        if prompt.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def measure(name: str, config: GPTConfig, lengths: list[int], device: str, dtype: torch.dtype) -> list[dict]:
    torch.manual_seed(0)
    model = GPT(config).to(device=device, dtype=dtype).eval()
    prompt = torch.randint(0, config.vocab_size, (1, 16), device=device)
    rows, first_per_token = [], None
    for n in lengths:
        cached = seconds_to_generate(model, prompt, n, use_cache=True)
        full = seconds_to_generate(model, prompt, n, use_cache=False)
        per_token = cached / n
        first_per_token = first_per_token or per_token
        rows.append(
            {
                "what": f"{name} generate {n} tokens",
                "dtype": str(dtype).removeprefix("torch."),
                "cached_tokens_per_s": n / cached,
                "full_tokens_per_s": n / full,
                "ratio": full / cached,
                "cached_ms_per_token": per_token * 1e3,
                "per_token_vs_first": per_token / first_per_token,
                "goal": ">= 10 at 1024 tokens (CPU)",
            }
        )
    return rows


def main() -> None:
    args, env = start(__doc__)
    TIMING.update(rounds=0 if args.quick else 2)  # whole generations: a few are enough
    torch.set_grad_enabled(False)
    lengths = [16, 32] if args.quick else [128, 512, 1024]
    rows = measure("tiny GPT", GPTConfig.tiny(max_len=1100), lengths, args.device, torch.float32)
    if args.device == "cuda":
        gpt2_small = dataclasses.replace(GPTConfig(), max_len=1100, dropout=0.0)
        rows += measure("GPT-2 small shape", gpt2_small, lengths, "cuda", torch.bfloat16)
    report("generation", rows, env, args)


if __name__ == "__main__":
    main()
