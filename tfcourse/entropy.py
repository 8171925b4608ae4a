"""Entropy of attention distributions and entropy normalization (Su 2021).

An attention row is a probability distribution over keys. Its entropy ``H = -Σ p log p`` (in nats) is 0
when all weight sits on one key and ``log n`` when it is spread evenly over ``n`` keys, so it measures
how focused the row is. :func:`entropy_normalize` reshapes a distribution with a power transform
``p_i^γ / Σ_j p_j^γ`` until its entropy equals a chosen target: γ > 1 sharpens, γ < 1 flattens, and the
order of the probabilities never changes.
"""

from __future__ import annotations

import torch

from tfcourse._checks import check_floating, check_min_rank

__all__ = ["entropy", "entropy_normalize"]


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy in nats along ``dim``, with ``0·log 0 = 0``.

    Args:
        p: probabilities (non-negative, summing to 1 along ``dim``), e.g. ``(B, H, Tq, Tk)`` weights.
        dim: the axis that holds each distribution.

    Returns:
        float32 (or float64 for float64 input) tensor of ``p``'s shape without ``dim``.
    """
    check_floating("p", p)
    check_min_rank("p", p, 1)
    p = p.double() if p.dtype == torch.float64 else p.float()
    return -torch.special.xlogy(p, p).sum(dim=dim)  # xlogy(0, 0) = 0


def _power_entropy(log_p: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy of ``softmax(γ · log p)`` along the last axis, and the distribution itself."""
    q = torch.softmax(gamma[..., None] * log_p, dim=-1)  # (..., n); zero probabilities stay zero
    return entropy(q), q


def entropy_normalize(
    p: torch.Tensor,
    target: float | torch.Tensor,
    dim: int = -1,
    *,
    tol: float = 1e-6,
    max_iter: int = 200,
    return_gamma: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Power-transform each distribution so that its entropy equals ``target``.

    Finds γ > 0 with ``H(p^γ / Σ p^γ) = target`` for every distribution along ``dim``. The entropy falls
    monotonically from ``log k`` (γ → 0, uniform over the ``k`` non-zero entries) to ``log m`` (γ → ∞,
    uniform over the ``m`` largest entries), so a bisection on ``log γ`` always converges when the target
    lies in that range. The solve runs in float64; the result has ``p``'s dtype.

    Args:
        p: probabilities along ``dim`` (non-negative, summing to 1).
        target: entropy in nats, a number or a tensor broadcastable to ``p`` without ``dim``.
        dim: the axis that holds each distribution.
        tol: tolerance on the reached entropy.
        max_iter: bisection steps (each halves the interval of ``log γ``).
        return_gamma: also return the exponents γ.

    Returns:
        The normalised distributions (same shape as ``p``), and γ if requested.

    Raises:
        ValueError: if ``p`` is not a distribution or a target lies outside ``[log m, log k]``.
    """
    check_floating("p", p)
    check_min_rank("p", p, 1)
    x = p.double().movedim(dim, -1)  # (..., n)
    if bool((x < 0).any()) or not torch.allclose(x.sum(-1), torch.ones((), dtype=x.dtype), atol=1e-4):
        raise ValueError("p must hold probability distributions along dim (non-negative, summing to 1)")
    x = x / x.sum(-1, keepdim=True)
    target_t = torch.as_tensor(target, dtype=torch.float64, device=x.device).expand(x.shape[:-1])
    support = (x > 0).sum(-1)
    n_max = (x >= x.amax(-1, keepdim=True) * (1 - 1e-12)).sum(-1)
    upper, lower = torch.log(support.double()), torch.log(n_max.double())
    bad = (target_t > upper + tol) | (target_t < lower - tol)
    if bool(bad.any()):
        i = bad.nonzero()[0].tolist()
        raise ValueError(
            f"target entropy {target_t[tuple(i)].item():.6g} is unreachable for the distribution at index {i}: "
            f"a power transform can reach only [{lower[tuple(i)].item():.6g}, {upper[tuple(i)].item():.6g}] nats"
        )
    log_p = torch.log(x)  # -inf at zeros, which softmax maps back to 0
    lo = torch.full(x.shape[:-1], -40.0, dtype=torch.float64, device=x.device)  # bounds on log γ
    hi = torch.full_like(lo, 40.0)
    for _ in range(max_iter):
        mid = (lo + hi) / 2
        h, _ = _power_entropy(log_p, torch.exp(mid))
        too_flat = h > target_t  # entropy still above target: need a larger γ
        lo, hi = torch.where(too_flat, mid, lo), torch.where(too_flat, hi, mid)
        if float((hi - lo).max()) < 1e-12:
            break
    gamma = torch.exp((lo + hi) / 2)
    reached, q = _power_entropy(log_p, gamma)
    # Rows whose entropy cannot move (uniform on their support) are correct as they are.
    stuck = upper - lower < tol
    gamma = torch.where(stuck, torch.ones_like(gamma), gamma)
    q = torch.where(stuck[..., None], x, q)
    if not bool((torch.where(stuck, target_t, reached) - target_t).abs().le(max(tol, 1e-6) * 10).all()):
        worst = float((reached - target_t).abs().max())
        raise ValueError(f"entropy_normalize did not converge (error {worst:.3g} nats); raise max_iter")
    q = q.movedim(-1, dim).to(p.dtype)
    return (q, gamma.to(torch.float32 if p.dtype != torch.float64 else p.dtype)) if return_gamma else q
