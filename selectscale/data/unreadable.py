"""Image files that cannot be decoded: the error and the placeholder sample of the ImageNet folders.

Apart from :mod:`selectscale.data.imagenet` (which imports torchvision) so that ``selectscale.failures`` can map
:class:`BadImageError` to its exit status without importing torchvision, about 4 s on a 2-core CPU, into every
run and every rejected command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from selectscale.errors import SelectScaleError

__all__ = ["BadImageError", "UnreadableImage", "unreadable_error"]


class BadImageError(SelectScaleError, OSError):
    """An image file that cannot be decoded (message: the path and the decoder's error): exit 2."""


@dataclass(frozen=True)
class UnreadableImage:
    """What the dataset returns instead of a sample for a file it cannot decode (when errors are deferred)."""

    path: str
    error: str


def unreadable_error(unreadable: UnreadableImage) -> BadImageError:
    return BadImageError(f"{unreadable.path}: unreadable image ({unreadable.error})")
