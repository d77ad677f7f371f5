"""Where the package's own files are, in a checkout and in an installed wheel alike."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def config_dir() -> Path:
    """The Hydra config folder: ``selectscale.configs`` (the repository's ``configs/``, which pyproject installs
    as that package), or ``configs/`` beside the package when it is imported from a bare checkout."""
    try:
        return Path(str(resources.files("selectscale.configs")))
    except ModuleNotFoundError:  # a checkout on sys.path without `pip install`: configs/ is not a package there
        return Path(__file__).resolve().parents[1] / "configs"
