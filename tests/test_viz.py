"""Tests of the shared plotting helpers in tfcourse.viz (one or more per function; append new ones below)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from tfcourse.viz import plot_curves


def test_plot_curves_draws_one_labelled_line_per_series():
    x = torch.arange(1, 6)
    ax = plot_curves(
        x, {"linear": x * 2.0, "list": [1, 2, 3, 4, 5], "array": np.ones(5)}, xlabel="n", ylabel="v", logx=True
    )
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["linear", "list", "array"]
    np.testing.assert_allclose(lines[0].get_ydata(), [2, 4, 6, 8, 10])
    np.testing.assert_allclose(lines[0].get_xdata(), [1, 2, 3, 4, 5])
    assert ax.get_xscale() == "log" and ax.get_yscale() == "linear"
    assert ax.get_xlabel() == "n" and ax.get_ylabel() == "v"
    assert ax.get_legend() is not None
    plt.close(ax.figure)


def test_plot_curves_draws_into_given_axes_and_passes_plot_options():
    fig, ax = plt.subplots()
    out = plot_curves([0, 1, 2], {"a": torch.tensor([1.0, 2.0, 3.0])}, ax=ax, legend=False, drawstyle="steps-mid")
    assert out is ax
    assert ax.get_lines()[0].get_drawstyle() == "steps-mid"
    assert ax.get_legend() is None
    plt.close(fig)


@pytest.mark.parametrize(
    ("x", "curves", "kwargs", "error", "match"),
    [
        ([0, 1], [1, 2], {}, TypeError, "map labels to values"),
        ([0, 1], {}, {}, ValueError, "empty"),
        ([[0, 1]], {"a": [1, 2]}, {}, ValueError, "x must be 1-D"),
        ([0, 1, 2], {"a": [1, 2]}, {}, ValueError, r"curves\['a'\] has 2 values but x has 3"),
        ([0, 1], {"a": ["p", "q"]}, {}, ValueError, "sequence of numbers"),
        ([0, 1], {"a": [1, -2]}, {"logy": True}, ValueError, "logy=True"),
        ([0, 1], {"a": [1, 2]}, {"logx": True}, ValueError, "logx=True"),
    ],
)
def test_plot_curves_rejects_bad_input(x, curves, kwargs, error, match):
    with pytest.raises(error, match=match):
        plot_curves(x, curves, **kwargs)
    plt.close("all")


def test_plot_tokens_draws_one_cell_per_token_coloured_by_category():
    from tfcourse.viz import plot_tokens

    ax = plot_tokens(
        [["[CLS]", "the", "[MASK]"], ["a", "b"]],
        categories=[[0, 0, 1], [2, 0]],
        category_names=["masked", "random", "unused"],
        row_labels=["input", "other"],
        title="tokens",
    )
    assert len(ax.patches) == 5
    assert [text.get_text() for text in ax.texts] == ["[CLS]", "the", "[MASK]", "a", "b"]
    assert ax.patches[0].get_facecolor()[:3] == (1.0, 1.0, 1.0)
    assert ax.patches[2].get_facecolor() != ax.patches[3].get_facecolor()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["masked", "random"]  # unused has no cell
    assert [t.get_text() for t in ax.get_yticklabels()] == ["input", "other"]
    assert ax.get_title() == "tokens"
    plt.close(ax.figure)


@pytest.mark.parametrize(
    ("rows", "kwargs", "match"),
    [
        ([], {}, "non-empty"),
        (["abc"], {}, r"rows\[0\] must be a list of token strings"),
        ([["a", 1]], {}, r"rows\[0\]"),
        ([["a", "b"]], {"categories": [[0]]}, "categories must match rows"),
        ([["a"]], {"categories": [[-1]]}, "non-negative"),
        ([["a"]], {"row_labels": ["x", "y"]}, "row_labels has 2 entries for 1 rows"),
    ],
)
def test_plot_tokens_rejects_bad_input(rows, kwargs, match):
    from tfcourse.viz import plot_tokens

    with pytest.raises(ValueError, match=match):
        plot_tokens(rows, **kwargs)
    plt.close("all")


def test_new_figures_fit_the_column_and_use_the_book_colours():
    from tfcourse.style import COLUMN_WIDTH, PALETTE, SEQUENTIAL
    from tfcourse.viz import plot_attention, plot_mask, plot_matrix, plot_tokens

    axes = [
        plot_matrix(torch.rand(3, 3)),
        plot_mask(torch.ones(4, 4, dtype=torch.bool).tril()),
        plot_attention(torch.rand(5, 5).softmax(-1)),
        plot_curves([1, 2, 3], {"a": [1, 2, 3]}),
        plot_tokens([["token"] * 40], categories=[[1] * 40], category_names=["one"]),
    ]
    for ax in axes:
        width, height = ax.figure.get_size_inches()
        assert 0 < width <= COLUMN_WIDTH + 1e-9 and 0 < height <= COLUMN_WIDTH, (width, height)
    assert axes[0].images[0].get_cmap().name == SEQUENTIAL
    assert axes[2].images[0].get_cmap().name == SEQUENTIAL
    first_colour = np.array(axes[4].patches[0].get_facecolor()[:3])
    np.testing.assert_allclose(first_colour, [int(PALETTE[0][i : i + 2], 16) / 255 for i in (1, 3, 5)], atol=1e-6)
    plt.close("all")


def test_book_style_sizes_fonts_and_palette():
    import matplotlib as mpl

    from tfcourse.style import COLUMN_WIDTH, PALETTE, book_style, figsize, use_book_style

    assert figsize(0.5) == (COLUMN_WIDTH, COLUMN_WIDTH / 2)
    assert figsize(1.0, 0.5) == (COLUMN_WIDTH / 2, COLUMN_WIDTH / 2)
    with pytest.raises(ValueError, match="width"):
        figsize(0.5, 1.5)
    style = book_style()
    assert style["figure.figsize"][0] == COLUMN_WIDTH and style["font.size"] >= 8
    with mpl.rc_context():
        use_book_style(svg=False)
        assert [mpl.colors.to_hex(c) for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"]] == [
            c.lower() for c in PALETTE
        ]
