"""The cluster path (issue 33): Slurm's task variables as torchrun's, the bounded polling of job states, the launcher
preset, and (slow) runs against a real one-node Slurm (the ``slurm_cluster`` fixture, scripts/slurm_local.py):
a sweep, preemption and time-limit requeues, one 2-process DDP run from Slurm tasks, a table through the launcher
with a cancelled job, and two torchrun "nodes" on localhost. Every training is tiny (synthetic data, ResNet-8,
CPU), since a background job and CI share the 2 cores."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

import pytest
import tomllib
import torch

from selectscale.engine import distributed
from selectscale.engine.distributed import first_host, slurm_launch, world_size_from_env
from selectscale.errors import ConfigError
from selectscale.runs.checkpoint import read_checkpoint_file

REPO = Path(__file__).resolve().parents[1]
PRESET = REPO / "configs" / "hydra" / "launcher" / "submitit_slurm_requeue.yaml"
TINY = ["dataset=synthetic", "dataset.train_size=32", "dataset.test_size=16", "trainer.batch_size=16", "model=resnet8",
        "trainer.device=cpu", "trainer.progress_bar=false", "trainer.deterministic=true", "trainer.channels_last=false"]
# a run long enough to be interrupted after its second epoch (about 8 s of training on one core)
LONG = [*TINY, "trainer.epochs=100", "seed=0"]
# the launcher preset as the README gives it, sized for the test cluster; states polled every 2 s at most
LAUNCHER = ["hydra/launcher=submitit_slurm_requeue", "hydra.launcher.timeout_min=5", "hydra.launcher.partition=debug",
            "hydra.callbacks.slurm_polling.poll_s=2"]
TIMING = ("images_per_second", "seconds")
SLURM_TASK = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2",
              "SLURM_LOCALID": "1", "SLURM_JOB_ID": "4321", "SLURM_STEP_NODELIST": "gpu[007-008]",
              "SLURM_JOB_NODELIST": "gpu[007-008]"}


# --- Slurm's task variables (no Slurm needed) -------------------------------------------------------------------

def test_srun_task_variables_become_torchruns():
    assert slurm_launch(SLURM_TASK) == {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu007",
                                        "MASTER_PORT": str(15000 + 4321 % 15000)}
    assert world_size_from_env(SLURM_TASK) == 2
    # the step's own count wins over the job's (a 2-task step of a 4-task job is a 2-process run)
    assert slurm_launch({**SLURM_TASK, "SLURM_NTASKS": "4"})["WORLD_SIZE"] == "2"
    assert slurm_launch({**SLURM_TASK, "MASTER_ADDR": "head", "MASTER_PORT": "29500"})["MASTER_ADDR"] == "head"
    assert slurm_launch({**SLURM_TASK, "MASTER_PORT": "29500"})["MASTER_PORT"] == "29500"
    # the same job id always gives the same port, so every task of the step meets at one address
    assert slurm_launch({**SLURM_TASK, "SLURM_PROCID": "0"})["MASTER_PORT"] == slurm_launch(SLURM_TASK)["MASTER_PORT"]


def test_torchrun_and_the_batch_script_are_not_slurm_tasks():
    assert slurm_launch({**SLURM_TASK, "RANK": "0", "WORLD_SIZE": "4"}) is None  # torchrun inside a Slurm job
    assert world_size_from_env({**SLURM_TASK, "RANK": "0", "WORLD_SIZE": "4"}) == 4
    batch_script = {k: v for k, v in SLURM_TASK.items() if not k.startswith("SLURM_STEP")}  # sbatch --ntasks=2
    assert slurm_launch(batch_script) is None and world_size_from_env(batch_script) == 1
    assert slurm_launch({**SLURM_TASK, "SLURM_STEP_NUM_TASKS": "1"}) is None  # one task: one process
    assert world_size_from_env({}) == 1


def test_a_broken_slurm_task_variable_is_one_line():
    with pytest.raises(ConfigError, match="SLURM_PROCID='x' is not a number"):
        slurm_launch({**SLURM_TASK, "SLURM_PROCID": "x"})


@pytest.mark.parametrize(("nodelist", "host"), [("vm", "vm"), ("gpu[003-005,010],cpu1", "gpu003"),
                                                ("rack1-[3-4]", "rack1-3"), ("n01,n02", "n01"), ("a[1-2]b[7]", "a1b7")])
def test_first_host_of_a_slurm_node_list(nodelist, host):
    assert first_host(nodelist) == host


def test_setup_exports_slurms_task_as_torchruns_variables(monkeypatch):
    """A one-process world cannot rendezvous here, so setup() is stopped at init_process_group: what matters is
    that it was called for a 2-process world with torchrun's variables in the environment (env://)."""
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")  # recorded, so that what setup() exports is removed afterwards
        monkeypatch.delenv(name)
    for name, value in SLURM_TASK.items():
        monkeypatch.setenv(name, value)
    seen = {}

    def fake_init(backend, timeout):
        seen.update(backend=backend, **{k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR")})
        raise RuntimeError("stop here")

    monkeypatch.setattr(distributed.dist, "init_process_group", fake_init)
    with pytest.raises(RuntimeError, match="stop here"):
        distributed.setup("cpu", 60)
    assert seen == {"backend": "gloo", "RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "gpu007"}


# --- the launcher preset and the bounded polling (no Slurm needed) ------------------------------------------------

def test_the_preset_requeues_at_the_time_limit_with_the_documented_signal_delay():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir

    from selectscale.engine import register_configs
    from selectscale.paths import config_dir

    register_configs()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=submitit_slurm_requeue", "hydra.launcher.timeout_min=600"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.timeout_min == 600
    assert launcher.max_num_timeout >= 1  # the plugin's default 0 ends a run for good at its first time limit
    assert cfg.hydra.callbacks.slurm_polling._target_ == "selectscale.engine.slurm_polling.BoundedSlurmPolling"
    delay = f"USR2@{launcher.signal_delay_s}"
    for doc in ("README.md", "docs/reliability.md"):
        text = (REPO / doc).read_text()
        assert delay in text, f"{doc} does not state the preset's signal ({delay})"
        other = rf"USR2@(?!{launcher.signal_delay_s}\b)\d+"
        assert not re.search(other, text), f"{doc} names another delay"


def test_the_wheel_carries_every_config_file():
    """pyproject's package-data globs of selectscale.configs cover every YAML file under configs/ (the launcher
    preset lives two folders down, in configs/hydra/launcher/)."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for path in (REPO / "configs").rglob("*.yaml"):
        relative = path.relative_to(REPO / "configs")
        package = ".".join(("selectscale.configs", *relative.parts[:1])) if len(relative.parts) == 2 else None
        patterns = [("", glob) for glob in setuptools["package-data"]["selectscale.configs"]]
        if package in setuptools["package-data"]:
            patterns += [(relative.parts[0] + "/", glob) for glob in setuptools["package-data"][package]]
        assert any(fnmatch(str(relative), prefix + glob) and len(Path(prefix + glob).parts) == len(relative.parts)
                   for prefix, glob in patterns), f"{relative} not packaged"  # fnmatch's * also matches a /


def _fake_slurm_commands(folder: Path, sacct: str, squeue: str) -> None:
    folder.mkdir(exist_ok=True)
    for name, body in (("sacct", sacct), ("squeue", squeue)):
        script = folder / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)


def test_without_accounting_job_states_come_from_squeue(tmp_path, monkeypatch):
    """sacct fails (no accounting): submitit's own watcher keeps a job UNKNOWN for ever; ours asks squeue, and a
    job squeue no longer lists has ended."""
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import SlurmInfoWatcher

    from selectscale.engine.slurm_polling import bounded_watcher

    bin_dir = tmp_path / "bin"
    listing = tmp_path / "listing"
    _fake_slurm_commands(bin_dir, "echo 'accounting storage is disabled' >&2; exit 1", f"cat {listing}")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    listing.write_text("41_0|RUNNING\n41_1|COMPLETING\n42|CONFIGURING\n")
    plain, ours = SlurmInfoWatcher(delay_s=600), bounded_watcher(poll_s=2, unanswered_s=60)
    for watcher in (plain, ours):
        for job in ("41_0", "41_1", "42"):
            watcher.register_job(job)
        watcher.update()
    assert [ours.get_state(job, mode="cache") for job in ("41_0", "41_1", "42")] == ["RUNNING", "COMPLETING",
                                                                                    "RUNNING"]
    assert not any(ours.is_done(job, mode="cache") for job in ("41_0", "41_1", "42"))
    listing.write_text("41_0|CANCELLED\n")  # 41_1 and 42 are gone from the controller's memory
    plain.update()
    ours.update()
    assert [ours.get_state(job, mode="cache") for job in ("41_0", "41_1", "42")] == ["CANCELLED", "ENDED", "ENDED"]
    assert all(ours.is_done(job, mode="cache") for job in ("41_0", "41_1", "42"))
    assert not any(plain.is_done(job, mode="cache") for job in ("41_0", "41_1", "42"))  # submitit's: for ever
    assert ours._delay_s == 2


def test_polling_ends_with_one_line_when_slurm_never_answers(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    from selectscale.engine.slurm_polling import SlurmUnreachable, bounded_watcher

    bin_dir = tmp_path / "bin"
    _fake_slurm_commands(bin_dir, "exit 1", "exit 1")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    watcher = bounded_watcher(poll_s=1, unanswered_s=1)
    watcher.register_job("77_3")
    watcher.update()  # the first silence starts the clock
    time.sleep(1.1)
    with pytest.raises(SlurmUnreachable, match=r"neither sacct nor squeue answered for \d+ s: .*77_3") as caught:
        watcher.update()
    assert "\n" not in str(caught.value) and caught.value.exit_status == 2


def test_the_polling_callback_checks_its_settings():
    from selectscale.engine.slurm_polling import BoundedSlurmPolling
    from selectscale.errors import SelectScaleError

    with pytest.raises(SelectScaleError, match="poll_s=0"):
        BoundedSlurmPolling(poll_s=0)


# --- against a real Slurm (slow) ----------------------------------------------------------------------------------

def clean_env(extra: dict | None = None) -> dict[str, str]:
    """This environment without any launcher's variables (pytest itself may run inside a Slurm job), one thread."""
    launched = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "SUBMITIT_EXECUTOR")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))
           and k not in launched}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(extra or {})}


def train_command(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "train.py"), *args]


def start(command: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"{process.args[:6]} still running after {timeout} s\n{err[-3000:]}")
    return process.returncode, out, err


def metrics(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Bit-identical metrics (timings aside) and final weights."""
    assert metrics(run_dir) == metrics(reference)
    ours, theirs = (read_checkpoint_file(path / "checkpoint.pt")["model"] for path in (run_dir, reference))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in ours)


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"ended (exit {process.returncode}) before {what}\n{err[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(poll)


def epochs_done(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def assert_requeued_and_resumed(run_dir: Path, sweep_dir: Path) -> None:
    """The job ran again as a requeued one (its output: fit's line) and resumed the run after its first epochs."""
    job_output = "".join(path.read_text() for path in sweep_dir.glob(".submitit/*/*_0_log.out"))
    assert "requeued SLURM job (SLURM_RESTART_COUNT=1): resuming" in job_output, job_output[-3000:]
    resumed = re.findall(r"resumed .* at epoch (\d+), batch (\d+)", (run_dir / "train.log").read_text())
    assert len(resumed) >= 1 and int(resumed[0][0]) > 2, resumed


def submitit_task(folder: Path) -> int | None:
    """The PID of the job's training process: ``python -u -m submitit.core._submit FOLDER/<job id>`` (not srun's)."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if (len(argv) > 4 and Path(argv[0]).name.startswith("python")
                and argv[1:4] == ["-u", "-m", "submitit.core._submit"] and argv[4].startswith(str(folder))):
            return int(proc.name)
    return None


def process_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict ({} once the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def stopped(pid: int) -> bool:
    return process_status(pid).get("State", "").startswith("T")


def warned(pid: int) -> bool:
    """Whether Slurm's warning signal reached the paused process ``pid``: it is pending there, or the process runs
    again (slurmstepd sends SIGCONT with it), or has ended."""
    status = process_status(pid)
    if not status or not status.get("State", "").startswith("T"):
        return True
    usr2 = 1 << (signal.SIGUSR2 - 1)
    return any(int(status.get(mask, "0"), 16) & usr2 for mask in ("SigPnd", "ShdPnd"))


def only_job(cluster) -> str:
    """The id of the one job in the test cluster (the Slurm tests run one at a time on it)."""
    ids = cluster.run("squeue", "--noheader", "--array", "--format=%i").stdout.split()
    return ids[0] if len(ids) == 1 else ""


def job_state(cluster, job: str) -> str:
    done = cluster.run("squeue", "--noheader", "--states=all", "--format=%T", "--jobs", job, check=False)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory) -> Path:
    """LONG trained locally, uninterrupted: what a requeued Slurm run must end with, bit for bit."""
    folder = tmp_path_factory.mktemp("reference")
    done = subprocess.run(train_command(*LONG, f"output_dir={folder / 'run'}"), cwd=folder, env=clean_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "run"


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_a_sweep_on_slurm_matches_the_same_sweep_run_locally(slurm_cluster, tmp_path):
    sweep = [*TINY, "trainer.epochs=2", "seed=0,1", "hydra.sweep.subdir=seed${seed}"]
    on_slurm = start(train_command("-m", *sweep, *LAUNCHER, f"hydra.sweep.dir={tmp_path / 'slurm'}"), tmp_path,
                     slurm_cluster.env(clean_env()))
    local = subprocess.run(train_command("-m", *sweep, f"hydra.sweep.dir={tmp_path / 'local'}"), cwd=tmp_path,
                           env=clean_env(), capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr[-3000:]
    status, _, err = finish(on_slurm)
    assert status == 0, err[-3000:]
    for seed in (0, 1):
        result = json.loads((tmp_path / "slurm" / f"seed{seed}" / "result.json").read_text())
        assert result["complete"] and result["seed"] == seed and result["world_size"] == 1
        assert_same_run(tmp_path / "slurm" / f"seed{seed}", tmp_path / "local" / f"seed{seed}")


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_a_requeued_job_resumes_exactly(slurm_cluster, tmp_path, long_reference):
    """Preemption as Slurm does it (``scontrol requeue``: SIGTERM, the job back in the queue): the run checkpoints,
    the requeued job resumes its own directory, and ends with the uninterrupted run's metrics and weights."""
    run_dir = tmp_path / "sweep" / "seed0"
    process = start(train_command("-m", *LONG, *LAUNCHER, f"hydra.sweep.dir={tmp_path / 'sweep'}",
                                  "hydra.sweep.subdir=seed${seed}"), tmp_path, slurm_cluster.env(clean_env()))
    wait_for(lambda: epochs_done(run_dir) >= 2, 180, "second epoch", process)
    job = wait_for(lambda: only_job(slurm_cluster), 30, "job in squeue")
    slurm_cluster.run("scontrol", "requeue", job)
    status, _, err = finish(process)
    assert status == 0, err[-3000:]
    assert_requeued_and_resumed(run_dir, tmp_path / "sweep")
    assert_same_run(run_dir, long_reference)


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_the_time_limit_warning_requeues_and_the_run_resumes_exactly(slurm_cluster, tmp_path, long_reference):
    """The README's command (the preset, timeout_min) at its time limit: Slurm's warning signal (USR2, the preset's
    signal_delay_s before the limit) checkpoints the run, submitit counts a timeout and requeues (the plugin's
    default max_num_timeout=0 ends the run for good here), the job resumes and ends as the uninterrupted run.
    To reach the warning in seconds, not minutes, the running job's limit is cut to 2 minutes, inside the 120 s
    warning window; slurmctld then signals at its next time-limit check (every 30 s), so the training process is
    paused (SIGSTOP) until the signal is pending, then goes on and handles it. Once the job is requeued its limit
    goes back to 5 minutes."""
    run_dir = tmp_path / "sweep" / "seed0"
    process = start(train_command("-m", *LONG, *LAUNCHER, f"hydra.sweep.dir={tmp_path / 'sweep'}",
                                  "hydra.sweep.subdir=seed${seed}"), tmp_path, slurm_cluster.env(clean_env()))
    wait_for(lambda: epochs_done(run_dir) >= 2, 180, "second epoch", process)
    job = wait_for(lambda: only_job(slurm_cluster), 30, "job in squeue")
    task = wait_for(lambda: submitit_task(tmp_path / "sweep" / ".submitit"), 30, "the job's training process")
    os.kill(task, signal.SIGSTOP)
    try:
        wait_for(lambda: stopped(task), 10, "the training process paused")
        slurm_cluster.run("scontrol", "update", f"JobId={job}", "TimeLimit=2")
        wait_for(lambda: warned(task), 90, "Slurm's warning signal", process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(task, signal.SIGCONT)
    wait_for(lambda: job_state(slurm_cluster, job) not in ("RUNNING", ""), 60, "requeue after the warning", process,
             poll=0.1)
    slurm_cluster.run("scontrol", "update", f"JobId={job}", "TimeLimit=5")
    status, _, err = finish(process)
    assert status == 0, err[-3000:]
    assert_requeued_and_resumed(run_dir, tmp_path / "sweep")
    assert epochs_done(run_dir) == 100
    assert_same_run(run_dir, long_reference)


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_slurm_tasks_train_one_ddp_run(slurm_cluster, tmp_path):
    """``tasks_per_node=2`` and ``srun -n 2`` each train ONE 2-process run (gloo) in one directory, equal to
    ``torchrun --nproc_per_node=2``: rank, world size and the rendezvous come from Slurm's variables."""
    common = [*TINY, "trainer.epochs=2", "seed=0"]
    env = slurm_cluster.env(clean_env())
    launched = start(train_command("-m", *common, *LAUNCHER, "hydra.launcher.tasks_per_node=2",
                                   f"hydra.sweep.dir={tmp_path / 'launcher'}", "hydra.sweep.subdir=seed${seed}"),
                     tmp_path, env)
    srun = start(["srun", "--ntasks=2", *train_command(*common, f"output_dir={tmp_path / 'srun'}")], tmp_path, env)
    torchrun = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(REPO / "train.py"), *common, f"output_dir={tmp_path / 'torchrun'}"], cwd=tmp_path,
                              env=clean_env(), capture_output=True, text=True, timeout=300)
    assert torchrun.returncode == 0, torchrun.stderr[-3000:]
    for process in (launched, srun):
        status, out, err = finish(process)
        assert status == 0, err[-3000:]
    assert out.count("final test error") == 1  # srun's two tasks: rank 0 alone reports
    assert sorted(p.name for p in (tmp_path / "launcher").iterdir() if not p.name.startswith(".")) == [
        "multirun.yaml", "seed0"]
    for run_dir in (tmp_path / "launcher" / "seed0", tmp_path / "srun"):
        result = json.loads((run_dir / "result.json").read_text())
        assert result["world_size"] == 2 and result["complete"]
        assert len((run_dir / "train.log").read_text().split("epoch   1/2")) == 2  # one writer
        assert_same_run(run_dir, tmp_path / "torchrun")


@pytest.mark.slow
@pytest.mark.xdist_group("slurm")
def test_a_table_through_slurm_reports_a_cancelled_job_and_picks_it_up(slurm_cluster, tmp_path):
    """``make table1 LAUNCHER=submitit_slurm_requeue`` at smoke size (two rows, 1 seed, 16 images, one step an
    epoch; 10 epochs, so that the first row's job is killed while it trains): a job killed with ``scancel`` is
    noticed without accounting (squeue), its row is reported, and the same command again resumes it from its
    checkpoint; the other row is kept."""
    from selectscale.experiments import SMOKE_OVERRIDES

    rows = "resnet110-none,resnet110-selectscale"
    command = [sys.executable, "-m", "selectscale.experiments", "run", "table1", "--launcher",
               "submitit_slurm_requeue", "--seeds", "1", "--epochs", "10", "--rows", rows, "--runs",
               str(tmp_path / "runs"), *SMOKE_OVERRIDES, "hydra.callbacks.slurm_polling.poll_s=2"]
    killed = tmp_path / "runs" / "table1" / "resnet110-none" / "seed0"
    env = slurm_cluster.env(clean_env())
    first = start(command, tmp_path, env)
    wait_for(lambda: epochs_done(killed) >= 1, 180, "first row's first epoch", first, poll=0.1)
    slurm_cluster.run("scancel", wait_for(lambda: only_job(slurm_cluster), 30, "first row's job"))
    status, out, err = finish(first)
    assert status == 2, err[-3000:]
    assert "sacct failed" in out  # no accounting on the test cluster: states come from squeue
    assert "rows resnet110-none (exit 1) had failed runs" in err and "run the same target again" in err
    assert 1 <= epochs_done(killed) < 10
    kept = tmp_path / "runs" / "table1" / "resnet110-selectscale" / "seed0" / "result.json"
    assert json.loads(kept.read_text())["complete"]
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 of 2 rows to run" in again.stdout
    assert re.search(r"resumed .* at epoch [2-9]", (killed / "train.log").read_text())
    for row in rows.split(","):
        result = tmp_path / "runs" / "table1" / row / "seed0" / "result.json"
        assert json.loads(result.read_text())["complete"]


# --- several nodes without Slurm (slow) -----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_on_localhost_train_the_run_of_one_node_with_two_processes(tmp_path):
    """The README's multi-node command on localhost: two torchrun launchers (--nnodes=2, one process each, c10d
    rendezvous) train one run, bit-identical to ``torchrun --nproc_per_node=2`` on one node."""
    common = [*TINY, "trainer.epochs=2", "seed=0"]
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [start([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
                    "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv_id=issue33",
                    str(REPO / "train.py"), *common, f"output_dir={tmp_path / 'two_nodes'}"], tmp_path, clean_env())
             for rank in (0, 1)]
    one_node = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               str(REPO / "train.py"), *common, f"output_dir={tmp_path / 'one_node'}"], cwd=tmp_path,
                              env=clean_env(), capture_output=True, text=True, timeout=300)
    assert one_node.returncode == 0, one_node.stderr[-3000:]
    for node in nodes:
        status, _, err = finish(node)
        assert status == 0, err[-3000:]
    assert json.loads((tmp_path / "two_nodes" / "result.json").read_text())["world_size"] == 2
    assert_same_run(tmp_path / "two_nodes", tmp_path / "one_node")
