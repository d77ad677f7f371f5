"""Reading one official CIFAR pickle file safely, checking what it holds.

The official "python version" files are Python-2 pickles. They are read with an unpickler that only accepts
what a CIFAR file contains (dicts, lists, strings, numbers and numpy arrays), so a foreign pickle cannot run
code. Each check names the file and what is wrong with it in one line (:class:`CifarFormatError`).

Each image row of a batch file is 3,072 bytes: 1,024 red, then 1,024 green, then 1,024 blue, each a 32 x 32
plane in row-major order; reshaping to N x 3 x 32 x 32 keeps RGB channel order and H x W layout.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from selectscale.errors import SelectScaleError

__all__ = ["IMAGE_BYTES", "CifarFormatError", "read_batch", "read_classes"]

IMAGE_BYTES = 3 * 32 * 32  # one image row of an official batch file
# The fix every message about a damaged or foreign file names (download_cifar never overwrites a file that is there).
REPLACE = "replace it with the official file (delete it, then run with dataset.download=true)"


class CifarFormatError(SelectScaleError, ValueError):
    """A CIFAR file exists but cannot be used (unreadable pickle, wrong shapes, bad labels, ...): exit 2."""


class _CifarUnpickler(pickle.Unpickler):
    """Only the globals a CIFAR pickle refers to: numpy array reconstruction (and ``_codecs.encode``,
    which Python 3 protocol-2 pickles use for bytes). Nothing that can run other code."""

    ALLOWED = {
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which no CIFAR file contains")
        return super().find_class(module, name)


def _read_pickle(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            content = _CifarUnpickler(handle, encoding="latin1").load()  # Python-2 pickles, as distributed
    except Exception as exc:  # a damaged pickle can raise nearly anything; report it as the file's problem
        raise CifarFormatError(f"{path}: truncated or unreadable pickle ({type(exc).__name__}: {exc}); "
                               f"{REPLACE}") from None
    if not isinstance(content, dict):
        raise CifarFormatError(f"{path}: holds a {type(content).__name__}, a CIFAR file holds a dict; {REPLACE}")
    return content


def _entry(content: dict, key: str, path: Path):
    if key not in content:
        raise CifarFormatError(f"{path}: has no {key!r} entry (it has {', '.join(map(str, content))}); {REPLACE}")
    return content[key]


def read_classes(path: Path, meta_key: str, num_classes: int, title: str) -> tuple[str, ...]:
    """The class names under ``meta_key`` of the meta file ``path``; ``num_classes`` of them or an error."""
    names = _entry(_read_pickle(path), meta_key, path)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CifarFormatError(f"{path}: {meta_key!r} is not a list of class names; {REPLACE}")
    if len(names) != num_classes:
        raise CifarFormatError(
            f"{path}: lists {len(names)} class names, {title} has {num_classes} (class-count mismatch); {REPLACE}"
        )
    return tuple(names)


def read_batch(path: Path, label_key: str, num_classes: int, title: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (uint8 N x 3 x 32 x 32, RGB) and labels (int64 N, under ``label_key``) of one batch file."""
    content = _read_pickle(path)
    data = _entry(content, "data", path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != IMAGE_BYTES:
        shape = getattr(data, "shape", type(data).__name__)
        raise CifarFormatError(
            f"{path}: 'data' has shape {shape} ({getattr(data, 'dtype', '?')}), expected N x {IMAGE_BYTES} uint8; "
            f"{REPLACE}"
        )
    labels = _integer_labels(_entry(content, label_key, path), label_key, data.shape[0], num_classes, title, path)
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32))  # R plane, G plane, B plane
    return images, torch.from_numpy(labels)


def _integer_labels(raw, label_key: str, count: int, num_classes: int, title: str, path: Path) -> np.ndarray:
    """The labels of one batch file as int64, or CifarFormatError naming the file, what is wrong and the fix.

    The official files hold a list of Python ints, one per image row. Accepted: a list (or tuple) of ints, or a
    numpy array of an integer dtype (what a file rewritten with numpy holds; the values are the same). Refused:
    floats (even 3.0: a label that is not an integer is a damaged or foreign file, not one to round), bools
    (True is 1 in Python, but no CIFAR file holds them), anything else, a count other than the images', and a
    value outside [0, num_classes)."""
    if isinstance(raw, np.ndarray) and raw.ndim == 1 and raw.dtype.kind in "iu":
        labels = raw.astype(np.int64)
    elif isinstance(raw, list | tuple):
        bad = next((index for index, value in enumerate(raw)
                    if not isinstance(value, int | np.integer) or isinstance(value, bool | np.bool_)), None)
        if bad is not None:
            raise CifarFormatError(
                f"{path}: {label_key!r} holds {type(raw[bad]).__name__} values (e.g. {raw[bad]!r} at index {bad}), "
                f"not integer class indices; {REPLACE}")
        try:
            labels = np.asarray(raw, dtype=np.int64)
        except OverflowError:  # an int beyond 64 bits: certainly out of range
            raise CifarFormatError(f"{path}: {label_key!r} holds an integer beyond 64 bits, {title} has classes "
                                   f"0..{num_classes - 1}; {REPLACE}") from None
    else:
        kind = f"a {raw.dtype} array of shape {raw.shape}" if isinstance(raw, np.ndarray) else f"a {type(raw).__name__}"
        raise CifarFormatError(f"{path}: {label_key!r} is {kind}, not a list of integer class indices; {REPLACE}")
    if labels.shape != (count,):
        raise CifarFormatError(f"{path}: {label_key!r} has shape {labels.shape} for {count} images (one label per "
                               f"image row of 'data'); {REPLACE}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CifarFormatError(
            f"{path}: labels out of range: {labels.min()}..{labels.max()}, {title} has classes 0..{num_classes - 1}; "
            f"{REPLACE}")
    return labels
