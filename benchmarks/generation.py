"""Generation speed: KV-cached decoding vs full recomputation, and greedy vs sampling vs beam search.

Run ``python benchmarks/generation.py``. For the tiny GPT at 128, 256, 512 and 1024 generated tokens it
prints, all measured in the same run: tokens per second with and without the cache and their ratio (the
speed-up), the cached time per token of greedy decoding, of sampling (temperature, top-k and top-p) and
of a 4-beam search (per generated position of one prompt, all beams together), and each per-token time
relative to the 128-token run, which should stay near 1 as the sequence grows. On a GPU it adds a model
of GPT-2 small's shape with random weights. Goal: speed-up ≥ 10× at 1024 tokens on CPU, per-token time
flat. Results go to ``benchmarks/results/generation-<device>.json``.

The decoding functions run small models on one CPU thread (:func:`tfcourse.generation.decoding_threads`);
the environment line reports the thread count of the process. On CPU the times are this process's CPU
time, which a shared machine inflates far less than wall time (see :func:`best_seconds`); the wall-time
ratio and per-token time are recorded beside them.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TIMING, report, start

from tfcourse.generation import beam_search, decoding_threads, generate
from tfcourse.models import GPT, GPTConfig

SAMPLING = dict(do_sample=True, temperature=0.8, top_k=40, top_p=0.95)


def best_seconds(fn, cuda: bool) -> tuple[float, float]:
    """Best clock and wall times of a few calls (the first call warms up).

    On CPU the clock is this process's CPU time (``time.process_time``): decoding a small model runs on
    one thread, so it counts the work done, where wall time also counts the waits for a core that a
    busy machine imposes. On a GPU the clock is wall time.
    """
    best, best_wall = float("inf"), float("inf")
    for _ in range(1 + TIMING["rounds"]):
        if cuda:
            torch.cuda.synchronize()
        begin, begin_cpu = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - begin
        best_wall = min(best_wall, wall)
        best = min(best, wall if cuda else time.process_time() - begin_cpu)
    return best, best_wall


def measure(name: str, config: GPTConfig, lengths: list[int], device: str, dtype: torch.dtype) -> list[dict]:
    torch.manual_seed(0)
    model = GPT(config).to(device=device, dtype=dtype).eval()
    prompt = torch.randint(0, config.vocab_size, (1, 16), device=device)
    cuda = device == "cuda"
    with decoding_threads(model) as threads:
        pass
    rows, first = [], None
    for n in lengths:
        generator = torch.Generator(device=device).manual_seed(0)
        timed = {
            "greedy": best_seconds(lambda n=n: generate(model, prompt, n), cuda),
            "sample": best_seconds(lambda n=n, g=generator: generate(model, prompt, n, generator=g, **SAMPLING), cuda),
            "beam4": best_seconds(lambda n=n: beam_search(model, prompt, n, num_beams=4), cuda),
            "full": best_seconds(lambda n=n: generate(model, prompt, n, use_cache=False), cuda),
        }
        times = {kind: clock for kind, (clock, _) in timed.items()}
        wall = {kind: seconds for kind, (_, seconds) in timed.items()}
        per_token = {kind: seconds / n * 1e3 for kind, seconds in times.items()}
        first = first or per_token
        rows.append(
            {
                "what": f"{name} generate {n} tokens",
                "dtype": str(dtype).removeprefix("torch."),
                "decoding_threads": threads,
                "clock": "wall time" if cuda else "process CPU time",
                "cached_tokens_per_s": n / times["greedy"],
                "full_tokens_per_s": n / times["full"],
                "ratio": times["full"] / times["greedy"],
                "cached_ms_per_token": per_token["greedy"],
                "sample_ms_per_token": per_token["sample"],
                "beam4_ms_per_token": per_token["beam4"],
                "per_token_vs_first": per_token["greedy"] / first["greedy"],
                "sample_per_token_vs_first": per_token["sample"] / first["sample"],
                "beam4_per_token_vs_first": per_token["beam4"] / first["beam4"],
                "wall_ratio": wall["full"] / wall["greedy"],
                "wall_ms_per_token": wall["greedy"] / n * 1e3,
                "goal": ">= 10 at 1024 tokens (CPU)",
            }
        )
        print(
            f"  {n:>5} tokens: ratio {rows[-1]['ratio']:.1f}x; ms/token greedy {per_token['greedy']:.3f}, "
            f"sample {per_token['sample']:.3f}, beam4 {per_token['beam4']:.3f}, full {per_token['full']:.3f} "
            f"(wall: ratio {rows[-1]['wall_ratio']:.1f}x, greedy {rows[-1]['wall_ms_per_token']:.3f} ms/token)",
            flush=True,
        )
    return rows


def main() -> None:
    args, env = start(__doc__)
    TIMING.update(rounds=0 if args.quick else 2)  # whole generations: a few are enough
    torch.set_grad_enabled(False)
    lengths = [16, 32] if args.quick else [128, 256, 512, 1024]
    rows = measure("tiny GPT", GPTConfig.tiny(max_len=1100), lengths, args.device, torch.float32)
    if args.device == "cuda":
        gpt2_small = dataclasses.replace(GPTConfig(), max_len=1100, dropout=0.0)
        rows += measure("GPT-2 small shape", gpt2_small, lengths, "cuda", torch.bfloat16)
    report("generation", rows, env, args)


if __name__ == "__main__":
    main()
