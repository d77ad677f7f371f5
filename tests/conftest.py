"""Fixtures shared by every test file.

The shared folder (``$SELECTSCALE_SHARED``, by default ``<repo>/../shared``) holds real data for tests,
e.g. ``data/cifar-mini`` (real CIFAR images in the official format, see its README). A user's machine
usually has no such folder: tests that need it are skipped, with a message naming the missing folder.
CI (``.ci/run``) sets ``SELECTSCALE_REQUIRE_SHARED=1``, and then a missing folder fails those tests instead.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_root() -> Path:
    """``$SELECTSCALE_SHARED``, or ``<repo>/../shared`` when unset."""
    return Path(os.environ.get("SELECTSCALE_SHARED") or REPO_ROOT.parent / "shared").expanduser().absolute()


def require_shared(relative: str) -> Path:
    """The folder ``relative`` inside the shared folder; skips the test when it is absent, or fails it
    when ``SELECTSCALE_REQUIRE_SHARED=1`` (CI must never silently skip real-data tests)."""
    path = shared_root() / relative
    if not path.is_dir():
        message = f"shared test data missing: {path} (set SELECTSCALE_SHARED to the folder that holds {relative})"
        if os.environ.get("SELECTSCALE_REQUIRE_SHARED") == "1":
            pytest.fail(f"{message}; SELECTSCALE_REQUIRE_SHARED=1 requires it", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder itself (skip/fail as :func:`require_shared` when absent)."""
    return require_shared(".")


@pytest.fixture(scope="session")
def cifar_mini_root() -> Path:
    """``<shared>/data/cifar-mini``: holds ``cifar-10-batches-py/`` and ``cifar-100-python/`` (real images,
    official format, shortened files: 5,438 / 1,017 CIFAR-10 and 1,117 / 916 CIFAR-100 images)."""
    return require_shared("data/cifar-mini")


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _dump_pickle(path: Path, content) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)  # the official files are protocol-2 pickles


def _write_tiny_cifar10(root: Path, train_counts=(3, 2, 2, 2, 3), test_count: int = 5, seed: int = 0) -> Path:
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    _dump_pickle(folder / "batches.meta", {"num_cases_per_batch": 10000, "label_names": list(CIFAR10_CLASSES)})
    files = [(f"data_batch_{i + 1}", n) for i, n in enumerate(train_counts)] + [("test_batch", test_count)]
    for file_name, count in files:
        labels = [int(label) for label in rng.integers(0, 10, count)]
        labels[0] = 9  # every file's labels span the ten classes
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        _dump_pickle(folder / file_name, {"batch_label": file_name, "labels": labels, "data": data, "filenames": []})
    return folder


@pytest.fixture
def write_tiny_cifar10():
    """A function ``(root, train_counts=(3, 2, 2, 2, 3), test_count=5, seed=0) -> folder`` that writes a tiny
    CIFAR-10 into ``root/cifar-10-batches-py`` in the official layout and pickle structure (random pixels,
    labels spanning 0..9). Its md5 sums are not the official ones, so it loads with ``verified=False``."""
    return _write_tiny_cifar10


@pytest.fixture(scope="module")
def in_process_reference(tmp_path_factory) -> Path:
    """An uninterrupted in-process tiny run (the fault tests compare with it: same process, same numerics)."""
    from fault_helpers import make_cfg

    from selectscale.engine import fit

    run_dir = tmp_path_factory.mktemp("in_process") / "reference"
    fit(make_cfg(run_dir))
    return run_dir


# --- a real one-node Slurm (issue 33) -------------------------------------------------------------------------------

def _slurm_local():
    """scripts/slurm_local.py as a module (scripts/ is no package)."""
    import importlib.util
    import sys

    name = "selectscale_slurm_local"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "slurm_local.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # before running it: dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real one-node Slurm (munged, slurmctld, slurmd; scripts/slurm_local.py) for the whole session, stopped by
    PID at its end; its ``env()`` gives a subprocess environment with SLURM_CONF set. Skipped, with the reason,
    where Debian's Slurm packages or submitit are missing or we are not root; with CI=true it fails instead (.ci/run
    installs the packages, so there the Slurm tests must run). Under pytest-xdist each worker starts its own
    (free ports, random first job id); .ci/run keeps the Slurm tests on one worker (xdist_group "slurm")."""
    slurm_local = _slurm_local()
    reason = slurm_local.unavailable_reason()
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
        import submitit  # noqa: F401
    except ImportError:
        reason = reason or "hydra-submitit-launcher is not installed: pip install -e '.[slurm]' (or '.[dev]')"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; with CI=true the Slurm tests must run, not skip", pytrace=False)
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("slurm")
    cluster = slurm_local.up(folder)
    yield cluster
    slurm_local.down(folder)
