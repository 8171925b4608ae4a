"""Shared fixtures: devices and dtypes to run the library's tests on.

CUDA variants carry the ``cuda`` marker and skip on machines without a GPU, so one test body covers both.
"""

from __future__ import annotations

import pytest
import torch

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
