"""Which runs a table needs and what state each is in: the one place that decides, for ``experiments run`` (what
to start) and ``experiments report`` (what to count and what to list).

A table of R rows asked for with S seeds needs R x S runs, ``RUNS/<row>/seed<k>`` (k < S). Each is:

| state | meaning | run | report |
|---|---|---|---|
| finished | result.json says complete, and the run is this row's (below) | skipped | counted |
| running | another process holds the directory's lock (``.lock``) | left to it | listed |
| interrupted | config.yaml, a checkpoint or an incomplete result.json, of this row | resumed | listed |
| missing | nothing there | started | listed |
| foreign | a run of another setting or seed, a damaged result.json, a link or file in its place | refused | listed |

A run is this row's when its recorded config agrees with every override of the row
(:attr:`~selectscale.report.specs.Row.overrides`): ``GROUP=OPTION`` (model, drop, dataset, schedule, curriculum)
means the run's ``GROUP.name`` is the name that option's file sets (``schedule=step_cifar`` sets ``step``), a
dotted ``key=value`` means that value (both read as YAML, numbers compared as floats, lists as lists), and the
folder ``seed<k>`` holds a run of seed k. Not compared: the runtime keys (paths, devices, resuming:
``RUNTIME_KEYS``), keys that the command line's extra overrides set (``extra``: they replace the row's), and
``trainer.epochs`` unless ``epochs`` is given (a shortened table is flagged, not foreign) or ``strict_epochs``
(the table runner: it must not resume a run of another length). A run on the built-in synthetic data set matches
any ``dataset=`` row (the smoke tests' stand-in; the table's data column says "synthetic" and the mixed-settings
rule keeps it apart from runs on real images).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from selectscale.paths import config_dir
from selectscale.runs.files import read_text
from selectscale.runs.history import is_runtime_key
from selectscale.runs.layout import CONFIG_FILE, RESULT_FILE
from selectscale.runs.state import run_state

from .collect import RunRow, UnusableResult, read_row, setting_of
from .specs import Row, Table

STATES = ("finished", "running", "interrupted", "missing", "foreign")
GROUPS = ("model", "drop", "dataset", "schedule", "curriculum")  # GROUP=OPTION overrides checked by name
STAND_IN_DATA = "synthetic"  # a run on it matches any dataset= row (the smoke tests)


@dataclass(frozen=True)
class PlannedRun:
    """One run a table needs: its row, seed and directory, its state (:data:`STATES`) and a one-line reason;
    ``result`` is the finished run's row of the table (None in any other state)."""

    row: str
    seed: int
    run_dir: Path
    state: str
    reason: str
    result: RunRow | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        return f"{self.row}/seed{self.seed}"

    def line(self) -> str:
        """``row/seed3: interrupted: stopped after epoch 12 (runs/table1/row/seed3)``."""
        return f"{self.name}: {self.state}: {self.reason} ({self.run_dir})"


@dataclass(frozen=True)
class Expected:
    """One value every run of a row must have: the dotted config key, the value, and the override it came from."""

    key: str
    value: Any
    source: str


def _parse(text: str) -> Any:
    """An override's value as Hydra reads it, near enough: YAML, and ``1e-3`` as a number."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _normal(value: Any) -> Any:
    """Numbers as floats (bools stay bools), sequences as lists, recursively: the form values are compared in."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list | tuple):
        return [_normal(item) for item in value]
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    return value


@cache
def option_name(group: str, option: str) -> str:
    """The ``name`` that ``configs/GROUP/OPTION.yaml`` sets (``schedule=step_cifar`` -> ``step``), else OPTION."""
    try:
        data = yaml.safe_load((config_dir() / group / f"{option}.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return option
    if isinstance(data, dict):
        node = data[group] if isinstance(data.get(group), dict) else data  # a "@package _global_" option file
        if isinstance(node.get("name"), str):
            return node["name"]
    return option


def _key_of(override: str) -> str | None:
    """The dotted key an override sets (``+``/``++``/``~`` stripped), or None for Hydra's own and malformed ones."""
    if "=" not in override:
        return None
    key = override.split("=", 1)[0].lstrip("+~")
    return None if not key or "/" in key or key.startswith("hydra") else key


def row_expectations(row: Row, epochs: int | None = None, extra: Iterable[str] = (),
                     strict_epochs: bool = False) -> list[Expected]:
    """What every run of ``row`` must have recorded (the module's rules), later overrides winning."""
    expected: dict[str, Expected] = {}
    for override in row.overrides:
        key = _key_of(override)
        if key is None or override.startswith("~"):
            continue
        text = override.split("=", 1)[1]
        if "${" in text:
            continue  # an interpolation: its value is the run's own business
        if "." not in key:
            if key in GROUPS:
                expected[f"{key}.name"] = Expected(f"{key}.name", option_name(key, text), override)
            continue
        expected[key] = Expected(key, _normal(_parse(text)), override)
    for override in extra:  # the command line replaces these: not the row's to check
        key = _key_of(override)
        if key is not None:
            expected.pop(f"{key}.name" if key in GROUPS else key, None)
    if epochs is not None:
        expected["trainer.epochs"] = Expected("trainer.epochs", float(epochs), f"--epochs {epochs}")
    elif not strict_epochs:
        expected.pop("trainer.epochs", None)
    return [item for key, item in expected.items() if not is_runtime_key(key) and key != "seed"]


def _display(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(map(_display, value)) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "null" if value is None else str(value)


def mismatch(setting: dict[str, Any], seed: Any, expected_seed: int, expectations: Sequence[Expected]) -> str | None:
    """Why a run of ``setting`` (its flattened config, :func:`~selectscale.report.collect.setting_of`) and
    ``seed`` is not this row's run of ``expected_seed``; None when it is."""
    if seed != expected_seed:
        return f"it is a run of seed {seed}, not of seed {expected_seed}" if seed is not None else "it records no seed"
    for item in expectations:
        if item.key == "dataset.name" and setting.get(item.key) == STAND_IN_DATA:
            continue
        if item.key not in setting:
            return f"it records no {item.key} (the row sets {item.source})"
        found = _normal(setting[item.key])
        if found != item.value:
            return f"{item.key} is {_display(found)}, the row sets {item.source}"
    return None


def _recorded_config(run_dir: Path) -> dict | None:
    """An unfinished run's config: config.yaml, else the config in its incomplete result.json; None if neither."""
    for name, parse in ((CONFIG_FILE, yaml.safe_load), (RESULT_FILE, json.loads)):
        try:
            data = parse(read_text(run_dir / name))
        except (OSError, ValueError, yaml.YAMLError):  # absent, a link, not UTF-8: train.py names it
            continue
        config = data.get("config") if name == RESULT_FILE and isinstance(data, dict) else data
        if isinstance(config, dict):
            return config
    return None


def _where_a_file_is(path: Path) -> Path | None:
    """The file that lies where a folder on the way to ``path`` belongs, if any."""
    for parent in reversed(path.parents):
        if os.path.lexists(parent) and not parent.is_dir():
            return parent
    return None


def plan_run(row: Row, seed: int, run_dir: Path, expectations: Sequence[Expected]) -> PlannedRun:
    """The state of one run of ``row`` in ``run_dir``."""

    def planned(state: str, reason: str, result: RunRow | None = None) -> PlannedRun:
        return PlannedRun(row.label, seed, run_dir, state, reason, result)

    try:
        mode = os.lstat(run_dir).st_mode
    except FileNotFoundError:
        return planned("missing", "no run directory")
    except NotADirectoryError:
        return planned("foreign", f"{_where_a_file_is(run_dir)} is a file where a folder of runs goes")
    if stat.S_ISLNK(mode):
        return planned("foreign", "a symbolic link in place of the run directory")
    if not stat.S_ISDIR(mode):
        return planned("foreign", "a file in place of the run directory")
    state, reason = run_state(run_dir)  # a link, pipe or folder where a run file goes: "foreign"
    if state == "finished":
        try:
            result = read_row(run_dir / RESULT_FILE)
        except UnusableResult as error:
            return planned("foreign", f"result.json is unusable: {error}")
        problem = mismatch(result.setting_dict(), result.seed, seed, expectations)
        if problem:
            return planned("foreign", problem)
        return planned("finished", "complete, this row's setting", result)
    if state == "interrupted":
        config = _recorded_config(run_dir)
        if config is not None:
            problem = mismatch(dict(setting_of(config)), config.get("seed"), seed, expectations)
            if problem:
                return planned("foreign", problem)
    return planned(state, reason)


def plan_table(table: Table, runs: Path, seeds: int, epochs: int | None = None, extra: Iterable[str] = (),
               strict_epochs: bool = False) -> list[PlannedRun]:
    """Every run ``table`` needs under the ``--runs`` folder ``runs`` for ``seeds`` seeds, row by row, with its
    state; ``epochs``, ``extra`` and ``strict_epochs`` as in :func:`row_expectations`."""
    extra = tuple(extra)
    planned = []
    for row in table.rows:
        expectations = row_expectations(row, epochs, extra, strict_epochs)
        row_dir = table.row_dir(runs, row.label)
        planned += [plan_run(row, seed, row_dir / f"seed{seed}", expectations) for seed in range(seeds)]
    return planned


def state_counts(plan: Sequence[PlannedRun]) -> dict[str, int]:
    """``{state: count}`` in :data:`STATES` order, states with no run left out."""
    return {state: count for state in STATES if (count := sum(run.state == state for run in plan))}
