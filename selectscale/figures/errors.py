"""The one error type of the figure commands."""


class FigureError(ValueError):
    """A run directory or option that cannot be used; the message is one line naming it and the fix."""
