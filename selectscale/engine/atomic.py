"""The one way the engine writes a file that must never be seen half-written: ``write_atomic``.

Write a temporary file beside the target (same folder, same file system), flush and fsync it, then rename it
over the target: a reader, a resume after a kill, or a machine after a power cut sees the old file or the new
one, never a mix. Leftover temporaries (``.NAME.tmp-PID``) are cleaned by the checkpoint code on resume.
"""

from __future__ import annotations

import os
from pathlib import Path

from selectscale.errors import OutputWriteError

__all__ = ["OutputWriteError", "write_atomic", "write_synced"]


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it before returning."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` by ``data`` (text is UTF-8) atomically and durably: temporary file, fsync, rename."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_synced(temporary, data.encode() if isinstance(data, str) else data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
