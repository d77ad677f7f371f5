"""Hostile input to a run directory, as an attacker or an unlucky user would give it (issue 32): links, pipes and
folders where a run keeps its files, checkpoints and configs of other runs, damaged and foreign files. Every case
runs the real command in this process and asserts its exit status, ONE line on stderr without a traceback, and
that every file of the runs folder (this run's and the other run's) is byte for byte unchanged."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
import torch
from hostile_helpers import TINY, assert_one_line, evaluate_cli, figures_cli, picture, train_cli

from selectscale.engine import steps as engine_steps
from selectscale.runs.checkpoint import MAGIC, encode, read_checkpoint_file

FILES = ("config.yaml", "result.json", "metrics.jsonl", "train.log", ".lock", "checkpoint.pt", "checkpoint.prev.pt",
         ".checkpoint.staged.pt")
FOLDERS = ("tensorboard",)


def _train(run_dir: Path, *overrides: str) -> None:
    status, err = train_cli(*TINY, f"output_dir={run_dir}", *overrides)
    assert status == 0, err


def _interrupted(run_dir: Path) -> None:
    """A 2-epoch run stopped by SIGTERM in its third step (epoch 2): checkpoints of epoch 1 and mid-epoch 2."""
    patch, calls = pytest.MonkeyPatch(), {"n": 0}
    original = engine_steps._train_step

    def step_then_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    patch.setattr(engine_steps, "_train_step", step_then_signal)
    try:
        status, err = train_cli(*TINY, f"output_dir={run_dir}", "trainer.epochs=2")
    finally:
        patch.undo()
    assert status == 3 and (run_dir / "checkpoint.prev.pt").is_file(), err


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> Path:
    """finished (1 epoch, SelectScale), other (1 epoch, SpatialDropout: another run), wide (another network),
    classes (another class count), interrupted (stopped in epoch 2 of 2)."""
    root = tmp_path_factory.mktemp("templates")
    _train(root / "finished", "trainer.epochs=1")
    _train(root / "other", "trainer.epochs=1", "drop=spatial_dropout")
    _train(root / "wide", "trainer.epochs=1", "model=resnet20")
    _train(root / "classes", "trainer.epochs=1", "dataset.num_classes=5")
    _interrupted(root / "interrupted")
    for name in (".lock", ".checkpoint.staged.pt"):  # files the other run has no copy of: a target for links
        (root / "other" / name).write_text("the other run's file\n")
    return root


def _copy(templates: Path, tmp_path: Path, *names: str) -> Path:
    runs = tmp_path / "runs"
    for name in names:
        shutil.copytree(templates / name, runs / name, symlinks=True)
    return runs


def _replace(path: Path, kind: str, target: Path) -> None:
    """Put a link to ``target``, a named pipe or a folder (with a file in it) where ``path`` is."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if kind == "link":
        path.symlink_to(target)
    elif kind == "pipe":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
        (path / "inside").write_text("x")
    else:
        path.write_text("a file where a folder goes\n")


def _refused(runs: Path, command, *fragments: str, status: int = 2) -> None:
    before = picture(runs)
    got, err = command()
    assert got == status, err
    assert_one_line(err, *fragments)
    assert picture(runs) == before, "a file of the runs folder changed"


# --- 1. links, pipes, folders where a resumed run keeps its files --------------------------------------------

@pytest.mark.parametrize("kind", ["link", "pipe", "folder"])
@pytest.mark.parametrize("name", FILES)
def test_resume_refuses_a_foreign_entry_where_a_run_file_goes(templates, tmp_path, name, kind):
    runs = _copy(templates, tmp_path, "interrupted", "other")
    run_dir = runs / "interrupted"
    _replace(run_dir / name, kind, runs / "other" / name)
    word = {"link": "symbolic link", "pipe": "named pipe", "folder": "folder"}[kind]
    _refused(runs, lambda: train_cli(*TINY, f"output_dir={run_dir}", "trainer.epochs=2", "trainer.resume=auto"),
             f"{run_dir / name} is a {word}", "move it away")


@pytest.mark.parametrize("kind", ["link", "pipe", "file"])
@pytest.mark.parametrize("name", FOLDERS)
def test_resume_refuses_a_foreign_entry_where_a_run_folder_goes(templates, tmp_path, name, kind):
    runs = _copy(templates, tmp_path, "interrupted", "other")
    run_dir = runs / "interrupted"
    _replace(run_dir / name, kind, runs / "other" / name)
    _refused(runs, lambda: train_cli(*TINY, f"output_dir={run_dir}", "trainer.epochs=2", "trainer.resume=auto"),
             f"{run_dir / name} is a", "own folder", "move it away")


@pytest.mark.parametrize("name", ["metrics.jsonl", "train.log", ".lock"])
def test_a_new_run_refuses_a_link_to_another_runs_file(templates, tmp_path, name):
    """A folder holding only a link (no run yet): a new run would append to, or lock, the other run's file."""
    runs = _copy(templates, tmp_path, "other")
    run_dir = runs / "new"
    run_dir.mkdir()
    (run_dir / name).symlink_to(runs / "other" / name)
    _refused(runs, lambda: train_cli(*TINY, f"output_dir={run_dir}", "trainer.epochs=1"),
             f"{run_dir / name} is a symbolic link")


# --- 2. checkpoints, results and configs of other runs, damaged files ----------------------------------------

def _other_checkpoint(templates: Path, source: str, drop_config: bool = False) -> bytes:
    state = read_checkpoint_file(templates / source / "checkpoint.pt")
    if drop_config:
        del state["config"]
    return encode(state)


@pytest.mark.parametrize("source, fragment", [("other", "drop.name=spatial_dropout"), ("wide", "model.name=resnet20"),
                                              ("classes", "dataset.num_classes=5")])
def test_evaluate_refuses_a_checkpoint_of_another_run(templates, tmp_path, source, fragment):
    runs = _copy(templates, tmp_path, "finished")
    (runs / "finished" / "checkpoint.pt").write_bytes(_other_checkpoint(templates, source))
    _refused(runs, lambda: evaluate_cli(str(runs / "finished")), "belongs to another run", fragment)


@pytest.mark.parametrize("source", ["wide", "classes"])
def test_evaluate_refuses_foreign_weights_without_carried_settings(templates, tmp_path, source):
    """A checkpoint that carries no settings (an older version's) but another network's weights: one line."""
    runs = _copy(templates, tmp_path, "finished")
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (runs / "finished" / name).write_bytes(_other_checkpoint(templates, source, drop_config=True))
    _refused(runs, lambda: evaluate_cli(str(runs / "finished")), "does not fit the network", "another run")


def test_figures_refuse_a_checkpoint_of_another_run(templates, tmp_path):
    runs = _copy(templates, tmp_path, "finished")
    (runs / "finished" / "checkpoint.pt").write_bytes(_other_checkpoint(templates, "other"))
    out = tmp_path / "out"
    _refused(runs, lambda: figures_cli("fig3", str(runs / "finished"), "--out", str(out)), "belongs to another run")
    assert not out.exists()


def test_resume_refuses_a_checkpoint_of_another_run(templates, tmp_path):
    runs = _copy(templates, tmp_path, "interrupted")
    run_dir = runs / "interrupted"
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run_dir / name).write_bytes(_other_checkpoint(templates, "other"))
    _refused(runs, lambda: train_cli(*TINY, f"output_dir={run_dir}", "trainer.epochs=2", "trainer.resume=auto"),
             "differs from the one saved in", "drop.name")


def _write(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    path.write_bytes(data)


EVALUATE_CASES = {
    "checkpoint-holds-a-list": ("checkpoint.pt", MAGIC + b"", "holds no valid checkpoint"),
    "config-not-yaml": ("config.yaml", b"model: [unclosed\n  : :\n", "config.yaml is unreadable"),
    "config-a-list": ("config.yaml", b"- 1\n- 2\n", "holds no settings"),
    "config-not-utf8": ("config.yaml", b"model:\n  name: \xff\xfe\n", "config.yaml is unreadable"),
    "config-empty": ("config.yaml", b"", "holds no settings"),
}


@pytest.mark.parametrize("case", sorted(EVALUATE_CASES))
def test_evaluate_refuses_damaged_run_files_in_one_line(templates, tmp_path, case):
    name, data, fragment = EVALUATE_CASES[case]
    runs = _copy(templates, tmp_path, "finished")
    run_dir = runs / "finished"
    if case == "checkpoint-holds-a-list":
        data = encode([1, 2, 3])  # verifies, but is no checkpoint
        _write(run_dir / "checkpoint.prev.pt", data)
    _write(run_dir / name, data)
    _refused(runs, lambda: evaluate_cli(str(run_dir)), fragment)


@pytest.mark.parametrize("name", ["config.yaml", "checkpoint.pt", "result.json"])
@pytest.mark.parametrize("kind", ["pipe", "link"])
def test_evaluate_never_opens_a_pipe_or_follows_a_link(templates, tmp_path, name, kind):
    """A named pipe would block a reader forever; a link would read another run's file as this run's."""
    runs = _copy(templates, tmp_path, "finished", "other")
    run_dir = runs / "finished"
    _replace(run_dir / name, kind, runs / "other" / name)
    _refused(runs, lambda: evaluate_cli(str(run_dir)), f"{run_dir / name} is a")


@pytest.mark.parametrize("where", ["a-file", "missing"])
def test_evaluate_on_something_that_is_no_run_directory(tmp_path, where):
    runs = tmp_path / "runs"
    runs.mkdir()
    target = runs / "x"
    if where == "a-file":
        target.write_text("not a run\n")
    _refused(runs, lambda: evaluate_cli(str(target)), str(target))


def test_resume_refuses_a_result_json_that_is_not_utf8(templates, tmp_path):
    runs = _copy(templates, tmp_path, "interrupted")
    run_dir = runs / "interrupted"
    _write(run_dir / "result.json", b"{\"complete\": \xff}")
    _refused(runs, lambda: train_cli(*TINY, f"output_dir={run_dir}", "trainer.epochs=2", "trainer.resume=auto"),
             "result.json is unreadable")


def test_an_earlier_versions_checkpoint_with_a_non_utf8_checksum_is_skipped_not_a_crash(templates, tmp_path):
    """An earlier version's checkpoint (sidecar format) whose .sha256 is garbage bytes: it does not verify, the run
    resumes from the previous checkpoint instead, and finishes."""
    runs = _copy(templates, tmp_path, "interrupted")
    run_dir = runs / "interrupted"
    state = read_checkpoint_file(run_dir / "checkpoint.pt")
    torch.save(state, run_dir / "checkpoint.pt")  # the old format: a plain torch file plus a sidecar
    (run_dir / "checkpoint.pt.sha256").write_bytes(b"\xff\xfe\x00garbage")
    status, err = train_cli(*TINY, f"output_dir={run_dir}", "trainer.epochs=2", "trainer.resume=auto")
    assert status == 0 and "Traceback" not in err, err
