"""The run directory as one concept: its layout and names, the lock, checkpoints and their atomic rotation,
result.json, metrics.jsonl, the config history, and ``load_run`` for every consumer. Every file a run writes or
reads goes through this package (a test checks that no other module names them); it refuses anything in the
directory that is not a regular file of its own.

    layout      names, check_entry / check_entries (links, pipes, folders refused)
    files       write_atomic, append_line, read_bytes / read_text (O_NOFOLLOW, never blocking)
    lock        RunDirLock (flock on .lock), is_locked
    checkpoint  self-verifying checkpoints, the rotation, recover_rotation, snapshots
    result      result.json, the code version and environment
    metrics     metrics.jsonl
    history     keys added after runs were recorded, RUNTIME_KEYS, flatten
    directory   whether a run may start or resume in a folder, config.yaml, train.log
    state       finished / running / interrupted / missing, from the files alone
    load        load_run: config, weights, result, the network rebuilt
"""

from __future__ import annotations

from .layout import CONFIG_FILE, LOCK_FILE, METRICS_FILE, RESULT_FILE, check_entries, check_entry

__all__ = ["CONFIG_FILE", "LOCK_FILE", "METRICS_FILE", "RESULT_FILE", "LoadedRun", "check_entries", "check_entry",
           "load_run"]


def __getattr__(name: str):
    if name in ("load_run", "LoadedRun"):  # imports torch: only when asked for (PEP 562)
        from . import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
