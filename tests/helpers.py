"""Helpers shared by the tests."""

from __future__ import annotations

import torch

# Tolerances for comparing two correct implementations in a dtype (absolute, relative).
TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}


def randn(*shape, gen: torch.Generator, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal numbers drawn on the CPU (reproducible everywhere), then moved."""
    return torch.randn(*shape, generator=gen).to(device=device, dtype=dtype)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None) -> None:
    """``torch.testing.assert_close`` with the tolerance of ``dtype`` (default: ``actual``'s)."""
    atol, rtol = TOLERANCES[dtype or actual.dtype]
    torch.testing.assert_close(actual.float().cpu(), expected.float().cpu(), atol=atol, rtol=rtol)
