"""The checkpoint rotation under a kill at each of its steps (issue 32): whatever step a kill interrupts, the newest
finished checkpoint is what loads, ``recover_rotation`` finishes the rotation, and a resumed run continues from the
last finished epoch and ends exactly like an uninterrupted one. A kill is simulated by an exception that nothing
in the code catches (BaseException), raised at the step: the files are left exactly as a SIGKILL there leaves them."""

from __future__ import annotations

import logging
import os

import pytest
from fault_helpers import assert_equals_reference, make_cfg

from selectscale.engine import fit, register_configs
from selectscale.runs import checkpoint as checkpoint_module
from selectscale.runs import files as files_module
from selectscale.runs.checkpoint import (
    MAGIC,
    encode,
    load_checkpoint,
    read_checkpoint_file,
    recover_rotation,
    save_checkpoint,
)
from selectscale.runs.layout import STAGED

register_configs()
STEPS = ("staged-half-written", "staged-written", "latest-moved-to-previous", "staged-renamed")


class Killed(BaseException):  # noqa: N818  (a kill, not an error: nothing may catch it)
    """A kill at a step of the rotation."""


def kill_at(monkeypatch, step: str, save_number: int) -> None:
    """Kill the ``save_number``-th save_checkpoint call (counted from 1) at ``step``."""
    calls = {"save": 0, "replace": 0}
    real_replace, real_synced, real_fsync = os.replace, files_module.write_synced, checkpoint_module.fsync_folder

    def synced(path, data):
        if path.name == STAGED:  # each save writes its staged file first
            calls["save"] += 1
            calls["replace"] = 0
        if calls["save"] == save_number and step == "staged-half-written":
            real_synced(path, data[: len(data) // 2])
            raise Killed(step)
        real_synced(path, data)

    def replace(source, target):
        if calls["save"] == save_number:
            calls["replace"] += 1
            if step == "staged-written" or (step == "latest-moved-to-previous" and calls["replace"] == 2):
                raise Killed(step)
        real_replace(source, target)

    def fsync(folder):
        if calls["save"] == save_number and step == "staged-renamed":
            raise Killed(step)
        real_fsync(folder)

    monkeypatch.setattr(checkpoint_module, "write_synced", synced)
    monkeypatch.setattr(checkpoint_module.os, "replace", replace)
    monkeypatch.setattr(checkpoint_module, "fsync_folder", fsync)


def state(epoch: int) -> dict:
    return {"epoch": epoch, "next_batch": 0, "global_step": 2 * epoch, "model": {}}


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_any_step_of_the_rotation_loads_the_newest_finished_checkpoint(tmp_path, monkeypatch, step):
    save_checkpoint(state(1), tmp_path)
    save_checkpoint(state(2), tmp_path)
    kill_at(monkeypatch, step, save_number=1)
    with pytest.raises(Killed):
        save_checkpoint(state(3), tmp_path)
    monkeypatch.undo()
    newest = 2 if step == "staged-half-written" else 3  # a half-written file never counts
    assert load_checkpoint(tmp_path)["epoch"] == newest
    recover_rotation(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]
    assert read_checkpoint_file(tmp_path / "checkpoint.pt")["epoch"] == newest
    assert read_checkpoint_file(tmp_path / "checkpoint.prev.pt")["epoch"] == newest - 1
    save_checkpoint(state(4), tmp_path)  # and the rotation goes on as usual
    assert [read_checkpoint_file(tmp_path / n)["epoch"] for n in ("checkpoint.pt", "checkpoint.prev.pt")] == [4, newest]


def test_a_checkpoint_verifies_only_whole_and_unchanged(tmp_path):
    data = encode(state(1))
    assert data.startswith(MAGIC)
    for damaged in (data[:-1], data[: len(data) // 2], data[:-10] + bytes(10), MAGIC, b""):
        (tmp_path / "checkpoint.pt").write_bytes(damaged)
        assert read_checkpoint_file(tmp_path / "checkpoint.pt") is None
    (tmp_path / "checkpoint.pt").write_bytes(data)
    assert read_checkpoint_file(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_a_checkpoint_that_is_no_dict_is_skipped_with_a_warning(tmp_path, caplog):
    (tmp_path / "checkpoint.pt").write_bytes(encode([1, 2]))
    with caplog.at_level(logging.WARNING):
        assert load_checkpoint(tmp_path) is None
    assert "not a checkpoint's dict" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_a_run_killed_at_any_step_of_the_rotation_resumes_from_the_last_finished_epoch(
        in_process_reference, tmp_path, monkeypatch, step, caplog):
    """The epoch-2 checkpoint of a 3-epoch run is killed at ``step``; the resumed run starts from epoch 2's
    checkpoint (epoch 1's when epoch 2's was half-written) and equals the uninterrupted run bit for bit."""
    run_dir = tmp_path / "run"
    kill_at(monkeypatch, step, save_number=2)
    with pytest.raises(Killed):
        fit(make_cfg(run_dir))
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="selectscale"):
        fit(make_cfg(run_dir, "trainer.resume=auto"))
    resumed_at = 2 if step == "staged-half-written" else 3
    assert f"at epoch {resumed_at}, batch 0" in caplog.text
    assert_equals_reference(run_dir, in_process_reference)
