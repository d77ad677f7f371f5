"""Read every ``result.json`` under some directories into one row per finished run.

A file becomes a :class:`RunRow` only when it is readable JSON with ``schema_version`` 1, has every field a
table needs, and says ``complete: true``. Anything else goes to :attr:`Collection.skipped` with a one-line
reason, so a table can say what it left out instead of silently dropping runs.

``RunRow.setting`` is the experiment's identity: every hyperparameter of the resolved config, flattened to
dotted keys, except the seed and the keys that only say where or how a run ran (paths, devices, resuming).
Two rows with equal settings differ only by seed and may be averaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from numbers import Real
from pathlib import Path
from typing import Any

from selectscale.errors import RunDirError
from selectscale.runs.files import read_text
from selectscale.runs.history import RUNTIME_KEYS, flatten, is_runtime_key, with_added_keys
from selectscale.runs.layout import RESULT_FILE
from selectscale.runs.metrics import read_metrics_lenient
from selectscale.runs.result import SCHEMA_VERSION

# Config keys that do not change the experiment: the seed (averaged over) and the engine's runtime keys.
KEYS_OUTSIDE_SETTING = RUNTIME_KEYS | {"seed"}

# Dotted paths every usable result.json must hold (the value may be null only where noted in _check_values).
REQUIRED_FIELDS = (
    "complete", "test_top1_error", "test_top5_error", "seed", "device", "world_size",
    "dataset.name", "dataset.train_size", "dataset.verified",
    "config.model.name", "config.drop.name", "config.curriculum.name", "config.schedule.name",
    "config.trainer.epochs", "config.trainer.batch_size",
)

Setting = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class RunRow:
    """One finished run: what was trained, on which data, its last-epoch test errors (fractions), and where."""

    path: Path
    dataset: str
    train_size: int
    verified: bool
    model: str
    drop: str
    top_rate: float | None
    retain_rate: float | None
    curriculum: str
    schedule: str
    epochs: int
    batch_size: int
    seed: int
    test_top1_error: float
    test_top5_error: float | None
    device: str
    world_size: int
    max_steps_per_epoch: int | None = None
    test_size: int | None = None  # images evaluated (result.json dataset.test_size; the validation split's)
    code_dirty: bool | None = None
    evaluated_on: str = "test"  # "validation": the errors are on images held out of the training files
    source: str | None = None  # the code version (result.json code.source: tree hashes of selectscale/, configs/)
    environment: str | None = None  # torch, torchvision and CPU model, one line (result.json environment)
    setting: Setting = field(default=(), repr=False)
    # From metrics.jsonl beside result.json (None when it is missing or unreadable): the lowest test error of
    # any evaluated epoch (optimistic: chosen on test data), the last epoch's training error, the curve.
    best_test_top1_error: float | None = None
    final_train_top1_error: float | None = None
    test_curve: tuple[tuple[int, float], ...] = field(default=(), repr=False)
    train_curve: tuple[tuple[int, float], ...] = field(default=(), repr=False)  # running error in training mode
    # The evaluation pool (issue 37; result.json eval_pool, None without): the top-1 error (fraction) over the
    # unused training images and the test images, and what the pool was (selection_fraction, split_seed, unused
    # images, test images): only runs with the same pool are compared on it.
    pool_top1_error: float | None = None
    pool: tuple | None = None
    machine: str | None = None  # the machine kind (CPU model, native bf16, Python, torch): a seed block's

    def setting_dict(self) -> dict[str, Any]:
        """The setting as a plain ``{dotted key: value}`` dict."""
        return dict(self.setting)


@dataclass
class Collection:
    """The rows of every usable run, and ``(path, reason)`` for every result.json left out."""

    rows: list[RunRow] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


class UnusableResult(ValueError):
    """A result.json that cannot be a row; the message is the one-line reason."""


def flatten_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``{"a.b.c": value}`` (the engine's :func:`~selectscale.runs.history.flatten`);
    lists become tuples so that every value is hashable."""
    return {key: _hashable(value) for key, value in flatten(config, prefix).items()}


def _hashable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_hashable(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, _hashable(item)) for key, item in value.items()))
    return value


def setting_of(config: dict) -> Setting:
    """The experiment's identity: the flattened config minus :data:`KEYS_OUTSIDE_SETTING` and the loggers (every
    runtime key: runs.history.is_runtime_key), sorted by key."""
    flat = with_added_keys(flatten_config(config))  # a run recorded before a key existed had its old value
    return tuple(sorted((key, value) for key, value in flat.items()
                        if key not in KEYS_OUTSIDE_SETTING and not is_runtime_key(key)))


def _lookup(result: dict, dotted: str) -> tuple[bool, Any]:
    """``(found, value)`` for a dotted path into nested dicts."""
    node: Any = result
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_values(result: dict) -> None:
    """Raise :class:`UnusableResult` naming the fields that are missing or unusable."""
    missing = [name for name in REQUIRED_FIELDS if not _lookup(result, name)[0]]
    if missing:
        raise UnusableResult(f"missing field{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    top1, top5 = result["test_top1_error"], result["test_top5_error"]
    if not _is_number(top1) or not 0.0 <= top1 <= 1.0:
        raise UnusableResult(f"test_top1_error is {top1!r}, not a fraction in [0, 1]")
    if top5 is not None and (not _is_number(top5) or not 0.0 <= top5 <= 1.0):
        raise UnusableResult(f"test_top5_error is {top5!r}, not a fraction in [0, 1] or null")
    for name, lowest in (("seed", 0), ("world_size", 1), ("dataset.train_size", 1), ("config.trainer.epochs", 1),
                         ("config.trainer.batch_size", 1)):
        value = _lookup(result, name)[1]
        if not isinstance(value, int) or isinstance(value, bool) or value < lowest:
            raise UnusableResult(f"{name} is {_short(value)}, not an integer >= {lowest}")
    for name in ("dataset.name", "config.model.name", "config.drop.name", "config.curriculum.name",
                 "config.schedule.name"):
        if not isinstance(_lookup(result, name)[1], str):
            raise UnusableResult(f"{name} is {_short(_lookup(result, name)[1])}, not a name")
    for name in ("config.drop.top_rate", "config.drop.retain_rate"):
        value = _lookup(result, name)[1]
        if value is not None and (not _is_number(value) or not 0.0 <= value <= 1.0):
            raise UnusableResult(f"{name} is {_short(value)}, not a rate in [0, 1] or null")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_result(result: Any) -> None:
    """Raise :class:`UnusableResult` unless ``result`` is a complete schema-1 result with every field."""
    if not isinstance(result, dict):
        raise UnusableResult(f"not a JSON object but a {type(result).__name__}")
    if "schema_version" not in result:
        raise UnusableResult(f"missing field: schema_version (supported: {SCHEMA_VERSION})")
    version = result["schema_version"]
    if version != SCHEMA_VERSION:
        raise UnusableResult(f"schema_version {version!r} found, only {SCHEMA_VERSION} is supported")
    if "complete" in result and result["complete"] is not True:
        epochs = _lookup(result, "config.trainer.epochs")[1]
        done = result.get("epochs_completed")
        raise UnusableResult(f"incomplete run: {done if done is not None else '?'} of "
                             f"{epochs if epochs is not None else '?'} epochs completed")
    _check_values(result)


def environment_line(environment: Any) -> str | None:
    """``torch 2.14.1, torchvision 0.29.1, <CPU model> (native bf16)`` from result.json's environment."""
    if not isinstance(environment, dict):
        return None
    bf16 = " (native bf16)" if environment.get("cpu_native_bf16") else ""
    return (f"torch {environment.get('torch')}, torchvision {environment.get('torchvision')}, "
            f"{environment.get('cpu_model')}{bf16}")


def row_from_result(path: Path, result: Any) -> RunRow:
    """The :class:`RunRow` of one parsed result.json; :class:`UnusableResult` says why it cannot be one."""
    _check_result(result)
    config, data = result["config"], result["dataset"]
    drop, trainer, code = config["drop"], config["trainer"], result.get("code")
    return RunRow(
        path=path, dataset=data["name"], train_size=data["train_size"], verified=data["verified"] is True,
        model=config["model"]["name"], drop=drop["name"], top_rate=drop.get("top_rate"),
        retain_rate=drop.get("retain_rate"), curriculum=config["curriculum"]["name"],
        schedule=config["schedule"]["name"], epochs=trainer["epochs"], batch_size=trainer["batch_size"],
        seed=result["seed"], test_top1_error=float(result["test_top1_error"]),
        test_top5_error=None if result["test_top5_error"] is None else float(result["test_top5_error"]),
        device=str(result["device"]), world_size=result["world_size"],
        max_steps_per_epoch=trainer.get("max_steps_per_epoch"),
        test_size=_count(data.get("test_size")),
        code_dirty=code.get("dirty") if isinstance(code, dict) else None,
        evaluated_on=str(data.get("evaluated_on", "test")),
        source=code.get("source") if isinstance(code, dict) else None,
        environment=environment_line(result.get("environment")),
        setting=setting_of(config),
        **_pool_fields(result.get("eval_pool")), machine=machine_kind(result.get("environment")),
    )


def _pool_fields(pool: Any) -> dict:
    """RunRow's pool_top1_error and pool from result.json's eval_pool (both None when absent or unusable)."""
    if not isinstance(pool, dict) or _fraction(pool.get("top1_error")) is None:
        return {"pool_top1_error": None, "pool": None}
    return {"pool_top1_error": float(pool["top1_error"]),
            "pool": tuple(pool.get(key) for key in ("selection_fraction", "split_seed", "unused_images",
                                                    "test_images"))}


def machine_kind(environment: Any) -> str | None:
    """One line naming what a run's numbers depend on besides the code: CPU model, native bf16, Python, torch."""
    if not isinstance(environment, dict):
        return None
    return (f"{environment.get('cpu_model')}{' (native bf16)' if environment.get('cpu_native_bf16') else ''}, "
            f"Python {environment.get('python')}, torch {environment.get('torch')}")


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _fraction(value: Any) -> float | None:
    return float(value) if _is_number(value) and 0.0 <= value <= 1.0 else None


def with_metrics(row: RunRow, run_dir: Path) -> RunRow:
    """``row`` with its best-epoch test error, final training error and test curve from the run's metrics.jsonl
    (none of them when it is missing, not a regular file or damaged anywhere)."""
    records = read_metrics_lenient(run_dir)
    curve, train = (_curve(records, key) for key in ("test_top1_error", "train_top1_error"))
    final_train = _fraction(records[-1].get("train_top1_error")) if records else None
    return replace(row, best_test_top1_error=min((error for _, error in curve), default=None),
                   final_train_top1_error=final_train, test_curve=curve, train_curve=train)


def _curve(records: list[dict], key: str) -> tuple[tuple[int, float], ...]:
    """(epoch, fraction) of every record with an integer epoch and a valid ``key``."""
    return tuple((record["epoch"], error) for record in records
                 if isinstance(record.get("epoch"), int) and (error := _fraction(record.get(key))) is not None)


def read_row(path: Path) -> RunRow:
    """Read and check one result.json file; :class:`UnusableResult` says why it cannot be a row."""
    try:
        text = read_text(path)  # never through a link, never blocking on a pipe
    except RunDirError as error:
        raise UnusableResult("not a regular file (a link, pipe or folder): not this run's result.json") from error
    except OSError as error:
        raise UnusableResult(f"unreadable: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        raise UnusableResult(f"not UTF-8 text (byte {error.start}): not a result.json") from error
    try:
        result = json.loads(text)
    except json.JSONDecodeError as error:
        raise UnusableResult(f"not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})") from error
    except RecursionError as error:
        raise UnusableResult("nested too deeply to be a result.json") from error
    try:
        row = row_from_result(path, result)
    except (TypeError, KeyError, AttributeError) as error:  # a field of the wrong kind where a mapping belongs
        raise UnusableResult(f"a field has the wrong type ({type(error).__name__}: {_short(str(error))})") from error
    return with_metrics(row, path.parent)


def find_result_files(roots: list[Path]) -> list[Path]:
    """Every ``result.json`` under the roots (searched recursively; a root may be the file itself), sorted."""
    found: set[Path] = set()
    for root in map(Path, roots):
        if root.is_file():
            found.add(root)
        elif root.is_dir():
            found.update(path for path in root.rglob(RESULT_FILE) if path.is_file() or path.is_symlink())
        else:
            raise FileNotFoundError(f"no such file or directory to collect results from: {root}")
    return sorted(found)


def collect(roots: list[Path]) -> Collection:
    """Rows for every usable result.json under ``roots``; the others in ``skipped`` with their reason."""
    collection = Collection()
    for path in find_result_files(roots):
        try:
            collection.rows.append(read_row(path))
        except UnusableResult as reason:
            collection.skipped.append((path, str(reason)))
    return collection
