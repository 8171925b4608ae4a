"""The book's figure style: sizes that fit the column, readable fonts, a colour-blind-safe palette."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest

from tfcourse import style


def test_figures_fit_the_column_with_readable_text():
    with matplotlib.rc_context(style.book_style()):
        fig, _ax = plt.subplots(figsize=style.figsize(0.5))
        width_px = fig.get_figwidth() * fig.dpi
        assert width_px == pytest.approx(640)  # the book's column at its natural size
        assert matplotlib.rcParams["xtick.labelsize"] * fig.dpi / 72 >= 10  # tick labels at least 10 px tall
        colors = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
        assert colors[:3] == list(style.PALETTE[:3])
        plt.close(fig)
    assert style.figsize(0.5, width=0.5) == (3.2, 1.6)
    with pytest.raises(ValueError, match="width"):
        style.figsize(0.5, width=1.5)


def test_palette_colours_are_distinct():
    rgb = [matplotlib.colors.to_rgb(c) for c in style.PALETTE]
    assert len(set(rgb)) == len(rgb) == 8
