"""A whole split allocated at once (the device-resident loader, the synthetic set) that does not fit: one line.

The in-memory data sets live whole on the training device (:class:`~selectscale.data.loader.DeviceLoader`) and
the synthetic set is generated whole in host memory. A set too large for that memory used to end in a
``MemoryError`` or torch's out-of-memory ``RuntimeError`` with a traceback, after Hydra had made the run
directory. :func:`memory_guard` turns it into a :class:`~selectscale.errors.ConfigError` (exit 2) naming the set,
its size, the device and the fix; the engine then removes the empty run directory.

What counts as "does not fit" (decided here, not by reading any library's message text):

- before allocating: more bytes than the device has at all (CUDA: its total memory; CPU: the physical memory),
  refused at once, so that an impossible allocation neither thrashes nor meets the kernel's OOM killer;
- while allocating: ``MemoryError`` (Python, numpy) and ``torch.OutOfMemoryError`` (CUDA's allocator) always;
  a plain ``RuntimeError`` (the type torch's CPU allocator raises) only when the allocation needs more than the
  memory the system reports available at that moment (``/proc/meminfo``'s MemAvailable) — any other
  ``RuntimeError`` is a real bug and goes through unchanged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from selectscale.errors import ConfigError

__all__ = ["GIB", "fewer_images", "memory_guard", "split_bytes"]

GIB = 1 << 30
_OUT_OF_MEMORY = (MemoryError, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))


def split_bytes(images: torch.Tensor, labels: torch.Tensor | None = None) -> int:
    """Bytes of a split on the device: its images and its labels (int64 there, whatever they are now)."""
    return images.numel() * images.element_size() + 8 * (images.shape[0] if labels is None else labels.numel())


def _capacity(device: torch.device) -> int | None:
    """All the memory of ``device`` in bytes (CUDA: the card's; CPU: the machine's physical memory), or None."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.get_device_properties(device).total_memory)
        if device.type == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, RuntimeError, AssertionError):
        return None
    return None


def _available(device: torch.device) -> int | None:
    """The bytes ``device`` could still allocate now (CPU: MemAvailable of /proc/meminfo), or None if unknown."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        if device.type == "cpu":
            with open("/proc/meminfo") as meminfo:
                for line in meminfo:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
    except (OSError, ValueError, RuntimeError, AssertionError, IndexError):
        return None
    return None


def fewer_images(train: bool, device: torch.device | str) -> str:
    """The fix a message names: fewer images of the split (the config keys that set them), or other memory."""
    device = torch.device(device)
    fewer = ("use fewer training images (dataset.train_per_class, or dataset.train_size for synthetic data)"
             if train else "use fewer test images (dataset.test_size for synthetic data)")
    other = ("or trainer.device=cpu to keep the data in host memory" if device.type != "cpu"
             else "or free memory on this machine (or run on one with more)")
    return f"{fewer}, {other}"


def _too_large(what: str, count: int, nbytes: int, device: torch.device, fix: str) -> ConfigError:
    where = "host memory" if device.type == "cpu" else f"memory on {device}"
    size = f"{nbytes / GIB:.1f} GiB" if nbytes >= GIB // 10 else f"{nbytes / (1 << 20):.1f} MiB"
    return ConfigError(f"the {what} ({count:,} images, {size}) does not fit in {where}: {fix}")


@contextlib.contextmanager
def memory_guard(what: str, count: int, nbytes: int, device: torch.device | str, fix: str) -> Iterator[None]:
    """Allocate the ``what`` (``count`` images, ``nbytes`` bytes) on ``device`` inside this block; a set that
    does not fit raises ConfigError: "the training set (N images, X GiB) does not fit in memory on DEVICE: FIX".
    A set larger than the whole device is refused before the block runs (see the module's docstring)."""
    device = torch.device(device)
    capacity = _capacity(device)
    if capacity is not None and nbytes > capacity:
        raise _too_large(what, count, nbytes, device, fix)
    try:
        yield
    except _OUT_OF_MEMORY:
        raise _too_large(what, count, nbytes, device, fix) from None
    except RuntimeError:
        available = _available(device) if device.type == "cpu" else None
        if available is None or nbytes <= available:
            raise  # not a memory failure that we can tell: a bug, with its traceback
        raise _too_large(what, count, nbytes, device, fix) from None
