"""Figure 4 of the paper: SelectScale's test error against its top rate and its retaining rate.

The runs are a sweep experiment (``configs/paper/fig4.yaml``) trained and collected by
:mod:`selectscale.experiments` like a table: ``make fig4`` trains (or resumes) them, ``make fig4-report``
renders ``results/fig4.md`` (every point with mean ± std over seeds and the usual flags) and ``fig4.png``
(one panel per sweep, error bars = sample std over seeds, with the no-drop run and the best other method
as horizontal lines and bands). A point whose runs differ in settings is not averaged, so not plotted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from selectscale.figures.errors import FigureError
from selectscale.report.sweeps import panel_points, plot_sweeps, reference_lines

__all__ = ["add_arguments", "panel_points", "plot_sweeps", "reference_lines", "run"]  # the plot lives in report

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="where the fig4 run directories live")
    parser.add_argument("--seeds", type=int, default=5, help="runs expected per point (fewer are flagged)")
    parser.add_argument("--out", type=Path, default=Path("results"))


def run(args: argparse.Namespace) -> list[Path]:
    from selectscale.report.specs import ExperimentError, load_table
    from selectscale.report.table_files import report_table

    try:
        return report_table(load_table("fig4"), args.runs, args.out, args.seeds)
    except ExperimentError as error:
        raise FigureError(str(error)) from error
