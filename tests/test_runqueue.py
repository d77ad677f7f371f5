"""The parallel run queue (``make table1 PARALLEL=k``): k jobs at once, failures never stop the others."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from selectscale import experiments
from selectscale.experiments import SMOKE_OVERRIDES, load_table, main, row_command, run_command, table_jobs
from selectscale.runqueue import Failure, Job, job_environment, run_jobs


def python_job(tmp_path: Path, name: str, code: str) -> Job:
    return Job(name, (sys.executable, "-c", code), tmp_path / "logs" / f"{name}.log")


def test_k_jobs_run_at_once_and_a_failure_stops_nothing(tmp_path):
    # a waits (up to 60 s) for a file that b writes: a finishes in time only if b ran while a was running.
    flag = tmp_path / "b-started"
    wait = (f"import pathlib, time, sys\nfor _ in range(600):\n    if pathlib.Path({str(flag)!r}).exists(): "
            "print('saw b'); sys.exit(0)\n    time.sleep(0.1)\nsys.exit(9)")
    jobs = [python_job(tmp_path, "a", wait), python_job(tmp_path, "bad", "import sys; sys.exit(4)"),
            python_job(tmp_path, "b", f"import pathlib; pathlib.Path({str(flag)!r}).touch(); print('b ran')"),
            python_job(tmp_path, "c", "print('c ran')")]
    lines: list[str] = []
    failures = run_jobs(jobs, 2, tmp_path, echo=lines.append)
    assert [failure.job.name for failure in failures] == ["bad"] and failures[0].returncode == 4
    assert "bad: exit 4 (log:" in failures[0].line()
    logs = {name: (tmp_path / "logs" / f"{name}.log").read_text() for name in "abc"}
    assert logs == {"a": "saw b\n", "b": "b ran\n", "c": "c ran\n"}  # two at once, and every other job ran
    assert sum(line.startswith("[start]") for line in lines) == 4


def test_jobs_run_one_at_a_time_with_k_1(tmp_path):
    stamp = "import time; print(time.time()); time.sleep(0.3); print(time.time())"
    run_jobs([python_job(tmp_path, name, stamp) for name in "ab"], 1, tmp_path, echo=lambda line: None)
    a, b = ([float(v) for v in (tmp_path / "logs" / f"{n}.log").read_text().split()] for n in "ab")
    assert b[0] >= a[1]


def test_threads_are_split_unless_the_caller_set_them(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert job_environment(4, {})["OMP_NUM_THREADS"] == "4"
    assert job_environment(32, {})["OMP_NUM_THREADS"] == "1"
    assert job_environment(4, {"OMP_NUM_THREADS": "7"})["OMP_NUM_THREADS"] == "7"
    with pytest.raises(ValueError, match="parallel=0"):
        run_jobs([], 0, Path("."))


def test_table_jobs_cover_rows_times_seeds_seed_by_seed(tmp_path):
    table = load_table("table1")
    jobs = table_jobs(table, tmp_path, 2, 10, "/data", ["x=1"])
    assert len(jobs) == 2 * len(table.rows)
    assert [job.name for job in jobs[:2]] == ["table1/resnet110-none/seed0", "table1/resnet110-dropout/seed0"]
    assert jobs[len(table.rows)].name.endswith("seed1")
    command = list(jobs[0].command)[3:]  # after `python -m selectscale.train`
    assert "-m" not in command and "seed=0" in command
    assert f"output_dir={tmp_path}/table1/resnet110-none/seed0" in command
    # The same training overrides, in the same order, as the per-row multirun: each path resumes the other's runs.
    multirun = row_command(table.rows[0], tmp_path, 2, 10, "/data", None, ["x=1"])[3:]
    keep = [part for part in multirun if not part.startswith(("seed=", "hydra.sweep", "-m"))]
    assert [part for part in command if not part.startswith(("seed=", "output_dir="))] == keep
    assert run_command(table.rows[0], tmp_path / "r", 3, None, None, [])[-1] == "trainer.resume=auto"


@pytest.mark.parametrize("argv, message", [
    (["run", "table1", "--parallel", "0"], "--parallel=0 needs a number >= 1"),
    (["run", "table1", "--parallel", "2", "--launcher", "joblib"], "no --launcher"),
])
def test_bad_parallel_options_are_refused(argv, message, capsys, tmp_path):
    assert main([*argv, "--runs", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_a_failed_run_is_reported_after_the_others_finished(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_run_jobs(jobs, parallel, cwd, echo):
        calls.append((len(jobs), parallel))
        return [Failure(jobs[1], 4)]

    monkeypatch.setattr(experiments, "run_jobs", fake_run_jobs)
    table = experiments.select_rows(load_table("mini_cifar10"), "none,selectscale")
    with pytest.raises(experiments.ExperimentError, match="1 of 4 runs of mini_cifar10 failed"):
        experiments.run_table(table, tmp_path, 2, 1, None, None, [], parallel=2)
    assert calls == [(4, 2)] and "failed: mini_cifar10/selectscale/seed0: exit 4" in capsys.readouterr().err


@pytest.mark.slow
def test_parallel_table_on_synthetic_data_then_resume_skips_everything(tmp_path):
    """make table PARALLEL=2 end to end (tiny synthetic runs), then again: every run is found complete."""
    table = experiments.select_rows(load_table("mini_cifar10"), "none,selectscale")
    experiments.run_table(table, tmp_path, 2, 1, None, None, SMOKE_OVERRIDES, parallel=2)
    assert len(list(tmp_path.rglob("result.json"))) == 4
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("result.json")}
    experiments.run_table(table, tmp_path, 2, 1, None, None, SMOKE_OVERRIDES, parallel=2)
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("result.json")} == before
    assert "already holds a complete run; nothing to do" in (
        tmp_path / "mini_cifar10" / "logs" / "none-seed0.log").read_text()
