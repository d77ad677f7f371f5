"""Which runs a table needs and what state each is in (selectscale/report/plan.py), and what the table runner and the
report do with them (issue 32): the report lists every expected run and never counts a foreign one; the runner
starts only what is neither finished nor running, and refuses a foreign run directory."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
import yaml
from report_fixtures import make_result, write_run

from selectscale import experiments
from selectscale.experiments import main
from selectscale.report.plan import plan_table, row_expectations
from selectscale.report.specs import load_table, select_rows
from selectscale.report.table_files import report_table

TABLE = select_rows(load_table("mini_cifar10"), "none,selectscale")  # rows: drop=none; selectscale 0.4/0.4
RATES = {"none": (None, None), "selectscale": (0.4, 0.4)}


def result(seed: int, row: str = "none", top1: float = 0.30, **more) -> dict:
    """A complete result.json of ``row`` (mini_cifar10: ResNet-8, 50 epochs) and ``seed``."""
    top, retain = RATES[row]
    return make_result(seed=seed, top1=top1, **{
        "config.model.name": "resnet8", "config.drop.name": row, "config.drop.top_rate": top,
        "config.drop.retain_rate": retain, "config.trainer.epochs": 50, "epochs_completed": 50, **more})


def run_dir(runs: Path, row: str, seed: int) -> Path:
    return runs / "mini_cifar10" / row / f"seed{seed}"


def states(runs: Path, seeds: int, **kwargs) -> dict[str, tuple[str, str]]:
    return {run.name: (run.state, run.reason) for run in plan_table(TABLE, runs, seeds, **kwargs)}


@pytest.fixture
def held_lock():
    """``hold(run_dir)`` takes the run's lock as a training process does; released at the end."""
    fds = []

    def hold(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        fds.append(fd)

    yield hold
    for fd in fds:
        os.close(fd)


@pytest.fixture
def half_finished(tmp_path, held_lock) -> Path:
    """mini_cifar10 (rows none, selectscale) at 4 seeds: 3 finished, 2 foreign, 1 each running, interrupted, missing."""
    runs = tmp_path / "runs"
    write_run(run_dir(runs, "none", 0).parent, "seed0", result(0, top1=0.30))
    write_run(run_dir(runs, "none", 0).parent, "seed1", result(1, top1=0.32))
    write_run(run_dir(runs, "none", 0).parent, "seed2", result(2, "selectscale", top1=0.10))  # another setting
    write_run(run_dir(runs, "none", 0).parent, "seed3", result(1, top1=0.11))  # seed 1's run copied into seed3
    write_run(run_dir(runs, "selectscale", 0).parent, "seed0", result(0, "selectscale", top1=0.28))
    interrupted = run_dir(runs, "selectscale", 1)
    interrupted.mkdir(parents=True)
    (interrupted / "config.yaml").write_text(yaml.safe_dump(result(1, "selectscale")["config"]))
    (interrupted / "checkpoint.pt").write_bytes(b"a checkpoint")
    held_lock(run_dir(runs, "selectscale", 2))
    return runs


def test_every_expected_run_has_a_state_and_a_reason(half_finished):
    assert states(half_finished, 4) == {
        "none/seed0": ("finished", "complete, this row's setting"),
        "none/seed1": ("finished", "complete, this row's setting"),
        "none/seed2": ("foreign", "drop.name is selectscale, the row sets drop=none"),
        "none/seed3": ("foreign", "it is a run of seed 1, not of seed 3"),
        "selectscale/seed0": ("finished", "complete, this row's setting"),
        "selectscale/seed1": ("interrupted", "started, no epoch finished"),
        "selectscale/seed2": ("running", "another process holds its lock"),
        "selectscale/seed3": ("missing", "no run directory"),
    }


def test_the_report_lists_every_run_and_averages_only_finished_runs_of_the_row(half_finished, tmp_path, capsys):
    markdown, latex, summary, *_ = report_table(TABLE, half_finished, tmp_path / "out", 4)
    text = markdown.read_text()
    assert "31.00 ± 1.41 (2)" in text and "28.00 (1)" in text  # none: seeds 0 and 1 only, never the 0.10 or 0.11
    assert "24.00" not in text and "20.75" not in text
    assert "### Runs" in text and "3 of 8 expected runs are counted above" in text
    for cells in ("| none | 2 | foreign | drop.name is selectscale, the row sets drop=none |",
                  "| none | 3 | foreign | it is a run of seed 1, not of seed 3 |",
                  "| selectscale | 1 | interrupted | started, no epoch finished |",
                  "| selectscale | 2 | running | another process holds its lock |",
                  "| selectscale | 3 | missing | no run directory |", "| none | 0 | finished |"):
        assert cells in text, cells
    assert "Not counted: none seed 2: foreign" in latex.read_text()
    assert len(json.loads(summary.read_text())["provenance"]["not_counted"]) == 5
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("mini_cifar10: 3 of 8 expected runs counted; not counted: 1 running, 1 interrupted, 1 missing, "
                      "2 foreign")
    assert len(err) == 6 and all(line.startswith("mini_cifar10/") for line in err[1:])
    assert any("selectscale/seed2: running" in line for line in err)


def test_a_complete_table_renders_as_before_without_a_runs_section(tmp_path, capsys):
    runs = tmp_path / "runs"
    for row in RATES:
        write_run(run_dir(runs, row, 0).parent, "seed0", result(0, row))
    markdown, _, summary, *_ = report_table(TABLE, runs, tmp_path / "out", 1)
    assert "### Runs" not in markdown.read_text() and "not_counted" not in summary.read_text()
    assert capsys.readouterr().err == ""


def test_a_result_outside_the_seeds_asked_for_is_left_out_and_named(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(run_dir(runs, "none", 0).parent, "seed0", result(0))
    write_run(run_dir(runs, "none", 0).parent, "seed5", result(5, top1=0.9))
    markdown = report_table(TABLE, runs, tmp_path / "out", 1)[0].read_text()
    assert "30.00 (1)" in markdown and "seed5/result.json: not one of the 1 runs asked for" in markdown
    assert "left out" in capsys.readouterr().err


def test_another_studys_run_copied_into_a_row_is_foreign_and_a_table_of_only_such_runs_is_refused(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(run_dir(runs, "none", 0).parent, "seed0", result(0, **{"config.model.name": "wrn20_8"}))
    assert states(runs, 1)["none/seed0"] == ("foreign", "model.name is wrn20_8, the row sets model=resnet8")
    assert main(["report", "mini_cifar10", "--seeds", "1", "--runs", str(runs), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err  # nothing of this table started here: one line (a started one lists every run)
    assert err.count("\n") == 1 and "no finished runs of mini_cifar10" in err and "1 foreign" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("setup, state, reason", [
    ("link", "foreign", "a symbolic link in place of the run directory"),
    ("file", "foreign", "a file in place of the run directory"),
    ("under-file", "foreign", "is a file where a folder of runs goes"),
    ("lock-link", "foreign", "is a symbolic link"),
    ("lock-pipe", "foreign", "is a named pipe"),
    ("checkpoint", "interrupted", "started"),
    ("staged", "interrupted", "started"),
    ("incomplete", "interrupted", "stopped after epoch 7"),
    ("other-config", "foreign", "drop.name is selectscale, the row sets drop=none"),
    ("schema-2", "foreign", "result.json is unusable: schema_version 2 found"),
    ("empty", "missing", "no run files"),
    ("stale-lock", "missing", "no run files"),  # a lock file nobody holds (its holder was killed)
])
def test_run_directory_states(tmp_path, setup, state, reason):
    runs = tmp_path / "runs"
    folder = run_dir(runs, "none", 0)
    folder.parent.mkdir(parents=True)
    if setup == "link":
        (tmp_path / "elsewhere").mkdir()
        folder.symlink_to(tmp_path / "elsewhere")
    elif setup == "file":
        folder.write_text("not a folder")
    elif setup == "under-file":
        folder.parent.rmdir()
        folder.parent.write_text("a file where the row's folder goes")
    else:
        folder.mkdir()
    files = {"checkpoint": "checkpoint.pt", "staged": ".checkpoint.staged.pt", "stale-lock": ".lock"}
    if setup in files:
        (folder / files[setup]).write_bytes(b"x")
    if setup == "lock-link":
        (folder / ".lock").symlink_to(tmp_path / "another-runs-lock")
    if setup == "lock-pipe":
        os.mkfifo(folder / ".lock")  # must not block the report
    if setup == "incomplete":
        (folder / "result.json").write_text(json.dumps(result(0, complete=False, epochs_completed=7)))
    if setup == "other-config":
        (folder / "config.yaml").write_text(yaml.safe_dump(result(0, "selectscale")["config"]))
    if setup == "schema-2":
        (folder / "result.json").write_text(json.dumps(result(0, schema_version=2)))
    found_state, found_reason = states(runs, 1)["none/seed0"]
    assert found_state == state and reason in found_reason, found_reason


def test_a_row_is_checked_on_its_overrides_only():
    table3 = {row.label: row for row in load_table("table3").rows}
    expected = {item.key: item.value for item in row_expectations(table3["cos600-cd-dropout"])}
    assert expected == {"dataset.name": "cifar10", "model.name": "resnext29_8x64d", "drop.name": "dropout",
                        "schedule.name": "cosine", "curriculum.name": "linear", "drop.retain_rate": 0.9}
    step = {item.key: item.value for item in row_expectations(table3["step200-none"], strict_epochs=True)}
    assert step["schedule.name"] == "step" and step["trainer.epochs"] == 200.0  # step_cifar's name; the runner's
    shortened = {item.key: item.value for item in row_expectations(table3["step200-none"], epochs=20)}
    assert shortened["trainer.epochs"] == 20.0
    extra = {item.key for item in row_expectations(table3["cos600-cd-dropout"], extra=["dataset=synthetic",
                                                                                         "+drop.retain_rate=0.5"])}
    assert "dataset.name" not in extra and "drop.retain_rate" not in extra and "model.name" in extra


def test_the_report_checks_the_epochs_only_when_given(tmp_path):
    runs = tmp_path / "runs"
    write_run(run_dir(runs, "none", 0).parent, "seed0", result(0, **{"config.trainer.epochs": 20}))
    assert states(runs, 1)["none/seed0"][0] == "finished"  # a shortened run: flagged in the table, not foreign
    assert states(runs, 1, epochs=20)["none/seed0"][0] == "finished"
    assert states(runs, 1, epochs=30)["none/seed0"] == ("foreign", "trainer.epochs is 20, the row sets --epochs 30")
    assert states(runs, 1, strict_epochs=True)["none/seed0"] == (
        "foreign", "trainer.epochs is 20, the row sets trainer.epochs=50")


# --- The table runner: one place (the plan) decides what the queue starts.

@pytest.fixture
def started(monkeypatch):
    """The jobs (and parallelism) each run_jobs call got, instead of running them."""
    calls = []

    def fake_run_jobs(jobs, parallel, cwd, echo):
        calls.append(([job.name for job in jobs], parallel, [job.command for job in jobs], [job.log for job in jobs]))
        return []

    monkeypatch.setattr(experiments, "run_jobs", fake_run_jobs)
    return calls


def test_the_queue_starts_only_runs_that_are_neither_finished_nor_running(tmp_path, held_lock, started, capsys):
    runs = tmp_path / "runs"
    write_run(run_dir(runs, "none", 0).parent, "seed0", result(0))
    run_dir(runs, "none", 1).mkdir(parents=True)
    (run_dir(runs, "none", 1) / "checkpoint.pt").write_bytes(b"x")
    held_lock(run_dir(runs, "selectscale", 0))
    experiments.run_table(TABLE, runs, 2, None, None, None, [])
    assert [(names, parallel) for names, parallel, _, _ in started] == [
        (["mini_cifar10/none/seed1", "mini_cifar10/selectscale/seed1"], 1)]  # --parallel defaults to 1
    out = capsys.readouterr().out
    assert "selectscale/seed0: running in another process" in out and "2 of 4 runs to train" in out


def test_a_foreign_run_directory_refuses_the_table_and_nothing_starts(tmp_path, started, capsys):
    runs = tmp_path / "runs"
    write_run(run_dir(runs, "selectscale", 1).parent, "seed1", result(1))  # a no-drop run in a SelectScale row
    argv = ["run", "mini_cifar10", "--rows", "none,selectscale", "--seeds", "2", "--runs", str(runs)]
    assert main(argv) == 2 and started == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {run_dir(runs, 'selectscale', 1).resolve()} is not a run" in err
    assert "drop.name is none, the row sets drop=selectscale" in err and "nothing was started" in err


def test_a_launcher_runs_one_hydra_multirun_per_unfinished_row(tmp_path, started):
    runs = tmp_path / "runs"
    write_run(run_dir(runs, "none", 0).parent, "seed0", result(0))
    experiments.run_table(TABLE, runs, 1, None, None, "joblib", [])
    ((names, parallel, commands, logs),) = started
    assert names == ["mini_cifar10/selectscale"] and parallel == 1 and logs == [None]  # the terminal: a cluster's
    assert "-m" in commands[0] and "hydra/launcher=joblib" in commands[0] and "seed=0" in commands[0]


# --- Bad --out / --runs: one line before anything runs, exit 2.

@pytest.mark.parametrize("action", ["run", "report"])
@pytest.mark.parametrize("option, where, message", [
    ("--out", "file", "is a file, not a folder"),
    ("--out", "file/sub", "lies under"),
    ("--runs", "file", "is a file, not a folder"),
    ("--runs", "file/sub", "lies under"),
])
def test_a_bad_out_or_runs_folder_is_refused_before_anything_runs(tmp_path, started, capsys, action, option, where,
                                                                   message):
    (tmp_path / "file").write_text("keep me")
    folders = {"--out": tmp_path / "out", "--runs": tmp_path / "runs", option: tmp_path / where}
    argv = [action, "mini_cifar10", "--seeds", "1", "--runs", str(folders["--runs"]), "--out", str(folders["--out"])]
    assert main(argv) == 2 and started == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {option} {tmp_path / where}: ") and message in err
    assert f"choose another {option}" in err and "Traceback" not in err
    assert (tmp_path / "file").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("action", ["run", "report"])
def test_a_read_only_out_folder_is_refused(tmp_path, monkeypatch, started, capsys, action):
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    real_access = os.access  # answer as for a user other than root, for whom permissions do not bite
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != out and real_access(path, mode))
    assert main([action, "mini_cifar10", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 2 and started == []
    err = capsys.readouterr().err
    assert err == f"error: --out {out}: {out} is not writable (read-only); choose another --out (a folder, created " \
        f"if missing); nothing was {'started' if action == 'run' else 'written'}\n"


@pytest.mark.slow
def test_a_table_stopped_at_random_moments_finishes_every_run_exactly_once(tmp_path):
    """Issue 32's 'done when': a table (2 rows x 2 seeds, 3 one-step epochs, 2 at a time) SIGTERMed at seeded random
    moments and run again until it finishes: after each stop the report names every run not finished, row by row;
    at the end every run is complete, with each epoch exactly once in metrics.jsonl and no duplicate folder."""
    import random
    import signal
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[1]
    runs, out = tmp_path / "runs", tmp_path / "out"
    common = ["mini_cifar10", "--rows", "none,selectscale", "--seeds", "2", "--epochs", "3", "--runs", str(runs)]
    command = [sys.executable, "-m", "selectscale.experiments", "run", *common, "--parallel", "2",
               *experiments.SMOKE_OVERRIDES]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    rng, stops = random.Random(32), 0
    for round_number in range(3):  # two rounds stopped at random moments, then one left to finish
        queue = subprocess.Popen(command, cwd=repo, env=env, text=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, start_new_session=True)
        if round_number < 2:
            time.sleep(rng.uniform(3.0, 12.0))
            if queue.poll() is None:
                os.killpg(queue.pid, signal.SIGTERM)
        out_text, err = queue.communicate(timeout=240)
        assert "Traceback" not in err, err
        if queue.returncode == 0:
            break
        if queue.returncode == -signal.SIGTERM:  # stopped while Python was still starting: before any job
            assert "[start]" not in out_text, out_text
            continue
        assert queue.returncode == 3 and "go on with: " in err, err
        stops += 1
        plan = plan_table(select_rows(load_table("mini_cifar10"), "none,selectscale"), runs, 2, epochs=3)
        unfinished = [run.name for run in plan if run.state != "finished"]
        report = subprocess.run([sys.executable, "-m", "selectscale.experiments", "report", "mini_cifar10", "--seeds",
                                 "2", "--epochs", "3", "--runs", str(runs), "--out", str(out)],  # every row listed
                                cwd=repo, env=env, capture_output=True, text=True, timeout=120)
        assert "Traceback" not in report.stderr, report.stderr
        if all(run.state == "missing" for run in plan):  # stopped before any run wrote a file: one line says so
            assert "no finished runs of mini_cifar10" in report.stderr, report.stderr
        else:
            assert all(name in report.stderr for name in unfinished), (unfinished, report.stderr)
    else:
        raise AssertionError("the table did not finish when left to run")
    assert stops >= 1, "no round was stopped: the test proved nothing"
    folders = sorted(p.parent.relative_to(runs) for p in runs.rglob("config.yaml"))
    assert [str(f) for f in folders] == [f"mini_cifar10/{row}/seed{s}" for row in ("none", "selectscale")
                                         for s in (0, 1)]
    for folder in folders:
        result = json.loads((runs / folder / "result.json").read_text())
        epochs = [json.loads(line)["epoch"] for line in (runs / folder / "metrics.jsonl").read_text().splitlines()]
        assert result["complete"] is True and epochs == [1, 2, 3], (folder, epochs)
