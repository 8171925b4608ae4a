"""Tools for looking inside attention: record weights, switch heads off, measure softmax and head geometry.

These are the probes the book's chapters use on trained models. None of them changes a model: recording
and ablation work through temporary hooks that are removed when the ``with`` block ends.

- :func:`record_attention` collects the ``(B, H, Tq, Tk)`` weights of chosen attention modules during an
  ordinary forward pass.
- :func:`ablate_heads` zeroes chosen heads' slices of the concatenated head outputs, just before the output
  projection Ω_c, which is exactly "removing" those heads (Michel et al. 2019 call it head masking).
- :func:`softmax_jacobian` gives ``∂softmax(x)/∂x = diag(p) − p pᵀ``, whose size shows how much gradient a
  softmax lets through.
- :func:`subspace_overlap` measures how much two heads' projection subspaces share.
- :func:`head_divergence` measures how differently heads attend (Jensen–Shannon divergence).
- :func:`keys_for_mass` and :func:`top_k_mass` measure how sparse attention weights are: how many keys hold
  most of a query's weight, and how much weight its few largest keys hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from tfcourse._checks import check_floating, check_min_rank, check_rank, check_tensor
from tfcourse.attention import MultiHeadAttention

__all__ = [
    "ablate_heads",
    "head_divergence",
    "keys_for_mass",
    "record_attention",
    "softmax_jacobian",
    "subspace_overlap",
    "top_k_mass",
]


def _check_attention_modules(modules: Mapping[str, nn.Module]) -> None:
    if not isinstance(modules, Mapping) or not modules:
        raise TypeError("modules must be a non-empty mapping from names to MultiHeadAttention modules")
    for name, module in modules.items():
        if not isinstance(module, MultiHeadAttention):
            raise TypeError(f"modules[{name!r}] must be a MultiHeadAttention, got {type(module).__name__}")


@contextmanager
def record_attention(modules: Mapping[str, MultiHeadAttention]) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record the attention weights of ``modules`` while the ``with`` block runs.

    Each time a recorded module is called, a forward hook calls it once more with ``return_weights=True``
    (no gradient, same inputs and masks) and appends the ``(B, H, Tq, Tk)`` float32 weights to the list
    under the module's name. The model's own outputs are untouched. Calls that use a KV cache are refused,
    because running them twice would append to the cache twice: record a teacher-forced pass instead.

    Args:
        modules: names → attention modules, e.g. ``{"cross 0": model.decoder.layers[0].cross_attn}``.

    Yields:
        A dict from each name to the list of weights recorded so far (one entry per call).

    Example::

        with record_attention({"cross": layer.cross_attn}) as weights:
            model(src, tgt_in)
        weights["cross"][0]  # (B, H, Tq, Tk)
    """
    _check_attention_modules(modules)
    recorded: dict[str, list[torch.Tensor]] = {name: [] for name in modules}

    def make_hook(name: str):
        def hook(module, args, kwargs, output):
            if kwargs.get("cache") is not None:
                raise ValueError(
                    f"record_attention cannot record {name!r} during cached decoding (the cache would be "
                    "filled twice); record a forward pass without caches"
                )
            if isinstance(output, tuple) and getattr(output, "weights", None) is not None:
                recorded[name].append(output.weights.detach())
                return
            again = {**kwargs, "return_weights": True}
            with torch.no_grad():
                result = module.forward(*args, **again)  # .forward: hooks do not fire a second time
            recorded[name].append(result.weights.detach())

        return hook

    handles = [module.register_forward_hook(make_hook(name), with_kwargs=True) for name, module in modules.items()]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def ablate_heads(heads: Mapping[MultiHeadAttention, Iterable[int]]) -> Iterator[None]:
    """Switch off attention heads while the ``with`` block runs.

    For every module, the named heads' slices of the concatenated head outputs ``(B, T, H·Dh)`` are set to
    zero just before the output projection, so those heads contribute nothing (the projection's bias stays).
    It works the same in teacher-forced passes and in cached generation.

    Args:
        heads: attention module → indices of the heads to remove (each in ``[0, H)``).
    """
    if not isinstance(heads, Mapping):
        raise TypeError("heads must map MultiHeadAttention modules to head indices")
    plans: list[tuple[MultiHeadAttention, list[int]]] = []
    for module, indices in heads.items():
        if not isinstance(module, MultiHeadAttention):
            raise TypeError(f"heads must be keyed by MultiHeadAttention modules, got {type(module).__name__}")
        indices = sorted({int(i) for i in indices})
        bad = [i for i in indices if not 0 <= i < module.num_heads]
        if bad:
            raise ValueError(f"head indices {bad} are out of range for a module with num_heads={module.num_heads}")
        plans.append((module, indices))

    def make_hook(head_dim: int, indices: list[int]):
        def hook(module, args):
            (x,) = args  # (B, T, H·Dh): the concatenated head outputs
            x = x.clone()
            for h in indices:
                x[..., h * head_dim : (h + 1) * head_dim] = 0
            return (x,)

        return hook

    handles = [
        module.out_proj.register_forward_pre_hook(make_hook(module.head_dim, indices))
        for module, indices in plans
        if indices
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def softmax_jacobian(p: torch.Tensor) -> torch.Tensor:
    """Jacobian of the softmax at the point where it outputs ``p``: ``J = diag(p) − p pᵀ``.

    ``J[..., i, j] = ∂p_i/∂x_j``. It depends on the inputs only through ``p``: when ``p`` is nearly one-hot
    every entry is nearly zero, which is why saturated attention stops learning.

    Args:
        p: ``(..., n)`` probabilities along the last axis.

    Returns:
        ``(..., n, n)`` Jacobians, in ``p``'s dtype.
    """
    check_floating("p", p)
    check_min_rank("p", p, 1)
    return torch.diag_embed(p) - p[..., :, None] * p[..., None, :]  # (..., n, n)


def subspace_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How much the subspaces spanned by the rows of ``a`` and of ``b`` share, from 0 (orthogonal) to 1.

    With orthonormal bases ``U`` ``(ka, D)`` and ``V`` ``(kb, D)`` the overlap is ``‖U Vᵀ‖²_F / min(ka, kb)``,
    the mean squared cosine of the principal angles. Two independent random subspaces of dimension ``k`` in
    ``D`` dimensions overlap by about ``k / D``.

    Args:
        a: ``(ka, D)``, e.g. one head's rows of a query projection.
        b: ``(kb, D)``.

    Returns:
        A float32 scalar tensor.
    """
    for name, x in (("a", a), ("b", b)):
        check_tensor(name, x)
        check_floating(name, x)
        check_rank(name, x, 2)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same width: a {tuple(a.shape)}, b {tuple(b.shape)}")
    u = torch.linalg.qr(a.detach().double().T).Q  # (D, ka): orthonormal basis of a's row space
    v = torch.linalg.qr(b.detach().double().T).Q  # (D, kb)
    cosines = u.T @ v  # (ka, kb)
    return (cosines.pow(2).sum() / min(u.shape[1], v.shape[1])).float()


def head_divergence(weights: torch.Tensor) -> torch.Tensor:
    """How differently ``N`` heads attend: the mean Jensen–Shannon divergence between every pair of heads'
    attention distributions over the same queries and keys, in bits (0 = identical, 1 = disjoint keys).

    For one query, heads ``i`` and ``j`` give distributions ``p`` and ``q`` over the keys, and
    ``JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m)`` with ``m = (p + q)/2``; unlike KL it is symmetric and bounded.
    The result averages it over the batch and the queries. Rows of zeros (fully masked queries) are skipped.

    Args:
        weights: ``(B, N, Tq, Tk)`` attention weights of ``N`` heads, e.g. every layer's ``(B, H, Tq, Tk)``
            weights concatenated along the head axis.

    Returns:
        ``(N, N)`` float32, symmetric, zero on the diagonal.
    """
    check_tensor("weights", weights)
    check_floating("weights", weights)
    check_rank("weights", weights, 4)
    if bool((weights < 0).any()):
        raise ValueError("weights must be non-negative (attention probabilities)")
    n = weights.shape[1]
    total = torch.zeros(n, n, dtype=torch.float64, device=weights.device)
    count = torch.zeros(n, n, dtype=torch.float64, device=weights.device)

    def kl_bits(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # Σ_k x log2(x / y), with 0 log 0 = 0
        return torch.where(x > 0, x * (x.clamp_min(1e-30).log2() - y.clamp_min(1e-30).log2()), 0).sum(-1)

    for example in weights.detach().double():  # (N, Tq, Tk): one example at a time keeps memory small
        p, q = example[:, None], example[None]  # (N, 1, Tq, Tk), (1, N, Tq, Tk)
        m = (p + q) / 2  # (N, N, Tq, Tk)
        js = (kl_bits(p, m) + kl_bits(q, m)) / 2  # (N, N, Tq)
        rows = example.sum(-1) > 0  # (N, Tq): queries with any weight
        both = (rows[:, None] & rows[None]).double()  # (N, N, Tq)
        total += (js * both).sum(-1)
        count += both.sum(-1)
    return (total / count.clamp_min(1)).fill_diagonal_(0).float()


def _sorted_rows(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_tensor("weights", weights)
    check_floating("weights", weights)
    check_min_rank("weights", weights, 1)
    if bool((weights < 0).any()):
        raise ValueError("weights must be non-negative (attention probabilities)")
    w = weights.detach().float()
    return w.sort(dim=-1, descending=True).values, w.sum(dim=-1)  # (..., Tk), (...)


def keys_for_mass(weights: torch.Tensor, mass: float = 0.9) -> torch.Tensor:
    """How many keys each query needs to collect ``mass`` of its attention: the smallest ``k`` such that its
    ``k`` largest weights sum to at least ``mass`` of the row's total.

    A uniform row over ``n`` keys needs ``⌈mass·n⌉`` of them, a one-hot row one. Masked keys carry zero weight,
    so they are never needed; an all-zero row (a fully masked query) needs 0. Child et al. (2019, §4.1) observed
    that trained attention is mostly sparse in this sense, which motivates fixing the sparse set in advance.

    Args:
        weights: ``(..., Tk)`` non-negative attention weights, e.g. ``(B, H, Tq, Tk)``.
        mass: the fraction of each row's weight to collect, in ``(0, 1]``.

    Returns:
        ``(...)`` int64 counts, e.g. ``(B, H, Tq)``.
    """
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    ordered, total = _sorted_rows(weights)
    before = ordered.cumsum(dim=-1) - ordered  # (..., Tk): weight of the strictly larger keys
    # A key is needed while the larger keys fall short of the target (a little slack absorbs rounding).
    target = (mass * total - 1e-6 * total)[..., None]  # (..., 1)
    needed = (before < target) & (ordered > 0)
    return needed.sum(dim=-1)


def top_k_mass(weights: torch.Tensor, k: int) -> torch.Tensor:
    """The fraction of each query's attention that its ``k`` largest weights hold (1 when ``k ≥ Tk``;
    0 for an all-zero row).

    Args:
        weights: ``(..., Tk)`` non-negative attention weights.
        k: how many keys to keep per query, at least 1.

    Returns:
        ``(...)`` float32 fractions in ``[0, 1]``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    ordered, total = _sorted_rows(weights)
    kept = total - ordered[..., k:].sum(dim=-1)  # (...): exactly the total when nothing is left out
    return torch.where(total > 0, kept / total.clamp(min=torch.finfo(torch.float32).tiny), torch.zeros_like(kept))
