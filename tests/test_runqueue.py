"""The run queue (``make table1 PARALLEL=k``): k jobs at once, failures never stop the others, and a stop signal
ends it cleanly (every job checkpointed or killed and waited for, one line, exit 3)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selectscale import experiments
from selectscale.experiments import SMOKE_OVERRIDES, load_table, main, row_command, run_command, table_jobs
from selectscale.runqueue import STOP_SIGNALS, Failure, Job, QueueStopped, job_environment, run_jobs


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
def test_parallel_table_on_synthetic_data_then_resume_skips_everything(tmp_path, capsys):
    """make table PARALLEL=2 end to end (tiny synthetic runs), then again: every run is found finished by the plan
    and no job starts."""
    table = experiments.select_rows(load_table("mini_cifar10"), "none,selectscale")
    experiments.run_table(table, tmp_path, 2, 1, None, None, SMOKE_OVERRIDES, parallel=2)
    assert len(list(tmp_path.rglob("result.json"))) == 4
    before = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()}
    capsys.readouterr()
    experiments.run_table(table, tmp_path, 2, 1, None, None, SMOKE_OVERRIDES, parallel=2)
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*") if path.is_file()} == before
    assert "0 of 4 runs to train (4 finished)" in capsys.readouterr().out


# --- Stopping the queue (issue 32): SIGTERM / SIGINT / SIGHUP checkpoint the jobs, wait for them, one line, exit 3.

REPO = Path(__file__).resolve().parents[1]
# A job that stands in for train.py: records its pid, process group and session, then waits; SIGTERM -> exit 3
# (the engine's "stopped after a checkpoint"); "stubborn" ignores SIGTERM (only SIGKILL ends it).
SLEEPER = """
import os, pathlib, signal, sys, time
path, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else (lambda signum, frame: sys.exit(3)))
path.parent.mkdir(parents=True, exist_ok=True)
path.with_suffix(".tmp").write_text(f"{os.getpid()} {os.getpgid(0)} {os.getsid(0)}")
os.replace(path.with_suffix(".tmp"), path)
time.sleep(120)
"""
# `experiments run` itself, its train.py jobs replaced by sleepers (the queue, the plan, the stop line are real).
QUEUE_SCRIPT = """
import sys
from pathlib import Path
from selectscale import experiments
from selectscale.runqueue import Job
pids, mode, sleeper = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def sleeper_jobs(table, runs, seeds, epochs, data, extra, snapshots=0, only=None):
    return [Job(f"{table.name}/{label}/seed{seed}", (sys.executable, "-c", sleeper, str(pids / f"{label}-{seed}"),
                mode), runs / "logs" / f"{label}-{seed}.log") for label, seed in sorted(only)]

experiments.table_jobs = sleeper_jobs
sys.exit(experiments.main(sys.argv[4:]))
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def start_queue(tmp_path: Path, mode: str) -> tuple[subprocess.Popen, list[str]]:
    """`experiments run mini_cifar10` on 2 rows x 2 seeds, 2 at a time, in a session of its own (like a terminal's
    foreground job): its jobs are sleepers."""
    script = tmp_path / "stoppable_table.py"  # not queue.py: that name would shadow the standard library's
    script.write_text(QUEUE_SCRIPT)
    args = ["run", "mini_cifar10", "--rows", "none,selectscale", "--seeds", "2", "--parallel", "2", "--runs",
            str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    queue = subprocess.Popen([sys.executable, str(script), str(tmp_path / "pids"), mode, SLEEPER, *args], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return queue, args


def job_pids(tmp_path: Path, queue: subprocess.Popen, count: int) -> list[tuple[int, int, int]]:
    """(pid, process group, session) of the ``count`` jobs that have started."""

    def started() -> bool:
        assert queue.poll() is None, queue.communicate()
        return len(list((tmp_path / "pids").glob("*-?"))) >= count

    wait_for(started)
    return [tuple(map(int, path.read_text().split())) for path in sorted((tmp_path / "pids").glob("*-?"))]


@pytest.fixture
def leftovers(tmp_path):
    """After the test, whatever it started and left alive (a failed assertion) is killed, by pid."""
    queues: list[subprocess.Popen] = []
    yield queues
    for queue in queues:
        if queue.poll() is None:
            os.killpg(queue.pid, signal.SIGKILL)
            queue.wait()
    for path in (tmp_path / "pids").glob("*-?"):
        pid = int(path.read_text().split()[0])
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda signum: signum.name)
def test_a_stop_signal_checkpoints_the_jobs_waits_for_them_and_prints_how_to_go_on(tmp_path, signum, leftovers):
    queue, args = start_queue(tmp_path, "checkpoint")
    leftovers.append(queue)
    jobs = job_pids(tmp_path, queue, 2)
    # every job in a session and process group of its own: a terminal's Ctrl-C reaches the queue only
    assert all(pid == group == session != queue.pid for pid, group, session in jobs)
    os.killpg(queue.pid, signum)  # the whole foreground group, as a terminal sends Ctrl-C
    out, err = queue.communicate(timeout=60)
    assert queue.returncode == 3, err
    assert "Traceback" not in err + out and len(err.strip().splitlines()) == 1, err
    line = err.strip()
    assert line.startswith(f"stopped by {signal.Signals(signum).name}: 2 runs checkpointed, 2 runs not started; "
                           "go on with: "), line
    assert line.endswith(" -m selectscale.experiments " + shlex.join(args)), line
    assert not any(alive(pid) for pid, _, _ in jobs)
    assert len(list((tmp_path / "pids").glob("*-?"))) == 2  # nothing started after the signal
    assert not (tmp_path / "out").exists()  # stopped before the report: nothing rendered


def test_a_second_signal_kills_the_jobs_and_the_queue_still_waits_for_them(tmp_path, leftovers):
    queue, _ = start_queue(tmp_path, "stubborn")  # its jobs ignore SIGTERM
    leftovers.append(queue)
    jobs = job_pids(tmp_path, queue, 2)
    os.kill(queue.pid, signal.SIGTERM)
    time.sleep(1.0)  # the queue has passed the SIGTERM on; the jobs ignore it
    assert all(alive(pid) for pid, _, _ in jobs)
    os.kill(queue.pid, signal.SIGTERM)
    out, err = queue.communicate(timeout=60)
    assert queue.returncode == 3 and "Traceback" not in err + out, err
    assert "2 runs killed" in err and "2 runs not started; go on with:" in err and len(err.strip().splitlines()) == 1
    assert not any(alive(pid) for pid, _, _ in jobs)


def test_the_queue_restores_the_signal_handlers_it_found(tmp_path):
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    failures = run_jobs([python_job(tmp_path, "a", "import os; print(os.getpgid(0) == os.getpid())")], 1, tmp_path,
                        echo=lambda line: None)
    assert failures == [] and (tmp_path / "logs" / "a.log").read_text() == "True\n"  # its own process group
    assert {signum: signal.getsignal(signum) for signum in STOP_SIGNALS} == before


def test_stopped_summary_names_every_kind_of_ending(tmp_path):
    job = python_job(tmp_path, "a", "")
    stopped = QueueStopped("SIGINT", checkpointed=[job], killed=[job, job], not_started=[job, job, job],
                           failures=[Failure(job, 4)])
    assert str(stopped) == ("stopped by SIGINT: 1 run checkpointed, 2 runs killed (resumed from their last checkpoint "
                            "next time), 1 run failed (listed above), 3 runs not started")
    assert stopped.exit_status == 3


@pytest.mark.slow
def test_sigterm_to_a_real_table_checkpoints_its_train_py_jobs_and_the_report_lists_them(tmp_path, leftovers):
    """make table1 PARALLEL=2 stopped for real: both train.py jobs write a checkpoint and exit 3; the report then
    lists both runs as interrupted and renders nothing but that (no run finished)."""
    args = ["run", "mini_cifar10", "--rows", "none", "--seeds", "2", "--parallel", "2", "--epochs", "400", "--runs",
            str(tmp_path / "runs"), "--out", str(tmp_path / "out"), *SMOKE_OVERRIDES]
    queue = subprocess.Popen([sys.executable, "-m", "selectscale.experiments", *args], cwd=REPO, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    leftovers.append(queue)
    runs = tmp_path / "runs" / "mini_cifar10" / "none"
    wait_for(lambda: all((runs / f"seed{seed}" / "metrics.jsonl").is_file() for seed in (0, 1)), timeout=240)
    os.killpg(queue.pid, signal.SIGTERM)
    out, err = queue.communicate(timeout=120)
    assert queue.returncode == 3 and "Traceback" not in err, err
    assert err.strip().startswith("stopped by SIGTERM: 2 runs checkpointed; go on with: "), err
    assert all((runs / f"seed{seed}" / "checkpoint.pt").is_file() for seed in (0, 1))
    report = subprocess.run([sys.executable, "-m", "selectscale.experiments", "report", "mini_cifar10", "--seeds",
                             "2", "--epochs", "400", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert report.returncode == 2 and "no finished runs of mini_cifar10" in report.stderr
    assert "2 interrupted" in report.stderr and not (tmp_path / "out").exists()
