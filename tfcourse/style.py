"""One figure style for the book and :mod:`tfcourse.viz`: sized for the book's text column, readable fonts,
crisp (SVG) output and a colour-blind-safe palette.

The book's column is about 640 CSS pixels wide; a figure :data:`COLUMN_WIDTH` inches wide at 100 pixels per
inch fills it at its natural size, so a 9-point font stays about 12 pixels tall on screen. Colours are the
Okabe–Ito palette, which stays distinguishable under the common forms of colour blindness; figures keep a
white background so that they read the same in the theme's light and dark modes.

Call :func:`use_book_style` once at the top of a chapter (the chapters do so in a hidden cell).
"""

from __future__ import annotations

__all__ = ["COLUMN_WIDTH", "DIVERGING", "PALETTE", "SEQUENTIAL", "book_style", "figsize", "use_book_style"]

COLUMN_WIDTH = 6.4
"""Width in inches of a figure that fills the book's text column."""

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
"""The Okabe–Ito palette (blue, orange, green, vermillion, purple, sky blue, yellow, black)."""

SEQUENTIAL = "viridis"
"""Colormap for magnitudes (attention weights, masks), perceptually uniform and colour-blind safe."""
DIVERGING = "RdBu_r"
"""Colormap for signed values centred on zero (differences, correlations)."""


def figsize(aspect: float = 0.55, width: float = 1.0) -> tuple[float, float]:
    """``(width, height)`` in inches for a figure ``width`` times the column wide, ``aspect`` = height/width."""
    if not (0 < width <= 1.0 and aspect > 0):
        raise ValueError(f"need 0 < width <= 1 and aspect > 0, got width={width}, aspect={aspect}")
    w = COLUMN_WIDTH * width
    return (w, round(w * aspect, 2))


def book_style() -> dict:
    """The matplotlib rcParams of the book's style."""
    from cycler import cycler

    return {
        "figure.figsize": figsize(),
        "figure.dpi": 100,
        "figure.facecolor": "white",
        "figure.constrained_layout.use": True,
        "savefig.dpi": 200,  # PNGs, where one is saved, at twice the screen's resolution
        "savefig.facecolor": "white",
        "savefig.bbox": "tight",
        "font.size": 9,
        "axes.titlesize": 9.5,
        "axes.labelsize": 9,
        "xtick.labelsize": 8,
        "ytick.labelsize": 8,
        "legend.fontsize": 8,
        "legend.frameon": False,
        "axes.prop_cycle": cycler(color=list(PALETTE)),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "grid.linewidth": 0.5,
        "lines.linewidth": 1.6,
        "image.cmap": SEQUENTIAL,
        "svg.fonttype": "none",  # text stays text in SVG: sharp, selectable, searchable
    }


def use_book_style(svg: bool = True) -> None:
    """Apply :func:`book_style` and, in Jupyter, make inline figures SVG (sharp at any zoom)."""
    import matplotlib as mpl

    mpl.rcParams.update(book_style())
    if svg:
        try:
            from matplotlib_inline.backend_inline import set_matplotlib_formats
        except ImportError:  # outside Jupyter: nothing to configure
            return
        set_matplotlib_formats("svg")
