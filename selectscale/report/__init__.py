"""Tables from finished runs: collect result.json files into rows, group by setting, mean/std, render.

>>> collection = collect([Path("runs")])                                # doctest: +SKIP
>>> groups = group(collection.rows, by=("model", "drop"), paper_epochs=200)  # doctest: +SKIP
>>> print(render_markdown(groups, paper={("wrn20_8", "selectscale"): "3.72"}, expected_seeds=5,
...                       title="CIFAR-10", skipped=collection.skipped))  # doctest: +SKIP

Runs that are incomplete, unreadable, of another schema version or missing fields are never rows; they are
listed in ``Collection.skipped`` and in the table's "Left out" warning. Groups whose runs differ in any
hyperparameter other than the seed are flagged and not averaged. Every table carries Welch's t-test p-values
against no drop and the best other method, and a comparison per block (:mod:`selectscale.report.render`).
"""

from .collect import (
    KEYS_OUTSIDE_SETTING,
    REQUIRED_FIELDS,
    Collection,
    RunRow,
    UnusableResult,
    collect,
    find_result_files,
    flatten_config,
    read_row,
    row_from_result,
    setting_of,
)
from .render import comparison_cells, latex_escape, render_latex, render_markdown, table_cells
from .stats import WelchResult, welch_test
from .tables import (
    GROUPABLE_KEYS,
    Group,
    data_label,
    format_measured,
    format_schedule,
    group,
    mean_and_std,
)

__all__ = [
    "GROUPABLE_KEYS",
    "KEYS_OUTSIDE_SETTING",
    "REQUIRED_FIELDS",
    "Collection",
    "Group",
    "RunRow",
    "UnusableResult",
    "WelchResult",
    "collect",
    "comparison_cells",
    "data_label",
    "find_result_files",
    "flatten_config",
    "format_measured",
    "format_schedule",
    "group",
    "latex_escape",
    "mean_and_std",
    "read_row",
    "render_latex",
    "render_markdown",
    "row_from_result",
    "setting_of",
    "table_cells",
    "welch_test",
]
