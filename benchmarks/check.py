"""How long a learner waits for ``tfcourse check``, against a bare Jupyter kernel start in the same run.

Run ``python benchmarks/check.py`` (``--quick``: one round). It times ``tfcourse check`` on a released
(unanswered) exercise notebook, from an empty folder, as a learner runs it, and the start of a bare Python
kernel (``jupyter_client.start_new_kernel`` until it answers, then shut down), each the median of a few
rounds. Writes ``benchmarks/results/check-cpu.json``. Goal from the issue tracker: the check within 5 s on
2 cores; the ratio says how much of that is more than starting a kernel at all.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, save, start

NOTEBOOK = Path(__file__).resolve().parents[1] / "exercises" / "student" / "ch01-self-attention.ipynb"


def _kernel_start() -> float:
    from jupyter_client.manager import start_new_kernel

    started = time.perf_counter()
    manager, client = start_new_kernel(kernel_name="python3")
    seconds = time.perf_counter() - started
    client.stop_channels()
    manager.shutdown_kernel(now=True)
    return seconds


def _check(folder: Path) -> float:
    tfcourse = str(Path(sys.executable).with_name("tfcourse"))
    started = time.perf_counter()
    done = subprocess.run([tfcourse, "check", str(NOTEBOOK)], cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if "test_attention_weights" not in done.stdout:
        sys.exit(f"tfcourse check did not report the parts:\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    args, _ = start(__doc__)
    env = environment("cpu")
    rounds = 1 if args.quick else 3
    with tempfile.TemporaryDirectory() as folder:
        kernel = statistics.median(_kernel_start() for _ in range(rounds))
        check = statistics.median(_check(Path(folder)) for _ in range(rounds))
    rows = [
        {"what": "bare kernel start", "seconds": kernel},
        {"what": "tfcourse check (ch01, 3 parts)", "seconds": check},
    ]
    for row in rows:
        print(f"{row['what']:<34} {row['seconds']:6.2f} s  (median of {rounds})")
    ratio = check / kernel
    print(f"check / kernel start {ratio:.2f}; check {check:.2f} s (goal <= 5 s)")
    path = save("check-cpu", {"environment": env, "rounds": rounds, "results": rows, "ratio": ratio}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
