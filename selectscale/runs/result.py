"""result.json (schema version 1): the one file a table is built from.

It holds the final test errors of the *last* epoch (never the best epoch on the test set), every
hyperparameter, the data set and its ``verified`` flag, the code version, the hardware, and
``complete``: true only when every epoch ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from selectscale.errors import OutputWriteError, RunDirError

from .files import read_text, write_atomic
from .layout import RESULT_FILE, check_entry
from .lock import RunDirLock

SCHEMA_VERSION = 1


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10,
                          check=True).stdout.strip()


def source_version(repo: Path) -> str:
    """The code version of HEAD: git's tree hash of selectscale/ and a hash of configs/ without configs/paper/
    (the experiment specs, read by the experiments command, never by a run). Two commits that differ only in
    results, docs, tests or specs share it, so the runs of a study committed along the way share one."""
    package = _git(repo, "rev-parse", "HEAD:selectscale")
    entries = [line for line in _git(repo, "ls-tree", "HEAD:configs").splitlines() if not line.endswith("\tpaper")]
    configs = hashlib.sha1("\n".join(entries).encode(), usedforsecurity=False).hexdigest()
    return f"{package[:12]}-{configs[:12]}"


def git_commit() -> dict:
    """The commit of the code that ran, whether the working tree had uncommitted changes, and ``source``
    (:func:`source_version`)."""
    repo = Path(__file__).resolve().parents[2]
    try:
        commit = _git(repo, "rev-parse", "HEAD")
        dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
        return {"commit": commit, "dirty": dirty, "source": source_version(repo)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None, "source": "unknown"}


def cpu_model() -> tuple[str, bool]:
    """The CPU's model name (Linux: /proc/cpuinfo) and whether it has native bf16 (avx512_bf16 or amx_bf16)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine(), False
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    return fields.get("model name", platform.machine()), bool(flags & {"avx512_bf16", "amx_bf16"})


# Forces native_bf16()'s answer: "1" (native bf16), "0" (none); unset or anything else: detect. For tests, and for
# a machine whose detection is wrong.
NATIVE_BF16_ENV = "SELECTSCALE_NATIVE_BF16"


def native_bf16() -> bool:
    """Whether this CPU runs bf16 natively, by the check oneDNN itself uses to pick its bf16 kernels
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported()``: AVX-512 BF16 or AMX, or the Arm equivalents); without it
    bf16 is emulated and measured ~40x slower (results/mini_overfit/README.md). ``$SELECTSCALE_NATIVE_BF16`` (1 or
    0) forces the answer. Where torch has no such check, the /proc/cpuinfo flags of :func:`cpu_model` answer."""
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN's check
        return cpu_model()[1]


def environment() -> dict:
    """What a study's runs must share (issue 22): Python, torch, torchvision, the CPU model and its bf16."""
    import torchvision

    model, native_bf16 = cpu_model()
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "cpu_model": model, "cpu_native_bf16": native_bf16, "cpu_count": os.cpu_count()}


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def write_result(run_dir: Path, payload: dict) -> None:
    """``payload`` as the run's result.json (indented JSON), atomically and durably; OutputWriteError (one line)
    when it cannot be written: the previous result.json is intact."""
    path = Path(run_dir) / RESULT_FILE
    check_entry(path)
    try:
        write_atomic(path, json.dumps(payload, indent=2) + "\n")
    except OSError as error:
        raise OutputWriteError(f"could not write {path}: {error.strerror or error}; the previous checkpoints and "
                               "results are intact (free disk space, then resume with trainer.resume=auto)") from error


def read_result(run_dir: Path) -> dict | None:
    """The run's result.json, or None if there is none; ValueError (with the reason) if it is not a JSON object,
    RunDirError if a link, pipe or folder stands in its place."""
    path = Path(run_dir) / RESULT_FILE
    check_entry(path)
    try:
        result = json.loads(read_text(path))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"not readable JSON: {type(error).__name__}") from error
    if not isinstance(result, dict):
        raise ValueError(f"not a JSON object but a {type(result).__name__}")
    return result


def add_result_entry(run_dir: Path, key: str, value: dict) -> bool:
    """Record ``value`` as ``key`` of a complete run's result.json, under the run's lock and atomically (a score
    added after training: the evaluation pool, issue 37). True when written; False when result.json holds that
    very value already. RunDirError (one line, nothing changed) when the run is not complete or holds another
    value under ``key``: a recorded result is never overwritten."""
    run_dir = Path(run_dir)
    with RunDirLock(run_dir):
        result = read_result(run_dir)
        if not result or result.get("complete") is not True:
            raise RunDirError(f"{run_dir} holds no complete run (result.json missing or complete is not true): "
                              f"finish training it first; nothing was recorded")
        if key in result:
            if result[key] == value:
                return False
            raise RunDirError(f"{run_dir}/result.json already records another {key!r} ({result[key]!r:.120}); it is "
                              "never overwritten: compare without --record, or score a copy of the run")
        write_result(run_dir, {**result, key: value})
    return True
