"""One writer per run directory: an exclusive ``flock`` on ``RUN_DIR/.lock`` held for the whole run.

Two processes on one directory (two ``make table1`` on the same RUNS, a requeued job while the old one still
runs) would otherwise both train it and interleave their records. The kernel drops a ``flock`` when its process
dies, so a SIGKILL never leaves a stale lock: the file may stay, the lock does not. The holder writes its pid
into the file so that a refused process can name it. The file is opened without following a link: a link there
would let this run take (and truncate) another run's lock.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

from selectscale.errors import RunDirError

from .layout import LOCK_FILE, check_entry


class RunDirLock:
    """``with RunDirLock(run_dir):`` holds the directory's lock; :class:`RunDirError` if another process does."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def _open(self) -> int:
        check_entry(self.path)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                check_entry(self.path)  # raced into a link or pipe: its one-line refusal
            raise RunDirError(f"cannot open the lock {self.path} ({error.strerror or error}): fix the folder's "
                              "permissions or choose another directory; nothing was changed") from error
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            check_entry(self.path)
        return fd

    def acquire(self) -> RunDirLock:
        for _ in range(3):  # a holder may remove the file between our open and our lock: then try the new file
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise RunDirError(f"run directory {self.path.parent} is in use by another process (pid {holder}): "
                                  "wait for it to finish or stop it, or choose another directory; nothing was "
                                  "changed") from None
            if _same_file(fd, self.path):
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return self
            os.close(fd)
        raise RunDirError(f"could not lock run directory {self.path.parent}: its lock file keeps changing")

    def release(self) -> None:
        """Remove the lock file and drop the lock (removing first: a waiting process then locks a new file)."""
        if self._fd is None:
            return
        if _same_file(self._fd, self.path):
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(run_dir: Path) -> bool:
    """Whether another process holds ``run_dir``'s lock now (never creates the file, never follows a link)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.lstat(path).st_ino
    except FileNotFoundError:
        return False
