"""T5's span corruption (Raffel et al. 2020, §3.1.4) and its inverse."""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch

from tfcourse._checks import check_nonnegative_int, check_positive_int, check_probability, check_rank, check_tensor
from tfcourse.pretraining._common import check_ids

__all__ = ["SpanCorruption", "merge_span_corruption", "noise_span_counts", "random_spans_noise_mask", "span_corruption"]


# ---------------------------------------------------------------------------------------------------------
# Span corruption (T5)


class SpanCorruption(NamedTuple):
    """What :func:`span_corruption` returns; all fields are 1-D and on the device of ``tokens``."""

    inputs: torch.Tensor
    """The encoder input, with each noise span replaced by one sentinel."""
    targets: torch.Tensor
    """The decoder target, each sentinel followed by the tokens of its span."""
    noise_mask: torch.Tensor
    """``(T,)`` bool, True at the dropped (noise) tokens."""


def noise_span_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """How many noise tokens and noise spans T5 uses for ``length`` tokens (Raffel et al. 2020, §3.3.4).

    ``num_noise = round(length · noise_density)`` and ``num_spans = round(num_noise / mean_span_length)``
    (Python's ``round``: half to even, like ``tf.round`` in T5's code), each clamped so that the sequence
    keeps at least one noise and one non-noise token, and every span, noise or not, at least one token:
    ``1 <= num_noise <= length - 1`` and ``1 <= num_spans <= min(num_noise, length - num_noise)``.

    Args:
        length: number of tokens, at least 2.
        noise_density: share of tokens to corrupt, strictly between 0 and 1.
        mean_span_length: average number of tokens per noise span, at least 1.

    Returns:
        ``(num_noise, num_spans)``.
    """
    if check_positive_int("length", length) < 2:
        raise ValueError(f"length must be at least 2 (one noise and one kept token), got {length}")
    if not 0.0 < check_probability("noise_density", noise_density) < 1.0:
        raise ValueError(f"noise_density must be strictly between 0 and 1, got {noise_density}")
    if isinstance(mean_span_length, bool) or not isinstance(mean_span_length, numbers.Real):
        raise TypeError(f"mean_span_length must be a float, got {type(mean_span_length).__name__}")
    if not mean_span_length >= 1.0:
        raise ValueError(f"mean_span_length must be at least 1, got {mean_span_length}")
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = min(max(round(num_noise / mean_span_length), 1), num_noise, length - num_noise)
    return num_noise, num_spans


def _random_segmentation(num_items: int, num_segments: int, generator: torch.Generator | None) -> torch.Tensor:
    """Split ``num_items`` into ``num_segments`` non-empty runs, uniformly over all such splits."""
    draw_on = generator.device if generator is not None else torch.device("cpu")
    # Choosing num_segments - 1 of the num_items - 1 gaps as cut points picks a split uniformly.
    gaps = torch.randperm(num_items - 1, generator=generator, device=draw_on).cpu()
    cuts = gaps[: num_segments - 1].sort().values + 1  # (S - 1,) start of every run but the first
    bounds = torch.cat([torch.tensor([0]), cuts, torch.tensor([num_items])])  # (S + 1,)
    return bounds.diff()  # (S,) run lengths, each >= 1


def random_spans_noise_mask(
    length: int,
    *,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """T5's choice of noise spans (Raffel et al. 2020, §3.3.4; ``random_spans_noise_mask`` in their code).

    With the counts of :func:`noise_span_counts`, noise and kept tokens are each split at random into
    ``S = num_spans`` non-empty runs, which alternate kept first: ``kept_0 noise_0 ... kept_S-1 noise_S-1``.
    So the first token is always kept and the last always dropped (T5's later ``random_roll`` rotates the
    mask to lift that; we follow the paper).

    Args:
        length: T, number of tokens.
        noise_density: share of tokens to drop.
        mean_span_length: average noise-span length.
        generator: source of randomness; ``None`` uses the global generator.
        device: device of the result.

    Returns:
        ``(T,)`` bool mask, True at noise tokens.
    """
    num_noise, num_spans = noise_span_counts(length, noise_density, mean_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)  # (S,)
    kept_lengths = _random_segmentation(length - num_noise, num_spans, generator)  # (S,)
    run_lengths = torch.stack([kept_lengths, noise_lengths], dim=1).reshape(-1)  # (2S,) kept, noise, kept, ...
    run_index = torch.searchsorted(run_lengths.cumsum(0), torch.arange(length), right=True)  # (T,) run of each
    return (run_index % 2 == 1).to(device)  # (T,) odd runs are noise


def _check_sentinels(sentinel_start_id: int, num_sentinels: int) -> int:
    """Validate the sentinel block and return its lowest id."""
    check_nonnegative_int("sentinel_start_id", sentinel_start_id)
    check_positive_int("num_sentinels", num_sentinels)
    if num_sentinels > sentinel_start_id + 1:
        raise ValueError(
            f"num_sentinels={num_sentinels} sentinels counting down from sentinel_start_id={sentinel_start_id} "
            "would go below id 0"
        )
    return sentinel_start_id - num_sentinels + 1


def span_corruption(
    tokens: torch.Tensor,
    *,
    sentinel_start_id: int,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
    num_sentinels: int = 100,
    eos_id: int | None = None,
    noise_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SpanCorruption:
    """T5's span-corruption objective on one sequence (Raffel et al. 2020, §3.1.4, Figure 2).

    Noise span ``k`` becomes sentinel ``sentinel_start_id - k`` in the input, and the target is
    ``sentinel_k span_k`` for every span in order. Sentinels count *down*, as T5's vocabulary does:
    ``<extra_id_0>`` is the last id (``vocab_size - 1``), ``<extra_id_1>`` the one before, and so on.

    Like T5's released code, the target has no final sentinel after the last span (Figure 2 draws one,
    ``<Z>``): the paper's mask ends in a noise span. Pass ``eos_id`` to end both sequences with EOS, as T5
    does; it marks where the last span ends.

    Args:
        tokens: ``(T,)`` ids, all below the sentinel block ``sentinel_start_id - num_sentinels + 1``.
        sentinel_start_id: id of the first sentinel, ``<extra_id_0>``.
        noise_density: share of tokens to drop (see :func:`noise_span_counts`).
        mean_span_length: average noise-span length.
        num_sentinels: size of the sentinel block (T5 has 100); more spans than this is an error.
        eos_id: if given, appended to ``inputs`` and ``targets``.
        noise_mask: ``(T,)`` bool used instead of drawing :func:`random_spans_noise_mask`.
        generator: source of randomness; ``None`` uses the global generator.

    Returns:
        :class:`SpanCorruption` with ``inputs``, ``targets`` and the ``noise_mask`` used.
    """
    first_sentinel = _check_sentinels(sentinel_start_id, num_sentinels)
    check_rank("tokens", tokens, 1)
    check_ids("tokens", tokens, first_sentinel, f" ({first_sentinel} to {sentinel_start_id} are sentinels)")
    if noise_mask is None:
        noise_mask = random_spans_noise_mask(
            tokens.shape[0],
            noise_density=noise_density,
            mean_span_length=mean_span_length,
            generator=generator,
            device=tokens.device,
        )
    elif check_tensor("noise_mask", noise_mask).dtype != torch.bool or noise_mask.shape != tokens.shape:
        raise ValueError(
            f"noise_mask must be a bool tensor shaped like tokens {tuple(tokens.shape)}, "
            f"got {noise_mask.dtype} {tuple(noise_mask.shape)}"
        )
    noise = noise_mask.to(tokens.device)
    previous = torch.cat([noise.new_zeros(1), noise[:-1]])  # (T,) was the token before noise?
    starts = noise & ~previous  # (T,) first token of each noise span
    num_spans = int(starts.sum())
    if num_spans > num_sentinels:
        raise ValueError(f"{num_spans} noise spans but only num_sentinels={num_sentinels} sentinels")
    sentinels = sentinel_start_id - (torch.cumsum(starts, 0) - 1)  # (T,) valid at span starts
    # Interleave a sentinel slot before every token, (T, 2) -> (2T,), then keep the slots each side needs.
    slots = torch.stack([sentinels.to(tokens.dtype), tokens], dim=1).reshape(-1)  # (2T,)
    inputs = slots[torch.stack([starts, ~noise], dim=1).reshape(-1)]  # sentinel at a start, kept tokens
    targets = slots[torch.stack([starts, noise], dim=1).reshape(-1)]  # sentinel at a start, noise tokens
    if eos_id is not None:
        eos = torch.tensor([check_nonnegative_int("eos_id", eos_id)], dtype=tokens.dtype, device=tokens.device)
        inputs, targets = torch.cat([inputs, eos]), torch.cat([targets, eos])
    return SpanCorruption(inputs, targets, noise)


def merge_span_corruption(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    sentinel_start_id: int,
    num_sentinels: int = 100,
    eos_id: int | None = None,
) -> torch.Tensor:
    """Undo :func:`span_corruption`: put each target span back in place of its sentinel.

    Also accepts a target that ends with one extra, empty sentinel (the paper's Figure 2 style).

    Args:
        inputs: ``(Ti,)`` ids with sentinels.
        targets: ``(Tt,)`` ids, each span preceded by its sentinel.
        sentinel_start_id: id of the first sentinel.
        num_sentinels: size of the sentinel block.
        eos_id: if given, both sequences must end with it; it is removed.

    Returns:
        ``(T,)`` the original tokens, on ``inputs``' device.
    """
    first_sentinel = _check_sentinels(sentinel_start_id, num_sentinels)
    check_rank("inputs", inputs, 1)
    check_rank("targets", targets, 1)
    ins, outs = inputs.tolist(), targets.tolist()
    if eos_id is not None:
        for name, seq in (("inputs", ins), ("targets", outs)):
            if not seq or seq.pop() != eos_id:
                raise ValueError(f"{name} must end with eos_id={eos_id}")
    spans: list[list[int]] = []  # spans[k] follows sentinel_start_id - k in the targets
    for t in outs:
        if first_sentinel <= t <= sentinel_start_id:
            if sentinel_start_id - t != len(spans):
                raise ValueError(f"targets: expected sentinel {sentinel_start_id - len(spans)}, got {t}")
            spans.append([])
        elif not spans:
            raise ValueError(f"targets must start with sentinel {sentinel_start_id}, got {outs[:3]}")
        else:
            spans[-1].append(t)
    merged, used = [], 0
    for t in ins:
        if not first_sentinel <= t <= sentinel_start_id:
            merged.append(t)
        elif sentinel_start_id - t == used < len(spans):
            merged.extend(spans[used])
            used += 1
        else:
            raise ValueError(f"inputs: sentinel {t} out of order or missing from targets")
    if len(spans) > used + 1 or (len(spans) == used + 1 and spans[-1]):  # one empty extra is Figure 2's <Z>
        raise ValueError(f"targets hold {len(spans)} spans but inputs have {used} sentinels")
    return torch.tensor(merged, dtype=inputs.dtype, device=inputs.device)
