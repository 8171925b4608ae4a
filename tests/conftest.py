"""Shared fixtures: devices and dtypes to run the library's tests on.

CUDA variants carry the ``cuda`` marker and skip on machines without a GPU, so one test body covers both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

_HAS_CUDA = torch.cuda.is_available()
_SKIP_NO_CUDA = pytest.mark.skipif(not _HAS_CUDA, reason="needs a CUDA GPU")

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.cuda, _SKIP_NO_CUDA]),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each test that asks for a device runs on the CPU and, when present, on CUDA."""
    return request.param


@pytest.fixture(params=[torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def dtype(request) -> torch.dtype:
    """float32 and bfloat16."""
    return request.param


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator, so failures reproduce."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> tuple[Path, str]:
    """Build into a fresh output folder (no execution cache, no stale pages) and return the HTML folder.

    ``TFCOURSE_BUILT_BOOK=DIR`` reuses a build made with ``jupyter-book build -W -n --path-output DIR .`` and its
    log in ``DIR/build.log``: for re-running the page tests while working on them, never in CI."""
    prebuilt = os.environ.get("TFCOURSE_BUILT_BOOK")
    if prebuilt and not os.environ.get("CI"):
        return Path(prebuilt) / "_build" / "html", (Path(prebuilt) / "build.log").read_text(encoding="utf-8")
    jupyter_book = shutil.which("jupyter-book", path=str(Path(sys.executable).parent)) or shutil.which("jupyter-book")
    if jupyter_book is None:
        pytest.fail("jupyter-book is not installed; install the project with its [book] extra")
    out = tmp_path_factory.mktemp("book")
    result = subprocess.run(
        [jupyter_book, "build", "--all", "-W", "-n", "--keep-going", "--path-output", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    return out / "_build" / "html", log
