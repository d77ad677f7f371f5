"""Helpers of the hostile-input suites (tests/test_hostile_*.py): the commands run in this process (a refused case
costs ~0.3 s, not a torch import), the one-line contract, and a byte-for-byte picture of a runs folder."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import sys
from pathlib import Path

# Tiny and fast on the CPU: 32 synthetic images, 2 steps an epoch.
TINY = ["dataset=synthetic", "dataset.train_size=32", "dataset.test_size=16", "trainer.batch_size=16",
        "model=resnet8", "drop=selectscale", "trainer.device=cpu", "trainer.progress_bar=false",
        "trainer.deterministic=true"]


def _call(main, argv: list[str], argv0: str) -> tuple[int, str]:
    old, err = sys.argv, io.StringIO()
    sys.argv = [argv0, *argv]
    try:
        with contextlib.redirect_stderr(err):
            try:
                status = main() if argv0 == "train.py" else main(argv)
            except SystemExit as exit_:
                status = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = old
    return status, err.getvalue()


def train_cli(*argv: str) -> tuple[int, str]:
    """``python train.py ARGV`` in this process: (exit status, stderr)."""
    from selectscale import train

    return _call(train.run, list(argv), "train.py")


def evaluate_cli(*argv: str) -> tuple[int, str]:
    """``selectscale-evaluate ARGV`` in this process: (exit status, stderr)."""
    from selectscale import evaluate

    return _call(evaluate.main, list(argv), "selectscale-evaluate")


def figures_cli(*argv: str) -> tuple[int, str]:
    from selectscale import figures

    return _call(figures.main, list(argv), "selectscale-figures")


def assert_one_line(stderr: str, *fragments: str) -> str:
    """stderr is exactly one line (Python warnings aside), an ``error:`` line naming every fragment, no traceback."""
    lines = [line for line in stderr.splitlines() if line.strip() and "Warning: " not in line
             and not line.startswith(("  warnings.warn", "  train, test"))]
    assert len(lines) == 1, f"expected one line, got:\n{stderr}"
    assert "Traceback" not in stderr and lines[0].startswith(("error: ", "stopped")), stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def picture(folder: Path) -> dict[str, object]:
    """{relative path: content hash, or the kind of a non-regular entry} of everything under ``folder`` (links not
    followed, pipes never opened): equal pictures mean byte-for-byte equal folders."""
    found: dict[str, object] = {}
    if not folder.exists():
        return found
    for root, folders, files in os.walk(folder):
        for name in [*folders, *files]:
            path = Path(root) / name
            mode = os.lstat(path).st_mode
            key = str(path.relative_to(folder))
            if stat.S_ISREG(mode):
                found[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(mode):
                found[key] = f"link -> {os.readlink(path)}"
            else:
                found[key] = "folder" if stat.S_ISDIR(mode) else f"mode {stat.S_IFMT(mode):o}"
    return found
