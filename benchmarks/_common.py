"""Shared helpers for the benchmark scripts: timing, environment report and JSON output.

Benchmarks print ratios between measurements taken in the same run, because absolute times on a shared
machine drift from run to run while ratios stay meaningful.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils import benchmark

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: str) -> str:
    """A human-readable name of the device the numbers come from."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def environment(device: str) -> dict:
    """Versions and device, printed at the top of each benchmark and stored with its results."""
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if device == "cuda" else None,
    }


# Seconds per timing block and blocks per measurement; --quick lowers them for a smoke test.
TIMING = {"min_run_time": 1.0, "rounds": 3}


def time_it(fn: Callable[[], object]) -> float:
    """Median seconds per call of ``fn``, best of several blocks (synchronises CUDA by itself)."""
    min_run_time, rounds = TIMING["min_run_time"], TIMING["rounds"]
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return min(timer.blocked_autorange(min_run_time=min_run_time).median for _ in range(rounds))


def matmul_flops_per_second(n: int, dtype: torch.dtype, device: str) -> float:
    """Throughput of one square ``n × n`` matrix product: the same-run ceiling attention is compared to."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    seconds = time_it(lambda: a @ b)
    return 2 * n**3 / seconds


def save(name: str, payload: dict, folder: Path = RESULTS) -> Path:
    """Write ``FOLDER/NAME.json`` (by default ``benchmarks/results``) for the book's performance appendix."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def start(description: str) -> tuple[argparse.Namespace, dict]:
    """Parse the options every benchmark takes, seed, and print the environment.

    ``--device`` (default: CUDA when present), ``--quick`` (short timings for a smoke test) and ``--out``
    (folder for the JSON results). Returns the parsed options and :func:`environment`.
    """
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes and short timings, for a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON results")
    args = parser.parse_args()
    if args.quick:
        TIMING.update(min_run_time=0.05, rounds=1)
    torch.manual_seed(0)
    env = environment(args.device)
    print(" | ".join(f"{k}: {v}" for k, v in env.items() if v))
    return args, env


def report(name: str, rows: list[dict], env: dict, args: argparse.Namespace) -> None:
    """Print one line per measurement (its ratio and goal first, then its other numbers) and save the JSON."""
    for row in rows:
        numbers = "  ".join(f"{k}={v:.3g}" for k, v in row.items() if isinstance(v, float) and k != "ratio")
        print(
            f"{row['what']:<52} {row.get('shape', ''):<26} {row['dtype']:<9} ratio={row['ratio']:.2f} "
            f"(goal {row['goal']})  {numbers}"
        )
    print(f"wrote {save(f'{name}-{args.device}', {'environment': env, 'results': rows}, args.out)}")
