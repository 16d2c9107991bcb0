"""Detached matplotlib figures for the report (figures and overlays draw on these).

matplotlib is used through ``matplotlib.figure.Figure`` with the Agg canvas, imported inside the
functions: no pyplot, no global backend switch, safe in threads and on headless machines.
"""

from __future__ import annotations

import io


def new_figure(width: float = 7.5, height: float = 4.0, nrows: int = 1, ncols: int = 1,
               height_ratios: list[float] | None = None,
               width_ratios: list[float] | None = None):
    """A detached Agg ``Figure`` (``width`` x ``height`` inches) and its axes: one ``Axes``, or
    a flat list of them in row-major order when there are several; ``height_ratios`` and
    ``width_ratios`` size the rows and columns (default: equal)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    grid = {k: v for k, v in (("height_ratios", height_ratios),
                              ("width_ratios", width_ratios)) if v} or None
    axes = list(fig.subplots(nrows, ncols, squeeze=False, gridspec_kw=grid).ravel())
    return fig, (axes[0] if len(axes) == 1 else axes)


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes (no timestamp metadata, so reruns give the same file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


__all__ = ["new_figure", "png_bytes"]
