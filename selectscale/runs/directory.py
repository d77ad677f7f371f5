"""The run directory: where it is, whether a run may start there, and what it records first.

Rules (nothing existing is ever overwritten by a refused start):
- a directory with a complete run refuses a new run; with ``trainer.resume=auto`` the run is simply
  reported as complete;
- a directory with checkpoints of an unfinished run refuses unless ``trainer.resume=auto``;
- resuming compares the saved config with the new one and refuses when a setting that changes the
  result differs (the message lists the keys).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from selectscale.errors import ForeignRunError, RunDirError

from .checkpoint import has_checkpoint_files, recover_rotation
from .files import read_text, remove_temporaries, write_atomic
from .history import flatten, is_runtime_key, with_added_keys
from .layout import CONFIG_FILE, LOG_FILE, RESULT_FILE, SNAPSHOTS, check_entries, check_entry
from .result import read_result

log = logging.getLogger("selectscale")
# What a resumable checkpoint holds (Trainer.save); "config" is optional (older checkpoints lack it).
CHECKPOINT_KEYS = ("model", "optimizer", "epoch", "next_batch", "global_step", "wall_time", "world_size", "cpu_rng",
                   "partial", "cuda_rng")


def resolve_run_dir(cfg: DictConfig) -> Path:
    if cfg.output_dir is not None:
        return Path(cfg.output_dir)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def differing_settings(saved: DictConfig, current: DictConfig) -> list[tuple[str, object, object]]:
    """(key, saved value, current value) for every key that differs and matters for the result."""
    old = with_added_keys(flatten(OmegaConf.to_container(saved, resolve=True)))  # saved before a key existed
    new = with_added_keys(flatten(OmegaConf.to_container(current, resolve=True)))
    return [(k, old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and not is_runtime_key(k)]


def config_differences(saved: DictConfig, current: DictConfig) -> list[str]:
    """``key=new (saved: old)`` for every key whose value differs and matters for the result."""
    return [f"{key}={new} (saved: {old})" for key, old, new in differing_settings(saved, current)]


def check_run_dir(run_dir: Path, cfg: DictConfig) -> str:
    """Decide how to start: ``"new"``, ``"resume"`` or ``"complete"``; raise RunDirError to refuse."""
    check_entries(run_dir)  # a link, pipe or folder where a file goes: refused before anything is opened
    result = _read_result_or_refuse(run_dir)
    resuming = cfg.trainer.resume == "auto"
    if result is not None and result.get("complete"):
        if not resuming:
            raise RunDirError(f"run directory {run_dir} already holds a complete run: choose another directory "
                              "(hydra.run.dir=... or output_dir=...); nothing was changed")
        _check_same_config(run_dir, cfg)
        return "complete"
    if has_checkpoint_files(run_dir) or (run_dir / CONFIG_FILE).exists():
        if not resuming:
            raise RunDirError(f"run directory {run_dir} holds an unfinished run: continue it with "
                              "trainer.resume=auto, or choose another directory; nothing was changed")
        _check_same_config(run_dir, cfg)
        return "resume"
    _refuse_nested(run_dir)
    return "new"


def enclosing_run(path: Path) -> Path | None:
    """The run directory that ``path`` lies inside (a folder above it with config.yaml and a result or
    checkpoint), or None."""
    for parent in Path(path).absolute().parents:
        if (parent / CONFIG_FILE).is_file() and ((parent / RESULT_FILE).is_file() or has_checkpoint_files(parent)):
            return parent
    return None


def _refuse_nested(run_dir: Path) -> None:
    """A new run inside another run's directory would mix its files into that run's: refuse it."""
    parent = enclosing_run(run_dir)
    if parent is not None:
        raise RunDirError(f"run directory {run_dir} is inside the run directory {parent}: choose a directory "
                          "outside it; nothing was changed")


def _read_result_or_refuse(run_dir: Path) -> dict | None:
    try:
        return read_result(run_dir)
    except RunDirError:
        raise
    except (ValueError, OSError) as error:
        raise RunDirError(f"{run_dir / RESULT_FILE} is unreadable ({error}); move it away or choose another "
                          "directory; nothing was changed") from error


def load_saved_config(saved_path: Path) -> DictConfig | None:
    """The config saved in ``saved_path`` (None if there is none); ConfigError if it is not a YAML mapping."""
    check_entry(saved_path)
    try:
        saved = OmegaConf.create(read_text(saved_path))
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001  (YAML parse errors, undecodable bytes, unreadable)
        raise RunDirError(f"{saved_path} is unreadable ({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
                          "restore it or move the run directory away; nothing was changed") from error
    if not isinstance(saved, DictConfig) or len(saved) == 0:
        raise RunDirError(f"{saved_path} holds no settings (a YAML mapping was expected); restore it or move the "
                          "run directory away; nothing was changed")
    return saved


def _refuse_differences(saved: DictConfig, cfg: DictConfig, where: Path) -> None:
    differences = config_differences(saved, cfg)
    if differences:
        shown = ", ".join(differences[:6]) + (" ..." if len(differences) > 6 else "")
        raise ForeignRunError(f"trainer.resume=auto: the config differs from the one saved in {where} in {shown}; "
                          "resume with the same settings or start a new run directory")


def _check_same_config(run_dir: Path, cfg: DictConfig) -> None:
    saved = load_saved_config(run_dir / CONFIG_FILE)
    if saved is not None:
        _refuse_differences(saved, cfg, run_dir / CONFIG_FILE)


def check_checkpoint_settings(run_dir: Path, state: dict, cfg: DictConfig) -> None:
    """Resume only with the settings the checkpoint was trained with: those it carries (checked even when
    config.yaml is gone), or config.yaml's; refuse when neither records them."""
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise ForeignRunError(f"the checkpoint in {run_dir} lacks {', '.join(missing)}: it was not written by this "
                          "trainer (or is damaged); move it away or start a new run directory")
    carried = state.get("config")
    if isinstance(carried, str):
        _refuse_differences(OmegaConf.create(carried), cfg, run_dir / "its checkpoint")
    elif not (run_dir / CONFIG_FILE).exists():
        raise ForeignRunError(f"trainer.resume=auto: {run_dir} has a checkpoint but no {CONFIG_FILE}, and the "
                              "checkpoint predates carrying its settings, so nothing shows what it was trained with; "
                              f"restore {CONFIG_FILE} or start a new run directory")


def load_weights(run_dir: Path, model, optimizer, state: dict) -> None:
    """Load a checkpoint's model and optimizer state; ForeignRunError (one line) if it belongs to another model."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise ForeignRunError(f"the checkpoint in {run_dir} does not fit this model and optimizer ({first}); it was "
                          "written by another setting: start a new run directory") from error


def check_writable(run_dir: Path) -> None:
    """Create the directory if needed and prove a file can be written in it; RunDirError if not."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise RunDirError(f"run directory {run_dir} is not writable ({error.strerror or error}): choose another "
                          "with hydra.run.dir=... or output_dir=...") from error


@contextlib.contextmanager
def held_log_records():
    """Keep the records logged inside the block (e.g. "checkpoint ... is damaged" while resuming, before
    train.log may be written) so that :func:`prepare` can write them into train.log afterwards."""
    holder = _RecordHolder()
    logger = logging.getLogger("selectscale")
    logger.addHandler(holder)
    try:
        yield holder.records
    finally:
        logger.removeHandler(holder)


class _RecordHolder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def prepare(run_dir: Path, cfg: DictConfig, early_records: list[logging.LogRecord] = ()) -> logging.Handler:
    """Save the resolved config (once), clear what a killed process left, and log to train.log (starting
    with ``early_records``, logged before the run directory could be written). Call with the lock held.

    Returns the log handler: the caller removes it when the run ends (a multirun trains many runs in
    one process, and each train.log must hold only its own run's lines)."""
    removed = remove_temporaries(run_dir) + remove_temporaries(run_dir / SNAPSHOTS)
    if removed:
        log.info("removed %d temporary file(s) of an interrupted write in %s", len(removed), run_dir)
    check_entry(run_dir / CONFIG_FILE)
    if not (run_dir / CONFIG_FILE).exists():
        write_atomic(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    handler = logging.StreamHandler(open_log(run_dir))
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
    for record in early_records:
        handler.handle(record)
    logging.getLogger("selectscale").addHandler(handler)
    return handler


def open_log(run_dir: Path):
    """train.log opened for appending (never through a link: refused by :func:`check_entry` and O_NOFOLLOW)."""
    path = run_dir / LOG_FILE
    check_entry(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "a", buffering=1)


def recover(run_dir: Path) -> None:
    """With the lock held, before resuming: finish a checkpoint rotation that a kill interrupted."""
    recover_rotation(run_dir)


def release_log(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger("selectscale").removeHandler(handler)
        handler.close()
        if isinstance(handler, logging.StreamHandler) and not handler.stream.closed:
            handler.stream.close()


def remove_if_empty(run_dir: Path) -> None:
    """Remove a run directory that holds nothing (rmdir cannot delete anything else)."""
    try:
        run_dir.rmdir()
    except OSError:
        pass
