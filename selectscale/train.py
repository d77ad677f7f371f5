"""Train one model: `python train.py model=wrn20_8 drop=selectscale [key=value ...]`, or the same arguments to
`selectscale-train` or `python -m selectscale.train` from any folder once the package is installed.

Hydra composes the package's configs (`selectscale.paths.config_dir()`; see `--help`, `--cfg job` prints the
resolved recipe); `torchrun --nproc_per_node=N train.py ...` trains on N processes. Everything happens in
`selectscale.engine.fit(cfg)`; this module only turns known failures into one-line errors.
"""

import contextlib
import os
import shutil
import stat
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig

import selectscale
from selectscale.argv_checks import composition_error, is_multirun, run_dir_error
from selectscale.engine import fit, register_configs
from selectscale.engine.signals import Preempted
from selectscale.errors import one_line
from selectscale.failures import KNOWN_FAILURES, SweepRecord, final_summary, report_failure
from selectscale.paths import config_dir
from selectscale.runs.directory import remove_if_empty, resolve_run_dir

register_configs()
STARTED = time.time()  # folders changed after this (Hydra makes its run folder later) are this process's


SWEEP = SweepRecord()  # a multirun's jobs: one that fails is recorded and the next one still runs
# A multirun's jobs that run in other processes (joblib's workers) leave their records in this folder (a fresh
# temporary one, made by run() and removed after the sweep), named in the environment they inherit.
RECORDS_ENV = "SELECTSCALE_SWEEP_RECORDS"


class JobFailed(CompactHydraException):  # noqa: N818  (Hydra's launchers catch an Exception per job: the others run)
    """A multirun job that failed, raised only where the job cannot hand its record over (a launcher that runs
    jobs on other machines: submitit on SLURM); that launcher records it and goes on. A CompactHydraException:
    Hydra reports it without a traceback."""


def runs_here() -> bool:
    """Whether this multirun job runs in the process that launched the sweep (Hydra's basic launcher)."""
    return "BasicLauncher" in str(HydraConfig.get().launcher.get("_target_", ""))


def fail_job(cfg: DictConfig, record: SweepRecord, status: int, error: BaseException) -> None:
    """Record a failed multirun job; the sweep goes on. The basic launcher runs jobs in this process, so the
    record is enough (the summary comes at the end). Joblib runs them in worker processes on this machine: the
    job hands its record over (see RECORDS_ENV) and returns normally, so joblib neither stops nor prints a
    traceback. A launcher whose jobs cannot reach that folder (submitit) learns of a failure only from an
    exception, which it records before running the next job."""
    record.failed(str(resolve_run_dir(cfg)), status, error)
    if record is not SWEEP and not record.hand_over(os.environ.get(RECORDS_ENV), job_name()):
        raise JobFailed(one_line(error)) from None


def job_name() -> str:
    return f"job{HydraConfig.get().job.get('num', 0):06d}"


def remove_own_empty_folders(folders: Iterable[Path]) -> None:
    """Remove each of ``folders`` (Hydra's run folder, then the date folder above it) that this process made or
    changed (modified since it started) and that is empty. Two jobs of one queue share the date folder, and the
    other may remove it, or make its own run folder in it, at any moment: a folder that has vanished is skipped,
    one that was filled meanwhile stays (rmdir removes only an empty folder), so this never fails (issue 32's
    race: a FileNotFoundError on ``folder.stat()`` failed a healthy job)."""
    for folder in folders:
        try:
            info = folder.stat()
        except OSError:  # removed meanwhile (FileNotFoundError), or never made
            continue
        if stat.S_ISDIR(info.st_mode) and info.st_mtime >= STARTED:  # made or changed by this process
            with contextlib.suppress(OSError):  # removed or filled since the stat
                remove_if_empty(folder)


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    record = SWEEP if not multirun or runs_here() else SweepRecord()  # a worker's record: this job's only
    record.jobs += 1
    refused = False
    try:
        result = fit(cfg)
    except Preempted as error:  # the whole process is being stopped: the sweep ends here, resumably
        sys.exit(report_failure(error))
    except KNOWN_FAILURES as error:
        remove_if_empty(resolve_run_dir(cfg))  # Hydra created it before the run was refused
        refused, status = True, report_failure(error)
        if not multirun:
            sys.exit(status)
        return fail_job(cfg, record, status, error)
    except Exception as error:
        if not multirun or isinstance(error, JobFailed):
            raise
        traceback.print_exc()  # an unexpected crash: its traceback, then the sweep goes on
        return fail_job(cfg, record, 1, error)
    finally:
        if cfg.output_dir is not None or (refused and not multirun):  # drop the empty folders Hydra made
            remove_own_empty_folders((hydra_dir, hydra_dir.parent))
    record.succeeded(str(resolve_run_dir(cfg)), result)
    if record is not SWEEP:
        record.hand_over(os.environ.get(RECORDS_ENV), job_name())
    if int(os.environ.get("RANK", "0")) == 0:
        print(final_summary(result, resolve_run_dir(cfg)))


@contextlib.contextmanager
def job_records(multirun: bool) -> Iterator[str | None]:
    """For a multirun, a fresh temporary folder where jobs run by other processes leave their records (named in
    RECORDS_ENV, which they inherit), removed afterwards; None otherwise."""
    if not multirun:
        os.environ.pop(RECORDS_ENV, None)  # a record folder inherited from another sweep is not this run's
        yield None
        return
    folder = tempfile.mkdtemp(prefix="selectscale-sweep-")
    previous = os.environ.get(RECORDS_ENV)
    os.environ[RECORDS_ENV] = folder
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if previous is None:
            os.environ.pop(RECORDS_ENV, None)
        else:
            os.environ[RECORDS_ENV] = previous


def run() -> int:
    """The command line: checks Hydra would report over many lines first (one line, exit 2), then Hydra."""
    global SWEEP
    SWEEP = SweepRecord()  # this command's jobs only (run() may be called more than once in a process: tests)
    if "--version" in sys.argv[1:]:
        print(f"selectscale {selectscale.__version__}")
        return 0
    configs = config_dir()
    problem = run_dir_error(sys.argv[1:], configs) or composition_error(sys.argv[1:], configs)
    if problem:  # Hydra's own report of this is several lines with exit status 1
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if "--cfg" in sys.argv and "--resolve" not in sys.argv:
        sys.argv.append("--resolve")  # print the recipe with every value worked out
    with job_records(is_multirun(sys.argv[1:])) as records:
        try:
            main()
        except SystemExit as hydra_exit:  # Hydra exits 1 after the sweep when a job failed: say which, one line each
            SWEEP.take_over(records)
            status = SWEEP.finish()
            return status or hydra_exit.code
        SWEEP.take_over(records)
        return SWEEP.finish()


if __name__ == "__main__":
    sys.exit(run())
