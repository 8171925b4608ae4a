"""Argument checks shared by the library.

Every public function validates its inputs with these helpers so that a wrong shape, rank or dtype raises
an error that names the argument and shows what was seen, instead of broadcasting into a wrong answer.
"""

from __future__ import annotations

import numbers

import torch


def check_tensor(name: str, x: object) -> torch.Tensor:
    """Raise ``TypeError`` unless ``x`` is a tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_rank(name: str, x: torch.Tensor, *ranks: int) -> None:
    """Raise ``ValueError`` unless ``x.dim()`` is one of ``ranks``."""
    check_tensor(name, x)
    if x.dim() not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")


def check_min_rank(name: str, x: torch.Tensor, rank: int) -> None:
    """Raise ``ValueError`` if ``x`` has fewer than ``rank`` dimensions."""
    check_tensor(name, x)
    if x.dim() < rank:
        raise ValueError(f"{name} must have at least {rank} dimensions, got shape {tuple(x.shape)}")


def check_floating(name: str, x: torch.Tensor) -> None:
    """Raise ``TypeError`` unless ``x`` holds floating-point numbers."""
    check_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


def check_bool(name: str, x: torch.Tensor) -> None:
    """Raise ``TypeError`` unless ``x`` is a boolean tensor (True = may attend)."""
    check_tensor(name, x)
    if x.dtype != torch.bool:
        raise TypeError(
            f"{name} must be a torch.bool tensor (True = may attend), got dtype {x.dtype}; "
            "use tfcourse.masks.mask_to_bias for additive float biases"
        )


def check_broadcastable(name: str, x: torch.Tensor, target: tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``x`` broadcasts to ``target`` without adding dimensions to ``target``."""
    if x.dim() > len(target):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, which has more dimensions than the scores {target}")
    for have, want in zip(reversed(x.shape), reversed(target), strict=False):
        if have not in (1, want):
            raise ValueError(f"{name} of shape {tuple(x.shape)} does not broadcast to the scores {target}")


def check_positive_int(name: str, value: object) -> int:
    """Raise unless ``value`` is a positive Python integer; return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def check_nonnegative_int(name: str, value: object) -> int:
    """Raise unless ``value`` is a Python integer ≥ 0; return it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be non-negative, got {value}")
    return value


def check_probability(name: str, value: object) -> float:
    """Raise unless ``value`` is a real number in ``[0, 1]``; return it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:  # the chained comparison also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)
