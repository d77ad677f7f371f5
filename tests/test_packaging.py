"""The package list in pyproject.toml matches what is on disk, so a wheel carries every module and config."""

from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_and_config_folder():
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(path.parent.relative_to(REPO).parts) for path in (REPO / "selectscale").rglob("__init__.py")}
    on_disk |= {"selectscale.configs"} | {f"selectscale.configs.{p.name}" for p in (REPO / "configs").iterdir()
                                           if p.is_dir() and any(p.glob("*.yaml"))}
    assert set(setuptools["packages"]) == on_disk
    assert set(setuptools["package-data"]) == {"selectscale"} | {name for name in on_disk if "configs" in name}
    assert setuptools["package-dir"] == {"selectscale.configs": "configs"}


def test_the_config_folder_is_found_through_the_package():
    from selectscale.paths import config_dir

    assert (config_dir() / "train.yaml").is_file() and (config_dir() / "paper" / "table1.yaml").is_file()
