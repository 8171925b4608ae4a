"""Helpers shared by the pre-training objectives: id checks and generator-aware random draws."""

from __future__ import annotations

import torch

from tfcourse._checks import check_nonnegative_int, check_tensor

IGNORE_INDEX = -100
"""Label of positions that carry no loss (``F.cross_entropy``'s default ``ignore_index``)."""


def check_ids(name: str, ids: torch.Tensor, high: int, why: str = "") -> None:
    """Raise unless ``ids`` is an integer tensor with every value in ``[0, high)``; ``why`` explains ``high``."""
    check_tensor(name, ids)
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= high):
        raise ValueError(f"{name} must hold ids in [0, {high}){why}, got min {int(ids.min())}, max {int(ids.max())}")


def check_id(name: str, value: object, high: int) -> int:
    """Raise unless ``value`` is a Python int in ``[0, high)``."""
    check_nonnegative_int(name, value)
    if value >= high:
        raise ValueError(f"{name} must be in [0, {high}), got {value}")
    return value


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device, high: int | None = None) -> torch.Tensor:
    """Uniform floats in [0, 1) (or ints in [0, high)) drawn on the generator's device, then moved to ``device``."""
    draw_on = generator.device if generator is not None else device
    if high is not None:
        return torch.randint(high, shape, generator=generator, device=draw_on).to(device)
    return torch.rand(shape, generator=generator, device=draw_on, dtype=torch.float64).to(device)
