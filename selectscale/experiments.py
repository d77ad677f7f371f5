"""Run and report the paper's tables and sweeps: ``python -m selectscale.experiments {run,report,smoke} NAME``
(``selectscale-experiments`` once installed), and ``compare RUN_DIR...``.

A table (or Figure 4's sweep) is a file ``configs/paper/NAME.yaml``: a title, the paper's epochs, the
overrides common to every row, and one row per cell (its ``train.py`` overrides and the paper's value); a
sweep's ``sweeps`` expand into one row per value. ``run`` trains every row for every seed as one Hydra
multirun per row (so ``--launcher joblib`` or ``submitit_slurm`` run them in parallel or on a cluster), into
``RUNS/NAME/<row>/seed<k>/``, with ``trainer.resume=auto``: finished runs are skipped and interrupted ones
continue. ``report`` renders ``results/NAME.md`` and ``.tex`` (and a sweep's ``NAME.png``) from whatever
runs exist, flagging missing seeds, shortened schedules and unofficial data, and never averaging incomplete
runs or different settings. ``smoke`` runs a table end to end on tiny synthetic data. ``compare RUN_DIR...``
puts any runs side by side (``selectscale.report.compare``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import selectscale
from selectscale.report.specs import (  # the specs, loaded in the report layer (fig4 and the report read them)
    NAMES,
    ExperimentError,
    Row,
    Table,
    load_table,
    select_rows,
)
from selectscale.report.table_files import report_table
from selectscale.runqueue import Job, run_jobs

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
               snapshots: int = 0) -> list[Job]:
    """Every run of the table as a queue job, seed by seed (so a stopped queue leaves balanced rows)."""
    jobs = []
    for seed in range(seeds):
        for row in table.rows:
            run_dir = table.row_dir(runs, row.label) / f"seed{seed}"
            jobs.append(Job(f"{table.name}/{row.label}/seed{seed}",
                            tuple(run_command(row, run_dir, seed, epochs, data, extra, snapshots)),
                            table.runs_root(runs) / "logs" / f"{row.label}-seed{seed}.log"))
    return jobs


def run_table_parallel(table: Table, runs: Path, seeds: int, epochs: int | None, data: str | None, extra: list[str],
                       parallel: int, snapshots: int = 0) -> None:
    """All rows x seeds in one queue, ``parallel`` at a time; every job runs even when another fails."""
    runs = runs.resolve()  # absolute: the log and run paths must not depend on the jobs' folder
    jobs = table_jobs(table, runs, seeds, epochs, data, extra, snapshots)
    print(f"[{table.name}] {len(jobs)} runs, {parallel} at a time; logs in {table.runs_root(runs) / 'logs'}",
          flush=True)
    failures = run_jobs(jobs, parallel, Path.cwd(), echo=lambda line: print(f"[{table.name}] {line}", flush=True))
    if failures:
        for failure in failures:
            print(f"[{table.name}] failed: {failure.line()}", file=sys.stderr, flush=True)
        raise ExperimentError(f"{len(failures)} of {len(jobs)} runs of {table.name} failed (listed above); fix them "
                              "and run the same target again: finished runs are kept and skipped")


def run_table(table: Table, runs: Path, seeds: int, epochs: int | None, data: str | None, launcher: str | None,
              extra: list[str], snapshots: int = 0, parallel: int | None = None) -> None:
    if parallel is not None:
        run_table_parallel(table, runs, seeds, epochs, data, extra, parallel, snapshots)
        return
    failed = []
    for row in table.rows:  # a failed row (its multirun lists its failed seeds) does not stop the rows after it
        command = row_command(row, table.row_dir(runs, row.label), seeds, epochs, data, launcher, extra, snapshots)
        print(f"[{table.name}] {row.label}: {' '.join(command[1:])}", flush=True)
        done = subprocess.run(command)
        if done.returncode != 0:
            failed.append(f"{row.label} (exit {done.returncode})")
    if failed:
        raise ExperimentError(f"{table.name}: rows {', '.join(failed)} had failed runs (listed above); fix them and "
                              "run the same target again: finished runs are kept and skipped")


def smoke(names: list[str], keep: Path | None, parallel: int | None = None) -> None:
    """Every table end to end on tiny synthetic data, 1 seed, 1 epoch, CPU; checks the files appear. With
    ``parallel``, each table's runs go through the run queue that many at a time (as ``run --parallel``)."""
    with tempfile.TemporaryDirectory() as scratch:
        base = keep or Path(scratch)
        for name in names:
            table = load_table(name, sweep_points=SMOKE_SWEEP_POINTS)
            run_table(table, base / "runs", 1, 1, None, None, SMOKE_OVERRIDES, parallel=parallel)
            outputs = report_table(table, base / "runs", base / "results", 1)
            missing = [p for p in outputs if not p.is_file() or p.stat().st_size == 0]
            if missing:
                raise ExperimentError(f"smoke {name}: {', '.join(map(str, missing))} not produced")
            print(f"[smoke] {name}: {', '.join(str(p) for p in outputs)}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selectscale.experiments", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["run", "report", "smoke", "compare"])
    parser.add_argument("names", nargs="+", help=f"tables and sweep figures: {', '.join(NAMES)}; for compare: "
                        "run directories (or folders of them)")
    parser.add_argument("--seeds", type=int, default=5, help="runs per row (the paper: 5)")
    parser.add_argument("--epochs", type=int, default=None, help="shorten every row to this many epochs")
    parser.add_argument("--data", default=None, help="dataset.root for every run")
    parser.add_argument("--launcher", default=None, help="Hydra launcher, e.g. joblib or submitit_slurm")
    parser.add_argument("--runs", type=Path, default=None,
                        help="where run directories live (default: ./runs; a study with committed runs: its own "
                        "folder, e.g. results/mini_overfit/runs)")
    parser.add_argument("--out", type=Path, default=Path("results"),
                        help="where tables are written (default: ./results)")
    parser.add_argument("--version", action="version", version=f"selectscale {selectscale.__version__}")
    parser.add_argument("--keep", type=Path, default=None, help="smoke: keep runs and tables here")
    parser.add_argument("--rows", default=None, help="run: only these rows (comma-separated labels); no report")
    parser.add_argument("--snapshots", type=int, default=0, help="run: keep this many weight snapshots per run")
    parser.add_argument("--extra-columns", action="store_true",
                        help="report: add best-epoch errors (optimistic: chosen on test data) and min-max over seeds")
    parser.add_argument("--parallel", type=int, default=None,
                        help="run, smoke: queue every run of the table (rows x seeds), this many running at once")
    args, extra = parser.parse_known_args(argv)
    if args.action == "compare":
        from selectscale.report.compare import print_comparison

        return print_comparison([Path(name) for name in args.names])
    try:
        if args.seeds < 1 or (args.epochs is not None and args.epochs < 1):
            raise ExperimentError(f"--seeds={args.seeds} and --epochs={args.epochs} must be >= 1")
        if args.snapshots < 0:
            raise ExperimentError(f"--snapshots={args.snapshots} must be >= 0")
        if args.parallel is not None and (args.parallel < 1 or args.launcher):
            raise ExperimentError(f"--parallel={args.parallel} needs a number >= 1 and no --launcher (a launcher "
                                  "runs the per-row multiruns itself; use one or the other)")
        tables = [select_rows(load_table(name), args.rows) for name in args.names]
        if args.action == "smoke":
            smoke(args.names, args.keep, args.parallel)
        for table in tables if args.action != "smoke" else []:
            runs = args.runs or Path(table.runs_folder or "runs")
            if args.action == "run":
                run_table(table, runs, args.seeds, args.epochs, args.data, args.launcher, extra, args.snapshots,
                          args.parallel)
            if args.rows is not None:
                continue  # a partial table is not rendered over the full one
            for path in report_table(table, runs, args.out, args.seeds, args.extra_columns):
                print(f"wrote {path}")
    except ExperimentError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
