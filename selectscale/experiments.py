"""Run and report the paper's tables and sweeps: ``python -m selectscale.experiments {run,report,smoke} NAME``
(``selectscale-experiments`` once installed), and ``compare RUN_DIR...``.

A table (or Figure 4's sweep) is a file ``configs/paper/NAME.yaml``: a title, the paper's epochs, the
overrides common to every row, and one row per cell (its ``train.py`` overrides and the paper's value); a
sweep's ``sweeps`` expand into one row per value. Its runs live in ``RUNS/NAME/<row>/seed<k>/``, and one place,
:mod:`selectscale.report.plan`, says which runs it needs and what state each is in (finished, running,
interrupted, missing, foreign). ``run`` trains the ones neither finished nor running elsewhere through the run
queue (:mod:`selectscale.runqueue`), ``--parallel`` (default 1) at a time, each a resumable ``train.py``
(``trainer.resume=auto``); ``--launcher joblib`` or ``submitit_slurm`` instead runs one Hydra multirun per row
(clusters). A foreign run directory (another setting or seed) refuses the table, never trained over. SIGTERM,
SIGINT or SIGHUP stop the queue at its jobs' next checkpoints: one line says how to go on, exit status 3.
``report`` renders ``results/NAME.md`` and ``.tex`` (and a sweep's ``NAME.png``) from the finished runs of
each row only, listing every run that is not (and why) in the file and on stderr, flagging missing seeds,
shortened schedules and unofficial data, and never averaging different settings; its files are written all
or none. ``smoke`` runs a table end to end on tiny synthetic data. ``compare RUN_DIR...`` puts any runs side
by side (``selectscale.report.compare``). Bad input: one line on stderr, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path

import selectscale
from selectscale.errors import SelectScaleError, one_line
from selectscale.report.plan import PlannedRun, plan_table, state_counts
from selectscale.report.specs import (  # the specs, loaded in the report layer (fig4 and the report read them)
    NAMES,
    ExperimentError,
    Row,
    Table,
    load_table,
    select_rows,
)
from selectscale.report.table_files import report_table
from selectscale.runqueue import Job, QueueStopped, run_jobs

TRAIN = (sys.executable, "-m", "selectscale.train")  # train.py's command line, wherever the package is installed
# Smoke runs: the whole pipeline on 16 synthetic images, one optimizer step of 8, on the CPU. Small, because
# the smoke trains every row of every table (70 runs): a WRN-20-8 or ResNet-50 step on 32 images took most of a
# row's 17 s on a 2-core CPU, 8 images a quarter of that.
SMOKE_OVERRIDES = ["dataset=synthetic", "dataset.train_size=16", "dataset.test_size=16", "trainer.batch_size=8",
                   "trainer.max_steps_per_epoch=1", "trainer.device=cpu", "trainer.progress_bar=false"]
SMOKE_SWEEP_POINTS = 2  # smoke runs keep the first two values of each sweep


def snapshot_epochs(count: int, epochs: int) -> list[int]:
    """``count`` epochs spread evenly over a run of ``epochs`` (the last included), for CAMs over training."""
    return sorted({max(1, round(epochs * (index + 1) / count)) for index in range(count)})


def _run_overrides(row: Row, epochs: int | None, data: str | None, launcher: str | None, extra: list[str],
                   snapshots: int) -> list[str]:
    """What every run of ``row`` is trained with after its seed and directory (the same for both paths)."""
    overrides = ["trainer.resume=auto"]
    overrides += [f"trainer.epochs={epochs}"] if epochs else []
    overrides += [f"dataset.root={data}"] if data else []
    overrides += [f"hydra/launcher={launcher}"] if launcher else []
    if snapshots:
        epochs_in_run = epochs or row.paper_epochs or 200
        overrides.append(f"trainer.snapshot_epochs=[{','.join(map(str, snapshot_epochs(snapshots, epochs_in_run)))}]")
    return overrides + extra


def row_command(row: Row, run_dir: Path, seeds: int, epochs: int | None, data: str | None,
                launcher: str | None, extra: list[str], snapshots: int = 0) -> list[str]:
    """One Hydra multirun over the seeds of one row; ``snapshots`` > 0 keeps that many weight snapshots."""
    return [*TRAIN, "-m", *row.overrides, f"seed={','.join(map(str, range(seeds)))}",
            f"hydra.sweep.dir={run_dir}", "hydra.sweep.subdir=seed${seed}",
            *_run_overrides(row, epochs, data, launcher, extra, snapshots)]


def run_command(row: Row, run_dir: Path, seed: int, epochs: int | None, data: str | None, extra: list[str],
                snapshots: int = 0) -> list[str]:
    """One plain resumable run of one row and seed into ``run_dir`` (a job of the parallel queue); it resumes
    a run that :func:`row_command` started and vice versa (``output_dir`` may differ on resume)."""
    return [*TRAIN, *row.overrides, f"seed={seed}", f"output_dir={run_dir}",
            *_run_overrides(row, epochs, data, None, extra, snapshots)]


def table_jobs(table: Table, runs: Path, seeds: int, epochs: int | None, data: str | None, extra: list[str],
               snapshots: int = 0, only: set[tuple[str, int]] | None = None) -> list[Job]:
    """Every run of the table as a queue job, seed by seed (so a stopped queue leaves balanced rows); ``only``:
    just these (row label, seed) pairs."""
    jobs = []
    for seed in range(seeds):
        for row in table.rows:
            if only is not None and (row.label, seed) not in only:
                continue
            run_dir = table.row_dir(runs, row.label) / f"seed{seed}"
            jobs.append(Job(f"{table.name}/{row.label}/seed{seed}",
                            tuple(run_command(row, run_dir, seed, epochs, data, extra, snapshots)),
                            table.runs_root(runs) / "logs" / f"{row.label}-seed{seed}.log"))
    return jobs


def refuse_foreign(table: Table, plan: list[PlannedRun]) -> None:
    """ExperimentError naming the first run directory that holds another setting's run (never trained over)."""
    foreign = [run for run in plan if run.state == "foreign"]
    if foreign:
        more = f" ({len(foreign) - 1} more: {', '.join(run.name for run in foreign[1:4])}" + (
            ", ..." if len(foreign) > 4 else "") + ")" if len(foreign) > 1 else ""
        raise ExperimentError(f"{foreign[0].run_dir} is not a run of {table.name}'s row {foreign[0].row} "
                              f"({foreign[0].reason}){more}: move it away or choose another --runs; nothing was "
                              "started")


def run_table_queue(table: Table, runs: Path, seeds: int, epochs: int | None, data: str | None, extra: list[str],
                    parallel: int, snapshots: int = 0, skip_seeds: frozenset[int] = frozenset()) -> None:
    """The runs of the table that are neither finished nor running elsewhere (report.plan decides), in one queue,
    ``parallel`` at a time; every job runs even when another fails. A foreign run directory refuses the table.
    ``skip_seeds``: seeds left out (a seed-block study's seeds that another machine kind started)."""
    runs = runs.resolve()  # absolute: the log and run paths must not depend on the jobs' folder
    plan = plan_table(table, runs, seeds, epochs, extra, strict_epochs=True)
    refuse_foreign(table, plan)
    for run in plan:
        if run.state == "running":
            print(f"[{table.name}] {run.name}: running in another process ({run.run_dir}); left to it", flush=True)
    todo = {(run.row, run.seed) for run in plan if run.state in ("missing", "interrupted") and
            run.seed not in skip_seeds}
    if skip_seeds:
        print(f"[{table.name}] seeds {', '.join(map(str, sorted(skip_seeds)))} skipped (--skip-seeds)", flush=True)
    jobs = table_jobs(table, runs, seeds, epochs, data, extra, snapshots, only=todo)
    counts = ", ".join(f"{count} {state}" for state, count in state_counts(plan).items())
    print(f"[{table.name}] {len(jobs)} of {len(plan)} runs to train ({counts}), {parallel} at a time; logs in "
          f"{table.runs_root(runs) / 'logs'}", flush=True)
    if not jobs:
        return
    failures = run_jobs(jobs, parallel, Path.cwd(), echo=lambda line: print(f"[{table.name}] {line}", flush=True))
    if failures:
        for failure in failures:
            print(f"[{table.name}] failed: {failure.line()}", file=sys.stderr, flush=True)
        raise ExperimentError(f"{len(failures)} of {len(jobs)} runs of {table.name} failed (listed above); fix them "
                              "and run the same target again: finished runs are kept and skipped")


def run_table_launcher(table: Table, runs: Path, seeds: int, epochs: int | None, data: str | None, launcher: str,
                       extra: list[str], snapshots: int = 0) -> None:
    """One Hydra multirun per row through ``launcher`` (joblib, submitit_slurm: clusters), one row at a time, its
    output on the terminal; rows whose runs are all finished are skipped, a foreign run directory refuses."""
    plan = plan_table(table, runs, seeds, epochs, extra, strict_epochs=True)
    refuse_foreign(table, plan)
    done = {row.label for row in table.rows if all(run.state == "finished" for run in plan if run.row == row.label)}
    jobs = [Job(f"{table.name}/{row.label}", tuple(row_command(row, table.row_dir(runs, row.label), seeds, epochs,
                                                                 data, launcher, extra, snapshots)), None)
            for row in table.rows if row.label not in done]
    print(f"[{table.name}] {len(jobs)} of {len(table.rows)} rows to run through hydra/launcher={launcher}", flush=True)
    failures = run_jobs(jobs, 1, Path.cwd(), echo=lambda line: print(f"[{table.name}] {line}", flush=True))
    if failures:
        rows = ", ".join(f"{failure.job.name.split('/', 1)[1]} (exit {failure.returncode})" for failure in failures)
        raise ExperimentError(f"{table.name}: rows {rows} had failed runs (listed above); fix them and run the "
                              "same target again: finished runs are kept and skipped")


def run_table(table: Table, runs: Path, seeds: int, epochs: int | None, data: str | None, launcher: str | None,
              extra: list[str], snapshots: int = 0, parallel: int | None = None,
              skip_seeds: frozenset[int] = frozenset()) -> None:
    """Train (or resume) every run of ``table``: through the queue, ``parallel`` (default 1) at a time, or with a
    Hydra ``launcher`` one multirun per row. A stop signal raises :class:`~selectscale.runqueue.QueueStopped`."""
    if launcher:
        run_table_launcher(table, runs, seeds, epochs, data, launcher, extra, snapshots)
    else:
        run_table_queue(table, runs, seeds, epochs, data, extra, parallel or 1, snapshots, skip_seeds)


def smoke(names: list[str], keep: Path | None, parallel: int | None = None, launcher: str | None = None) -> None:
    """Every table end to end on tiny synthetic data, 1 seed, 1 epoch, CPU; checks the files appear. The runs go
    through the run queue ``parallel`` at a time (as ``run``), or with ``launcher`` one multirun per row."""
    with tempfile.TemporaryDirectory() as scratch:
        base = keep or Path(scratch)
        for name in names:
            table = load_table(name, sweep_points=SMOKE_SWEEP_POINTS)
            run_table(table, base / "runs", 1, 1, None, launcher, SMOKE_OVERRIDES, parallel=parallel)
            outputs = report_table(table, base / "runs", base / "results", 1, epochs=1, extra=SMOKE_OVERRIDES)
            missing = [p for p in outputs if not p.is_file() or p.stat().st_size == 0]
            if missing:
                raise ExperimentError(f"smoke {name}: {', '.join(map(str, missing))} not produced")
            print(f"[smoke] {name}: {', '.join(str(p) for p in outputs)}", flush=True)


def folder_problem(path: Path, writable: bool) -> str | None:
    """Why ``path`` cannot be a folder the command reads (``writable``: and writes, creating it if missing)."""
    path = path.absolute()
    for existing in (path, *path.parents):
        if os.path.lexists(existing):
            break
    if not existing.exists():
        return f"{existing} is a link to nothing"
    if not existing.is_dir():
        return f"{path} is a file, not a folder" if existing == path else f"{path} lies under {existing}, a file"
    if writable and not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable (read-only)"
    return None


def check_folders(action: str, folders: list[tuple[str, Path, bool]]) -> None:
    """ExperimentError (one line) for the first ``(option, path, writable)`` that cannot serve, before anything
    runs."""
    for option, path, writable in folders:
        problem = folder_problem(path, writable)
        if problem:
            created = ", created if missing" if writable else ""
            nothing = "started" if action == "run" else "written"
            raise ExperimentError(f"{option} {path}: {problem}; choose another {option} (a folder{created}); "
                                  f"nothing was {nothing}")


class Interrupted(Exception):
    """A stop signal outside the run queue (SIGTERM, SIGHUP); Ctrl-C arrives as KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP raise :class:`Interrupted` (so staged report files are removed), restored afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def command_line(argv: list[str]) -> str:
    """The command as the user gave it, shlex-quoted: what goes on after a stop."""
    installed = bool(sys.argv) and Path(sys.argv[0]).name.startswith("selectscale-")  # the console script, as typed
    program = shlex.quote(sys.argv[0]) if installed else f"{shlex.quote(sys.executable)} -m selectscale.experiments"
    return f"{program} {shlex.join(argv)}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m selectscale.experiments", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["run", "report", "smoke", "compare"])
    parser.add_argument("names", nargs="+", help=f"tables and sweep figures: {', '.join(NAMES)}; for compare: "
                        "run directories (or folders of them)")
    parser.add_argument("--seeds", type=int, default=5, help="runs per row (the paper: 5)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="shorten every row to this many epochs (report: count only runs of this length)")
    parser.add_argument("--data", default=None, help="dataset.root for every run")
    parser.add_argument("--launcher", default=None,
                        help="run, smoke: one Hydra multirun per row through this launcher (joblib, submitit_slurm) "
                        "instead of the local run queue")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where run directories live (default: ./runs; a study with committed runs: its own "
                        "folder, e.g. results/mini_overfit/runs)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="where tables are written (default: ./results)")
    parser.add_argument("--version", action="version", version=f"selectscale {selectscale.__version__}")
    parser.add_argument("--keep", type=Path, default=None, help="smoke: keep runs and tables here")
    parser.add_argument("--rows", default=None, help="run: only these rows (comma-separated labels); no report")
    parser.add_argument("--skip-seeds", default="", help="run: leave these seeds out (comma-separated, e.g. 2,3: a "
                        "seed-block study's seeds another machine kind started); not with --launcher")
    parser.add_argument("--snapshots", type=int, default=0, help="run: keep this many weight snapshots per run")
    parser.add_argument("--extra-columns", action="store_true",
                        help="report: add best-epoch errors (optimistic: chosen on test data) and min-max over seeds")
    parser.add_argument("--parallel", type=int, default=None,
                        help="run, smoke: how many runs of the queue (rows x seeds) train at once (default 1)")
    args, extra = parser.parse_known_args(argv)
    if args.action == "compare":
        from selectscale.report.compare import print_comparison

        return print_comparison([Path(name) for name in args.names])
    try:
        with _signals_interrupt():
            return _main(args, extra)
    except QueueStopped as stop:
        print(f"{stop}; go on with: {command_line(argv)}", file=sys.stderr, flush=True)
        return stop.exit_status
    except (KeyboardInterrupt, Interrupted) as stop:
        name = "Ctrl-C" if isinstance(stop, KeyboardInterrupt) else str(stop)
        status = 130 if isinstance(stop, KeyboardInterrupt) else 128 + stop.signum
        after = f"; go on with: {command_line(argv)}" if args.action == "run" else "; nothing was written"
        print(f"stopped by {name}{after}", file=sys.stderr, flush=True)
        return status
    except SelectScaleError as error:  # ExperimentError and the other known failures: one line
        print(f"error: {one_line(error)}", file=sys.stderr)
        return error.exit_status


def _seed_list(text: str) -> frozenset[int]:
    """``--skip-seeds``: comma-separated seeds (>= 0); empty: none."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not all(item.isdigit() for item in items):
        raise ExperimentError(f"--skip-seeds={text}: give seeds as comma-separated numbers >= 0, e.g. 2,3")
    return frozenset(int(item) for item in items)


def _main(args: argparse.Namespace, extra: list[str]) -> int:
    if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
        raise ExperimentError(f"--seeds={args.seeds} and --epochs={args.epochs} must be >= 1")
    if args.snapshots < 0:
        raise ExperimentError(f"--snapshots={args.snapshots} must be >= 0")
    if args.parallel is not None and (args.parallel < 1 or args.launcher):
        raise ExperimentError(f"--parallel={args.parallel} needs a number >= 1 and no --launcher (a launcher "
                              "runs the per-row multiruns itself; use one or the other)")
    skip_seeds = _seed_list(args.skip_seeds)
    if skip_seeds and (args.launcher or args.action != "run"):
        raise ExperimentError("--skip-seeds is for run through the queue only (no --launcher): a launcher's "
                              "multirun takes every seed")
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown and args.action != "run":
        raise ExperimentError(f"{unknown[0]}: not an option of {args.action}; see --help (run passes KEY=VALUE "
                              "overrides on to train.py)")
    tables = [select_rows(load_table(name), args.rows) for name in args.names]
    if args.action == "smoke":
        smoke(args.names, args.keep, args.parallel, args.launcher)
        return 0
    places = [(table, args.runs or Path(table.runs_folder or "runs")) for table in tables]
    writes_out = args.action == "report" or args.rows is None
    check_folders(args.action, [("--runs", runs, args.action == "run") for _, runs in places] +
                  ([("--out", args.out, True)] if writes_out else []))
    for table, runs in places:
        if args.action == "run":
            run_table(table, runs, args.seeds, args.epochs, args.data, args.launcher, extra, args.snapshots,
                      args.parallel, skip_seeds)
        if args.rows is not None:
            continue  # a partial table is not rendered over the full one
        for path in report_table(table, runs, args.out, args.seeds, args.extra_columns, epochs=args.epochs,
                                 extra=extra):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
