"""Training losses: token-level cross-entropy with label smoothing, written out step by step.

Label smoothing (Szegedy et al. 2016, §7; used by Vaswani et al. 2017, §5.4 with ε = 0.1) trains against a
softened target: probability ``1 - ε`` on the true token and ``ε`` spread evenly over all ``V`` tokens
(the true one included). The cross-entropy with that target splits into two familiar terms::

    loss = (1 - ε) · (−log p[y])  +  ε · (1/V) Σ_c (−log p[c])

The first is the usual negative log-likelihood; the second is the cross-entropy with the uniform
distribution, which grows as the model puts probabilities near 0 on any token, so it discourages
over-confident predictions (it costs perplexity but, the Transformer paper reports, improves BLEU).
"""

from __future__ import annotations

import torch

from tfcourse._checks import check_floating

__all__ = ["cross_entropy"]

_REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """Cross-entropy of ``logits`` against integer ``targets``, optionally label-smoothed.

    For each position with target ``y`` and log-probabilities ``log p = log_softmax(logits)``::

        loss = (1 - ε) · (−log p[y])  +  ε · mean over the V classes of (−log p[c])

    which is the cross-entropy with the target ``(1 - ε)·onehot(y) + ε/V`` (the same convention as
    ``torch.nn.functional.cross_entropy(label_smoothing=ε)``).

    Args:
        logits: ``(..., V)`` scores, classes last (e.g. ``(B, T, V)``); computed in at least float32.
        targets: ``(...)`` integer class ids in ``[0, V)``, or ``ignore_index`` at positions to skip
            (padding).
        label_smoothing: ε in ``[0, 1]``; 0 is the plain negative log-likelihood.
        ignore_index: target value whose positions contribute nothing and are not counted.
        reduction: ``"mean"`` over the positions not ignored, ``"sum"``, or ``"none"`` for the ``(...)``
            per-position losses (0 at ignored positions).

    Returns:
        A scalar in float32 (float64 for float64 logits), or ``(...)`` with ``reduction="none"``.
    """
    check_floating("logits", logits)
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(f"targets must hold integer class ids, got dtype {targets.dtype}")
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"targets must have the shape of logits without its class axis: logits {tuple(logits.shape)}, "
            f"targets {tuple(targets.shape)}"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    vocab = logits.shape[-1]
    keep = targets != ignore_index  # (...)
    safe_targets = targets.masked_fill(~keep, 0)
    if keep.any() and (int(safe_targets.min()) < 0 or int(safe_targets.max()) >= vocab):
        raise ValueError(f"targets hold ids outside [0, {vocab}) that are not ignore_index={ignore_index}")

    # Half precision is lifted to float32 for the softmax; float64 stays float64 (gradient checks need it).
    log_probs = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(dim=-1)  # (..., V)
    nll = -log_probs.gather(-1, safe_targets[..., None]).squeeze(-1)  # (...) −log p[y]
    losses = nll
    if label_smoothing > 0:
        uniform = -log_probs.mean(dim=-1)  # (...) mean over classes of −log p[c]
        losses = (1.0 - label_smoothing) * nll + label_smoothing * uniform
    losses = losses * keep  # (...), 0 where ignored
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / keep.sum()  # NaN when every position is ignored, as in PyTorch
