"""Plotting helpers shared by the book's chapters (matplotlib).

Chapters call these instead of repeating plotting code, so every figure of one kind looks the same.
Each function draws into a given ``ax`` (or a new figure sized for the book's column by
:func:`tfcourse.style.figsize`) and returns the axes. Colours come from :mod:`tfcourse.style`: the
sequential colormap for magnitudes, the Okabe–Ito palette for categories.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb

from .style import PALETTE, SEQUENTIAL, figsize

__all__ = ["plot_attention", "plot_curves", "plot_mask", "plot_matrix", "plot_tokens"]


def _axes(ax: Axes | None, size: tuple[float, float] | None = None) -> Axes:
    """``ax``, or the axes of a new figure of ``size`` inches (default: half the column wide, square)."""
    return ax if ax is not None else plt.subplots(figsize=size or figsize(1.0, 0.5))[1]


def plot_matrix(
    values: torch.Tensor,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "",
    cmap: str = SEQUENTIAL,
    colorbar: bool = True,
    **imshow,
) -> Axes:
    """Show a 2-D tensor as an image (row 0 at the top)."""
    if values.dim() != 2:
        raise ValueError(f"values must be 2-D, got shape {tuple(values.shape)}")
    ax = _axes(ax)
    image = ax.imshow(values.detach().float().cpu(), cmap=cmap, **imshow)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(False)  # the style's grid lines would cross the cells
    return ax


def plot_mask(
    mask: torch.Tensor,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    query_labels: Sequence[str] | None = None,
    key_labels: Sequence[str] | None = None,
) -> Axes:
    """Draw a ``(Tq, Tk)`` boolean mask as a grid: filled = may attend (True), empty = blocked."""
    if mask.dtype != torch.bool or mask.dim() != 2:
        raise ValueError(f"mask must be a 2-D bool tensor, got {mask.dtype} of shape {tuple(mask.shape)}")
    ax = plot_matrix(mask.int(), ax=ax, title=title, cmap="Blues", colorbar=False, vmin=0, vmax=1.25)
    tq, tk = mask.shape
    ax.set_xticks(range(tk), key_labels or range(tk))
    ax.set_yticks(range(tq), query_labels or range(tq))
    ax.set_xticks([x - 0.5 for x in range(1, tk)], minor=True)
    ax.set_yticks([y - 0.5 for y in range(1, tq)], minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    ax.set(xlabel="key", ylabel="query")
    return ax


def plot_attention(
    weights: torch.Tensor,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    tokens: Sequence[str] | None = None,
) -> Axes:
    """Draw one head's ``(Tq, Tk)`` attention weights, optionally labelled with the tokens."""
    ax = plot_matrix(weights, ax=ax, title=title, cmap=SEQUENTIAL, vmin=0)
    if tokens is not None:
        ax.set_xticks(range(len(tokens)), tokens, rotation=90)
        ax.set_yticks(range(len(tokens)), tokens)
    ax.set(xlabel="key", ylabel="query")
    return ax


def _as_curve(name: str, values: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``values`` as a 1-D float64 CPU tensor, or a ValueError naming ``name``."""
    if isinstance(values, torch.Tensor):
        out = values.detach().to(device="cpu", dtype=torch.float64)
    else:
        try:
            out = torch.as_tensor(values, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"{name} must be a 1-D sequence of numbers: {error}") from None
    if out.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(out.shape)}")
    return out


def plot_curves(
    x: Sequence[float] | torch.Tensor,
    curves: Mapping[str, Sequence[float] | torch.Tensor],
    *,
    ax: Axes | None = None,
    title: str | None = None,
    xlabel: str = "",
    ylabel: str = "",
    logx: bool = False,
    logy: bool = False,
    legend: bool = True,
    **plot,
) -> Axes:
    """Draw one line per named series against a shared horizontal axis.

    The figure kind for "a measurement against a parameter": gradient norm against depth, a score against
    the offset between two positions, time per token against sequence length.

    Args:
        x: ``(N,)`` values on the horizontal axis (a tensor, list or array).
        curves: label → ``(N,)`` values, drawn in order; the labels go into the legend.
        ax: axes to draw into; a new figure when None.
        title: axes title.
        xlabel: horizontal axis label.
        ylabel: vertical axis label.
        logx: logarithmic horizontal axis (every ``x`` must then be positive).
        logy: logarithmic vertical axis (every value must then be positive).
        legend: show the labels in a legend.
        **plot: passed to ``Axes.plot`` for every curve, e.g. ``marker="o"`` or ``drawstyle="steps-mid"``.

    Returns:
        The axes.

    Raises:
        TypeError: if ``curves`` is not a mapping.
        ValueError: if ``curves`` is empty, ``x`` or a curve is not 1-D, a curve's length differs from
            ``x``'s, or a logarithmic axis would receive a value that is not positive.
    """
    if not isinstance(curves, Mapping):
        raise TypeError(f"curves must map labels to values, got {type(curves).__name__}")
    if not curves:
        raise ValueError("curves is empty: give at least one label → values entry")
    xs = _as_curve("x", x)
    if logx and bool((xs <= 0).any()):
        raise ValueError(f"logx=True needs positive x, got minimum {xs.min().item()}")
    series = {}
    for label, values in curves.items():
        ys = _as_curve(f"curves[{label!r}]", values)
        if ys.shape != xs.shape:
            raise ValueError(f"curves[{label!r}] has {ys.numel()} values but x has {xs.numel()}")
        if logy and bool((ys <= 0).any()):
            raise ValueError(f"logy=True needs positive values, but curves[{label!r}] has minimum {ys.min().item()}")
        series[str(label)] = ys
    ax = _axes(ax, figsize(0.62, 0.75))
    for label, ys in series.items():
        ax.plot(xs.numpy(), ys.numpy(), label=label, **plot)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if legend:
        ax.legend()
    return ax


def plot_tokens(
    rows: Sequence[Sequence[str]],
    *,
    categories: Sequence[Sequence[int]] | None = None,
    category_names: Sequence[str] = (),
    row_labels: Sequence[str] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Draw token sequences as rows of labelled cells, coloured by category.

    The figure kind for "what happened to each token": BERT's masked-LM corruption (masked, random,
    unchanged), the two segments of a sentence pair, T5's inputs and targets with their sentinels.

    Args:
        rows: one sequence of token strings per row; rows may differ in length.
        categories: one int per token, shaped like ``rows``: 0 = plain (white), ``k >= 1`` = the k-th
            colour, named ``category_names[k - 1]`` in the legend. None colours nothing.
        category_names: legend label of each category ``1, 2, …``; categories without a name get no
            legend entry.
        row_labels: one label per row, written to the left.
        ax: axes to draw into; a new figure sized to the tokens when None.
        title: axes title.

    Returns:
        The axes.

    Raises:
        ValueError: if ``rows`` is empty, a token is not a string, ``categories`` or ``row_labels`` do not
            match ``rows``, or a category is negative.
    """
    if isinstance(rows, str) or not isinstance(rows, Sequence) or len(rows) == 0:
        raise ValueError(f"rows must be a non-empty list of token lists, got {rows!r:.60}")
    for r, row in enumerate(rows):
        if isinstance(row, str) or not all(isinstance(token, str) for token in row):
            raise ValueError(f"rows[{r}] must be a list of token strings, got {row!r:.60}")
    if categories is None:
        categories = [[0] * len(row) for row in rows]
    if len(categories) != len(rows) or any(len(c) != len(row) for c, row in zip(categories, rows, strict=False)):
        shapes = [len(row) for row in rows], [len(c) for c in categories]
        raise ValueError(f"categories must match rows token for token: row lengths {shapes[0]}, got {shapes[1]}")
    if any(int(k) < 0 for c in categories for k in c):
        raise ValueError("categories must be non-negative integers (0 = plain)")
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"row_labels has {len(row_labels)} entries for {len(rows)} rows")
    width = max(len(row) for row in rows)
    longest = max([len(token) for row in rows for token in row] + [3])
    ax = _axes(ax, (min((longest * 0.09 + 0.25) * width + 1.5, figsize()[0]), 0.45 * len(rows) + 0.7))
    # Shrink the text when the cells are narrow: a monospace glyph is about 0.6 em wide.
    cell_points = ax.figure.get_figwidth() * ax.get_position().width * 72 / width
    fontsize = max(5.0, min(9.0, 0.9 * cell_points / (0.6 * longest)))
    colours = [to_rgb(c) for c in PALETTE]
    for r, (row, cats) in enumerate(zip(rows, categories, strict=True)):
        for t, (token, k) in enumerate(zip(row, cats, strict=True)):
            face = "white" if int(k) == 0 else (*colours[(int(k) - 1) % len(colours)][:3], 0.45)
            ax.add_patch(plt.Rectangle((t, -r - 0.9), 0.96, 0.8, facecolor=face, edgecolor="0.4", linewidth=0.8))
            ax.text(t + 0.48, -r - 0.5, token, ha="center", va="center", fontsize=fontsize, family="monospace")
    ax.set_xlim(-0.1, width + 0.1)
    ax.set_ylim(-len(rows) - 0.1, 0.1)
    ax.set_xticks([])
    ax.set_yticks([-r - 0.5 for r in range(len(rows))], row_labels or [""] * len(rows))
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(axis="y", length=0)
    handles = [
        plt.Rectangle((0, 0), 1, 1, facecolor=(*colours[k % len(colours)][:3], 0.45), edgecolor="0.4", label=name)
        for k, name in enumerate(category_names)
        if any(int(c) == k + 1 for cats in categories for c in cats)
    ]
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title(title)
    return ax
