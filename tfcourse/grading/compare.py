"""Compare a learner's result with the expected one and say, in order, what differs.

The order is the one a learner can act on: the type first, then the shape, the dtype and the device, and
only then the values, reported as the largest error, where it is, and how many entries are off. Tolerances
depend on the dtype, because float16 and bfloat16 keep only three or two significant digits.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

__all__ = ["TOLERANCES", "CheckFailed", "LearnerError", "compare", "describe", "matches", "tolerance"]


class CheckFailed(AssertionError):
    """A graded check found a difference; the message says what differs and where."""


class LearnerError(Exception):
    """The learner's function raised: its exception's type, message and the learner's own frames."""

    def __init__(self, name: str, error: dict) -> None:
        self.function = name
        self.ename = str(error.get("ename", "Error"))[:100]
        self.evalue = str(error.get("evalue", ""))[:2000]
        frames = error.get("traceback")
        self.frames = [str(f)[:300] for f in frames[:20]] if isinstance(frames, list) else []
        super().__init__(f"{self.ename}: {self.evalue}" if self.evalue else self.ename)


# (atol, rtol) for comparing a learner's result with the reference, by the reference's dtype. Looser than
# the library's own tests: learners may sum in another order or compute the softmax by hand.
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-9, 1e-7),
    torch.float32: (2e-5, 1e-4),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float16: (3e-3, 3e-3),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """``(atol, rtol)`` for results of ``dtype``; zero for integer and bool tensors (exact)."""
    if not dtype.is_floating_point:
        return 0.0, 0.0
    return TOLERANCES.get(dtype, TOLERANCES[torch.float32])


def describe(value: object) -> str:
    """A short description of a value for messages: ``tensor (2, 3) float32`` or the type name."""
    if isinstance(value, torch.Tensor):
        where = "" if value.device.type == "cpu" else f" on {value.device}"
        return f"tensor {tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}{where}"
    if isinstance(value, (bool, numbers.Number)):
        return repr(value)
    return type(value).__name__


def _format_index(flat: int, shape: Sequence[int]) -> str:
    index = []
    for size in reversed(shape):
        index.append(flat % size)
        flat //= size
    return str(tuple(reversed(index))) if index else "()"


def _fmt(x: float | bool | int) -> str:
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def _compare_tensor(actual: torch.Tensor, expected: torch.Tensor, name: str, atol, rtol, equal_nan: bool) -> None:
    if actual.shape != expected.shape:
        hint = ""
        if actual.numel() == expected.numel():
            hint = " (same number of entries: a reshape, transpose or view in the wrong order?)"
        raise CheckFailed(f"{name} has shape {tuple(actual.shape)}, expected {tuple(expected.shape)}{hint}")
    if actual.dtype != expected.dtype:
        raise CheckFailed(
            f"{name} has dtype {actual.dtype}, expected {expected.dtype} (the result should keep the inputs' dtype)"
        )
    if actual.device != expected.device:
        raise CheckFailed(
            f"{name} is on device {actual.device}, expected {expected.device} (create new tensors with device=x.device)"
        )
    if actual.numel() == 0:
        return
    default_atol, default_rtol = tolerance(expected.dtype)
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    a, e = actual.detach().cpu(), expected.detach().cpu()
    shape = tuple(a.shape)
    if not expected.dtype.is_floating_point and not expected.is_complex():
        wrong = a != e
        count = int(wrong.sum())
        if count:
            flat = int(wrong.flatten().nonzero()[0])
            got, want = a.flatten()[flat].item(), e.flatten()[flat].item()
            raise CheckFailed(
                f"{name} differs at {count} of {a.numel()} entries; first at index {_format_index(flat, shape)}: "
                f"got {_fmt(got)}, expected {_fmt(want)}"
            )
        return
    a, e = a.double().flatten(), e.double().flatten()
    a_nan, e_nan = a.isnan(), e.isnan()
    bad_nan = a_nan ^ e_nan if equal_nan else a_nan | e_nan
    if bool(bad_nan.any()):
        flat = int(bad_nan.nonzero()[0])
        raise CheckFailed(
            f"{name} has NaN at {int(a_nan.sum())} of {a.numel()} entries where the expected values are finite; "
            f"first at index {_format_index(flat, shape)}: got {_fmt(a[flat].item())}, "
            f"expected {_fmt(e[flat].item())}"
        )
    both_nan = a_nan & e_nan
    same_inf = (a == e) & a.isinf()  # equal infinities count as equal; inf - inf would be NaN
    error = (a - e).abs().masked_fill(both_nan | same_inf, 0.0)
    allowed = atol + rtol * e.abs().masked_fill(both_nan | same_inf, 0.0)
    wrong = error > allowed
    if bool(wrong.any()):
        flat = int(error.masked_fill(~wrong, -1.0).argmax())
        raise CheckFailed(
            f"{name} differs from the expected values at {int(wrong.sum())} of {a.numel()} entries; "
            f"largest error {error[flat].item():.3g} at index {_format_index(flat, shape)}: "
            f"got {_fmt(a[flat].item())}, expected {_fmt(e[flat].item())} "
            f"(tolerance atol={atol:g}, rtol={rtol:g} for {str(expected.dtype).removeprefix('torch.')})"
        )


def _as_number(value: object) -> float | None:
    """A Python/NumPy number or a one-element tensor as a float; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        return float(value.item())
    return None


def compare(
    actual: object,
    expected: object,
    name: str = "result",
    *,
    atol: float | None = None,
    rtol: float | None = None,
    equal_nan: bool = False,
) -> None:
    """Raise :class:`CheckFailed` unless ``actual`` matches ``expected``.

    Tensors are compared by type, shape, dtype, device and then values (exactly for integer and bool
    tensors, within ``atol + rtol·|expected|`` for floating ones); tuples and lists element by element; a
    number accepts any real number or one-element tensor.

    Args:
        actual: what the learner's code returned.
        expected: what the reference returned.
        name: what the value is, for the message ("attention output").
        atol: absolute tolerance; defaults to :data:`TOLERANCES` of ``expected``'s dtype.
        rtol: relative tolerance; same default.
        equal_nan: treat NaN in both at the same place as equal (used to recognise named mistakes).

    Raises:
        CheckFailed: naming the first difference, for example
            ``attention output has shape (2, 5, 4), expected (2, 4, 5)``.
    """
    if actual is None and expected is not None:
        raise CheckFailed(f"{name} is None: the function returned nothing (is it still a stub, or missing `return`?)")
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor):
            raise CheckFailed(f"{name} should be a torch.Tensor, got {describe(actual)}")
        _compare_tensor(actual, expected, name, atol, rtol, equal_nan)
    elif isinstance(expected, (tuple, list)):
        if not isinstance(actual, (tuple, list)):
            raise CheckFailed(f"{name} should be a tuple of {len(expected)} values, got {describe(actual)}")
        if len(actual) != len(expected):
            raise CheckFailed(f"{name} has {len(actual)} values, expected {len(expected)}")
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            compare(a, e, f"{name}[{i}]", atol=atol, rtol=rtol, equal_nan=equal_nan)
    elif isinstance(expected, bool):
        if actual is not expected and not (isinstance(actual, torch.Tensor) and actual.numel() == 1):
            raise CheckFailed(f"{name} is {describe(actual)}, expected {expected}")
        if bool(actual) != expected:
            raise CheckFailed(f"{name} is {bool(actual)}, expected {expected}")
    elif isinstance(expected, numbers.Real):
        got = _as_number(actual)
        if got is None:
            raise CheckFailed(f"{name} should be a number, got {describe(actual)}")
        a_tol = TOLERANCES[torch.float64][0] if atol is None else atol
        r_tol = 1e-6 if rtol is None else rtol
        both_nan = equal_nan and math.isnan(got) and math.isnan(expected)
        if not both_nan and not abs(got - expected) <= a_tol + r_tol * abs(expected):
            raise CheckFailed(f"{name} is {got:.6g}, expected {float(expected):.6g} (error {abs(got - expected):.3g})")
    elif actual != expected:
        raise CheckFailed(f"{name} is {actual!r}, expected {expected!r}")


def matches(actual: object, expected: object, **kwargs) -> bool:
    """True when :func:`compare` finds no difference (NaN in the same places counts as equal)."""
    try:
        compare(actual, expected, equal_nan=True, **kwargs)
    except CheckFailed:
        return False
    return True
