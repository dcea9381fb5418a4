"""Agg canvases for the report's figures, and their rendering to PNG bytes (no pyplot, no global state)."""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

DPI = 100
PNG_COMPRESSION = 3  # zlib level: on these figures smaller and faster than the default 6


class Canvases:
    """One figure and Agg canvas per figure size, reused across one report's figures.

    A reused canvas keeps its renderer, and with it matplotlib's cache of text extents: the tick
    labels, titles and legends that recur across a report's figures are measured once.
    """

    def __init__(self) -> None:
        self._figures: dict[tuple[float, float], Figure] = {}

    def figure(self, width: float, height: float) -> Figure:
        """An empty `width` x `height` inch figure, on the canvas of the earlier figures of that size."""
        figure = self._figures.get((width, height))
        if figure is None:
            figure = Figure(figsize=(width, height), dpi=DPI)
            FigureCanvasAgg(figure)
            self._figures[(width, height)] = figure
            return figure
        for axes in list(figure.axes):
            figure.delaxes(axes)  # cheaper than figure.clear(), which first resets every axes
        figure.legends.clear()
        figure.texts.clear()
        return figure


def new_figure(width: float, height: float, canvases: Canvases | None = None) -> Figure:
    """An empty figure: from `canvases` when given, else a fresh one."""
    if canvases is not None:
        return canvases.figure(width, height)
    return Figure(figsize=(width, height), dpi=DPI)


def to_png(figure: Figure) -> bytes:
    """Render `figure` once through its Agg canvas to an opaque RGB PNG.

    The figures have an opaque white background, so the alpha channel is dropped: a smaller file,
    encoded faster (zlib level PNG_COMPRESSION) than matplotlib's RGBA PNG at PIL's default level.
    """
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="png", compress_level=PNG_COMPRESSION)
    return buffer.getvalue()
