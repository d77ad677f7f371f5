"""The one error type of the figure commands (defined in :mod:`selectscale.errors`)."""

from selectscale.errors import FigureError

__all__ = ["FigureError"]
