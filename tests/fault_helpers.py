"""Helpers shared by tests/test_faults.py, test_faults_storage.py and test_bad_input.py: running train.py
(optionally with a fault injected), reading what a run left behind, checking the one-line error contract, and
the tiny in-process run (``make_cfg``) that tests/conftest.py's ``in_process_reference`` trains."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from selectscale.runs.checkpoint import load_checkpoint, read_checkpoint_file, verified_payload

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "train.py"
VOLATILE = {"seconds", "images_per_second"}  # timing fields differ between any two runs
# Tiny and deterministic on the CPU: 32 synthetic images, batch 16 -> 2 steps an epoch, about 0.1 s an epoch.
TINY = ["dataset=synthetic", "dataset.train_size=32", "dataset.test_size=16", "trainer.batch_size=16",
        "model=resnet20", "drop=selectscale", "schedule=cosine", "trainer.device=cpu", "trainer.progress_bar=false",
        "trainer.deterministic=true"]
# One thread per process: the machine is small and shared, and every run of a comparison uses the same count.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_command(args: list[str], patch: str | None = None) -> list[str]:
    """``python train.py ARGS``; with ``patch``, that Python code runs first (a fault injected into the
    framework in that process only), then train.py runs as ``__main__`` exactly as from the shell."""
    if patch is None:
        return [sys.executable, str(TRAIN), *args]
    launcher = (f"{patch}\nimport runpy, sys\nsys.argv = [{str(TRAIN)!r}, *sys.argv[1:]]\n"
                f"runpy.run_path({str(TRAIN)!r}, run_name='__main__')\n")
    return [sys.executable, "-c", launcher, *args]


def run_train(args: list[str], *, patch: str | None = None, timeout: float = 300, env: dict | None = None,
              cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run train.py to its end (a hang fails the test through ``timeout``)."""
    return subprocess.run(train_command(args, patch), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env or ENV)


class Launched:
    """A train.py process whose merged stdout/stderr is read line by line in a thread."""

    def __init__(self, args: list[str], *, patch: str | None = None, env: dict | None = None,
                 launcher: list[str] | None = None, stderr_path: Path | None = None) -> None:
        """``stderr_path``: stderr goes to that file instead of being merged into the lines read."""
        command = train_command(args, patch) if launcher is None else [*launcher, str(TRAIN), *args]
        self.started = time.monotonic()
        stderr = subprocess.STDOUT if stderr_path is None else open(stderr_path, "w")  # noqa: SIM115
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                        env=env or ENV, start_new_session=True)
        if stderr_path is not None:
            stderr.close()  # the child holds its own copy
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for_line(self, pattern: str, timeout: float = 300) -> bool:
        """Wait until an output line matches ``pattern`` (True) or the process has ended (False)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        seen = 0
        while time.monotonic() < deadline:
            lines = self.lines[seen:]
            if any(regex.search(line) for line in lines):
                return True
            seen += len(lines)
            if not self.alive() and not self._reader.is_alive():
                return any(regex.search(line) for line in self.lines[seen:])
            time.sleep(0.005)
        raise TimeoutError(f"no output line matching {pattern!r} within {timeout} s:\n" + self.output()[-3000:])

    def wait(self, timeout: float) -> int:
        """The exit status; on a timeout the whole process group is killed and TimeoutError raised."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise TimeoutError(f"still running after {timeout} s:\n" + self.output()[-3000:]) from None
        self._reader.join(timeout=30)
        return code

    def kill_group(self) -> None:
        """SIGKILL this launch's process group (the process and any children it started), then reap it."""
        try:
            os.killpg(self.process.pid, 9)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=60)

    def output(self) -> str:
        return "\n".join(self.lines)


def metrics(run_dir: Path) -> list[dict]:
    """metrics.jsonl without the timing fields."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def weights(run_dir: Path, name: str = "checkpoint.pt") -> dict:
    return read_checkpoint_file(run_dir / name)["model"]


def same_weights(one: dict, two: dict) -> bool:
    return one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


def sidecar_matches(path: Path) -> bool:
    """Whether ``path`` is a checkpoint that verifies (its own checksum, or an earlier version's sidecar)."""
    return path.is_file() and verified_payload(path) is not None


def write_sidecar(path: Path) -> None:
    """An earlier version's checkpoint format: the file as it is, with a matching ``.sha256`` sidecar."""
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest())


def dir_state(path: Path) -> dict[str, tuple[int, int]]:
    """{relative path: (size, mtime_ns)} of every file and folder under ``path`` (empty if it is absent)."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.stat().st_size if p.is_file() else -1, p.lstat().st_mtime_ns)
            for p in sorted(path.rglob("*"))}  # lstat: a dangling link is a thing in the folder too


_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")


def message_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not blank and not Python warnings (a warning is its
    ``file:line: XWarning: ...`` line plus the indented source line under it)."""
    lines, in_warning = [], False
    for line in stderr.splitlines():
        if not line.strip():
            continue
        if _WARNING.match(line):
            in_warning = True
            continue
        if in_warning and line.startswith((" ", "\t")):
            continue
        in_warning = False
        lines.append(line)
    return lines


# --- shared by the fault tests: where a run goes, the reference it must equal, an in-process run ----------

def in_dir(run_dir: Path) -> list[str]:
    """Put the run (and Hydra's own directory) in ``run_dir``: nothing lands in the repository's runs/."""
    return [f"hydra.run.dir={run_dir}"]


def assert_equals_reference(run_dir: Path, reference: Path) -> None:
    """Final weights and every epoch's metrics (test errors and losses included) equal, bit for bit."""
    assert json.loads((run_dir / "result.json").read_text())["complete"] is True
    assert same_weights(weights(run_dir), weights(reference)), "final weights differ from the uninterrupted run"
    got, want = metrics(run_dir), metrics(reference)
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want], "metrics.jsonl holds other epochs"
    assert got == want


CONFIG_DIR = REPO / "configs"
IN_PROCESS_EPOCHS = 3


def make_cfg(run_dir: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*TINY, f"trainer.epochs={IN_PROCESS_EPOCHS}",
                                                       f"output_dir={run_dir}", *overrides])


def assert_previous_state_intact(run_dir: Path, epoch: int) -> None:
    """The checkpoint of ``epoch`` loads (checksum verified, weights-only) and result.json reads as its epoch."""
    state = load_checkpoint(run_dir)
    assert state is not None and state["epoch"] == epoch and state["next_batch"] == 0
    result = json.loads((run_dir / "result.json").read_text())
    assert result["complete"] is False and result["epochs_completed"] == epoch
