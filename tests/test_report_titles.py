"""Issue 36: a rendered table's title says what its numbers are (data kind and schedule when not the paper's)."""

from __future__ import annotations

from report_fixtures import make_result, write_run

from selectscale.report import collect, group, render_latex, render_markdown
from selectscale.report.titles import table_title

TITLE = "Table 1: CIFAR-10 test error (%)"


def _groups(tmp_path, paper_epochs=200, **overrides):
    for seed in range(2):
        write_run(tmp_path, f"seed{seed}", make_result(seed=seed, **overrides))
    return group(collect([tmp_path]).rows, by=("model", "drop"), paper_epochs=paper_epochs)


def _titles(groups) -> tuple[str, str]:
    markdown = render_markdown(groups, title=TITLE).splitlines()[0]
    caption = next(line for line in render_latex(groups, title=TITLE).splitlines() if line.startswith(r"\caption"))
    return markdown, caption


def test_a_synthetic_shortened_table_says_so_in_its_title(tmp_path):
    groups = _groups(tmp_path, **{"dataset.name": "synthetic", "dataset.verified": False,
                                  "config.trainer.epochs": 1, "config.trainer.max_steps_per_epoch": 2})
    expected = f"{TITLE} — synthetic data, shortened: 1 of 200 epochs, capped at 2 steps per epoch"
    markdown, caption = _titles(groups)
    assert markdown == f"## {expected}"
    assert caption == (r"\caption{Table 1: CIFAR-10 test error (\%) --- synthetic data, shortened: 1 of 200 epochs, "
                       r"capped at 2 steps per epoch}")


def test_an_official_full_schedule_table_keeps_its_plain_title(tmp_path):
    markdown, caption = _titles(_groups(tmp_path))
    assert markdown == f"## {TITLE}" and caption == r"\caption{Table 1: CIFAR-10 test error (\%)}"


def test_mini_images_name_their_train_and_test_counts(tmp_path):
    groups = _groups(tmp_path, paper_epochs=None, **{"dataset.verified": False, "dataset.train_size": 5438,
                                                     "dataset.test_size": 1017, "config.trainer.epochs": 15})
    assert table_title(TITLE, groups) == f"{TITLE} — mini CIFAR-10 images (5,438 train / 1,017 test)"


def test_a_longer_schedule_and_a_validation_split_of_official_data_are_named(tmp_path):
    groups = _groups(tmp_path, **{"dataset.evaluated_on": "validation", "config.trainer.epochs": 300})
    assert table_title(TITLE, groups) == f"{TITLE} — validation split, not the test set, 300 epochs (paper: 200)"
