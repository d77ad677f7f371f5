"""Reading and writing a run's files safely: never through a link, never blocking on a pipe, never half-written.

``write_atomic`` writes a temporary file beside the target (same folder, same file system), flushes and fsyncs
it, renames it over the target and fsyncs the folder: a reader, a resume after a kill, or a machine after a
power cut sees the old file or the new one, never a mix. ``read_bytes``/``read_text`` open with O_NOFOLLOW and
O_NONBLOCK and read only a regular file. Leftover temporaries (``.NAME.tmp-PID``) are removed on resume.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from selectscale.errors import RunDirError

TEMPORARY_GLOB = ".*.tmp-*"


def fsync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW, 0o644)


def write_synced(path: Path, data: bytes) -> None:
    """Create or truncate ``path`` (never following a link), write ``data`` and fsync it."""
    with open(path, "wb", opener=_no_follow) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def write_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` by ``data`` (text is UTF-8) atomically and durably: temporary file, fsync, rename."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_synced(temporary, data.encode() if isinstance(data, str) else data)
        os.replace(temporary, path)
        fsync_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def append_line(path: Path, line: str) -> None:
    """Append ``line`` (UTF-8) to ``path``, never through a link; fsynced so a kill cannot lose a finished epoch."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunDirError(f"{path} is not a regular file: move it away; nothing was changed")
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_bytes(path: Path) -> bytes:
    """The bytes of the regular file ``path``; RunDirError for a link, pipe, folder or device (without blocking);
    FileNotFoundError when it is absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except NotADirectoryError:  # a folder above it is a file: the file is absent
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path)) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise RunDirError(f"{path} is a symbolic link where the run keeps its own file: move it away; nothing "
                              "was changed") from None
        if error.errno in (errno.ENXIO, errno.EISDIR):
            raise RunDirError(f"{path} is not a regular file: move it away; nothing was changed") from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RunDirError(f"{path} is not a regular file (a pipe, folder or device) where the run keeps its own "
                              "file: move it away; nothing was changed")
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path) -> str:
    """The UTF-8 text of the regular file ``path`` (:func:`read_bytes`); UnicodeDecodeError if it is not UTF-8."""
    return read_bytes(path).decode()


def remove_temporaries(folder: Path) -> list[Path]:
    """Delete the regular temporary files of writes a killed process never finished (one writer holds the lock)."""
    removed = [path for path in Path(folder).glob(TEMPORARY_GLOB) if path.is_file() and not path.is_symlink()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
