"""Train one model: `python train.py model=wrn20_8 drop=selectscale [key=value ...]`, or the same arguments to
`selectscale-train` or `python -m selectscale.train` from any folder once the package is installed.

Hydra composes the package's configs (`selectscale.paths.config_dir()`; see `--help`, `--cfg job` prints the
resolved recipe); `torchrun --nproc_per_node=N train.py ...` trains on N processes. Everything happens in
`selectscale.engine.fit(cfg)`; this module only turns known failures into one-line errors.
"""

import os
import sys
import time
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import selectscale
from selectscale.argv_checks import composition_error, run_dir_error
from selectscale.engine import fit, register_configs
from selectscale.engine.rundir import remove_if_empty, resolve_run_dir
from selectscale.engine.signals import Preempted
from selectscale.failures import KNOWN_FAILURES, SweepRecord, final_summary, report_failure
from selectscale.paths import config_dir

register_configs()
STARTED = time.time()  # folders changed after this (Hydra makes its run folder later) are this process's


SWEEP = SweepRecord()  # a multirun's jobs: one that fails is recorded and the next one still runs


class JobFailed(Exception):  # noqa: N818  (Hydra's launchers catch an Exception per job: the others still run)
    """A multirun job that failed; every launcher (basic, joblib, submitit) records it and goes on."""


def fail_job(cfg: DictConfig, status: int, error: BaseException) -> None:
    """Record a failed multirun job. The basic launcher runs jobs in this process, so the record is enough (the
    summary comes at the end); other launchers (joblib, submitit) run them elsewhere and learn of a failure
    only from an exception, which they record before running the next job."""
    SWEEP.failed(str(resolve_run_dir(cfg)), status, error)
    if "BasicLauncher" not in str(HydraConfig.get().launcher.get("_target_", "")):
        raise JobFailed(str(error)) from None


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    hydra_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    SWEEP.jobs += 1
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
        return fail_job(cfg, status, error)
    except Exception as error:
        if not multirun or isinstance(error, JobFailed):
            raise
        traceback.print_exc()  # an unexpected crash: its traceback, then the sweep goes on
        return fail_job(cfg, 1, error)
    finally:
        if cfg.output_dir is not None or (refused and not multirun):  # drop the empty folders Hydra made
            for folder in (hydra_dir, hydra_dir.parent):  # its run folder, then the date folder above it
                if folder.is_dir() and folder.stat().st_mtime >= STARTED:  # made or changed by this process
                    remove_if_empty(folder)
    SWEEP.succeeded(str(resolve_run_dir(cfg)), result)
    if int(os.environ.get("RANK", "0")) == 0:
        print(final_summary(result, resolve_run_dir(cfg)))


def run() -> int:
    """The command line: checks Hydra would report over many lines first (one line, exit 2), then Hydra."""
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
    try:
        main()
    except SystemExit as hydra_exit:  # Hydra exits 1 after the sweep when a job failed: say which, one line each
        status = SWEEP.finish()
        return status or hydra_exit.code
    return SWEEP.finish()


if __name__ == "__main__":
    sys.exit(run())
