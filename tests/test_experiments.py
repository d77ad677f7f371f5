"""The table specs (configs/paper/) compose into valid runs; the runner's commands and refusals; Ctrl-C and SIGTERM
outside the run queue (report, evaluate)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from report_fixtures import make_result, write_run

from selectscale import experiments
from selectscale.engine import register_configs, validate
from selectscale.experiments import (
    NAMES,
    ExperimentError,
    load_table,
    main,
    report_table,
    row_command,
    snapshot_epochs,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()
# table2: 15 + the text's top-rate reading for WRN-20-4 and WRN-20-8 (issue 14); fig4: 2 lines + 8 + 10 - 1
# shared; mini_cifar10: 4 methods + a milder SelectScale (issue 12) + 3 DropBlock rows (issue 17); mini_overfit:
# 7 methods, its selection grid 4 methods x 3 rates + the no-drop reference + the edge rule's steps (issue 22)
PAPER_ROWS = {"table1": 15, "table2": 17, "table3": 7, "table4": 4, "fig4": 19, "mini_cifar10": 8, "mini_overfit": 7,
              "mini_overfit_selection": 17, "mini_overfit_subset": 5, "mini_overfit_subset_selection": 17,
              "mini_overfit_pool": 5}


@pytest.mark.parametrize("name", NAMES)
def test_every_row_of_every_table_composes_and_validates(name, tmp_path):
    table = load_table(name)
    assert len(table.rows) == PAPER_ROWS[name] and len({row.label for row in table.rows}) == len(table.rows)
    for row in table.rows:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*row.overrides, f"dataset.root={tmp_path}"])
        validate(cfg)
        if row.paper_epochs is not None:  # mini_cifar10 is not a paper table: it pins its own epochs
            assert cfg.trainer.epochs == row.paper_epochs  # the paper's schedule unless --epochs shortens it


def test_table_rows_carry_the_captions_rates():
    rows = {row.label: row for row in load_table("table1").rows}
    assert "drop.top_rate=0.2" in rows["wrn20_4-selectscale"].overrides
    assert "drop.retain_rate=0.0" in rows["wrn20_4-selectscale"].overrides
    assert rows["wrn20_8-selectscale"].paper == "3.89 ± 0.10"
    table2 = {row.label: row for row in load_table("table2").rows}
    assert "drop.retain_rate=0.2" in table2["wrn20_8-spatial_scale"].overrides
    # Both readings of Table 2's top rates (caption 0.1/0.1/0.2, text 0.1/0.2/0.1), one row each, same paper value
    for model, caption, text in (("wrn20_4", "0.1", "0.2"), ("wrn20_8", "0.2", "0.1")):
        assert f"drop.top_rate={caption}" in table2[f"{model}-selectscale"].overrides
        assert f"drop.top_rate={text}" in table2[f"{model}-selectscale-text"].overrides
        assert table2[f"{model}-selectscale"].paper == table2[f"{model}-selectscale-text"].paper
    assert "resnet110-selectscale-text" not in table2  # caption and text agree on ResNet-110 (0.1)


def test_a_row_runs_as_one_resumable_multirun_over_the_seeds(tmp_path):
    row = load_table("table3").rows[0]
    command = row_command(row, tmp_path / "r", seeds=3, epochs=20, data="/data", launcher="joblib", extra=["x=1"])
    assert "-m" in command and "seed=0,1,2" in command and "trainer.resume=auto" in command
    assert f"hydra.sweep.dir={tmp_path / 'r'}" in command and "hydra.sweep.subdir=seed${seed}" in command
    assert command[-4:] == ["trainer.epochs=20", "dataset.root=/data", "hydra/launcher=joblib", "x=1"]
    assert command.index("trainer.epochs=200") < command.index("trainer.epochs=20")  # the shortening wins


def test_report_without_runs_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(ExperimentError, match="no finished runs of table1"):
        report_table(load_table("table1"), tmp_path, tmp_path / "out", 5)
    assert main(["report", "table1", "--runs", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "error: no finished runs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_table_is_refused(capsys):
    assert main(["run", "table9"]) == 2
    assert "table1, table2, table3, table4, fig4" in capsys.readouterr().err


def test_rows_that_coincide_once_shortened_keep_their_own_paper_values(tmp_path):
    """Table 3's 200- and 600-epoch cosine rows are the same setting at --epochs 20; each row still
    shows its own paper value, and the run count is checked against the seeds asked for."""
    for label in ("cos200-none", "cos600-none"):
        for seed in (0, 1):
            result = make_result(seed=seed, top1=0.05 + seed / 100, **{
                "config.model.name": "resnext29_8x64d", "config.drop.name": "none", "config.drop.top_rate": None,
                "config.drop.retain_rate": None, "config.schedule.name": "cosine", "config.trainer.epochs": 20,
                "epochs_completed": 20})
            write_run(tmp_path / "table3" / label, f"seed{seed}", result)
    markdown, _ = report_table(load_table("table3"), tmp_path, tmp_path / "out", seeds=5)
    lines = markdown.read_text().splitlines()
    row_200 = next(line for line in lines if line.startswith("| cos200-none |"))
    row_600 = next(line for line in lines if line.startswith("| cos600-none |"))
    assert "| 4.07 |" in row_200 and "| 3.51 |" in row_600
    assert "5.50 ± 0.71 (2)" in row_200 and "2 of 5 seeds" in row_200 and "shortened 20/600" in row_600


def _fig4_result(seed: int, top1: float, drop: str, top_rate, retain_rate) -> dict:
    return make_result(seed=seed, top1=top1, **{
        "config.model.name": "wrn20_8", "config.drop.name": drop, "config.drop.top_rate": top_rate,
        "config.drop.retain_rate": retain_rate, "dataset.name": "cifar100", "config.dataset.name": "cifar100"})


def test_figure4_sweeps_expand_into_rows_and_share_the_common_point():
    table = load_table("fig4")
    rows = {row.label: row for row in table.rows}
    shared = rows["selectscale-top0.2-retain0.0"]
    assert {panel for panel, _ in shared.points} == {panel for panel, _ in table.panels}  # trained once, in both
    assert dict(shared.points)["(a) top rate, retaining rate 0"] == 0.2
    assert dict(shared.points)["(b) retaining rate, top rate 0.2"] == 0.0
    assert "drop.top_rate=0.05" in rows["selectscale-top0.05-retain0.0"].overrides
    assert rows["none"].reference == "no drop" and rows["spatial_scale"].paper.startswith("19.50")
    assert len(load_table("fig4", sweep_points=2).rows) == 6  # smoke: 2 lines + the first two values of each sweep


def test_figure4_report_renders_a_table_and_a_plot_of_the_seed_means(tmp_path):
    runs = tmp_path / "fig4"
    write_run(runs / "none", "seed0", _fig4_result(0, 0.21, "none", None, None))
    write_run(runs / "none", "seed1", _fig4_result(1, 0.22, "none", None, None))
    write_run(runs / "selectscale-top0.2-retain0.0", "seed0", _fig4_result(0, 0.19, "selectscale", 0.2, 0.0))
    write_run(runs / "selectscale-top0.2-retain0.0", "seed1", _fig4_result(1, 0.17, "selectscale", 0.2, 0.0))
    write_run(runs / "selectscale-top0.05-retain0.0", "seed0", _fig4_result(0, 0.20, "selectscale", 0.05, 0.0))
    outputs = report_table(load_table("fig4"), tmp_path, tmp_path / "out", seeds=2)
    assert [p.name for p in outputs] == ["fig4.md", "fig4.tex", "fig4.png"] and outputs[2].stat().st_size > 5000
    markdown = outputs[0].read_text()
    assert "| selectscale-top0.2-retain0.0 | selectscale | 0.2 | 0.0 | 18.00 ± 1.41 (2) | figure only |" in markdown
    assert "1 of 2 seeds" in markdown  # the 0.05 point has one run
    from selectscale.report.sweeps import panel_points, reference_lines

    table = load_table("fig4")
    from selectscale.report import collect, group

    groups = []
    for label in ("none", "selectscale-top0.2-retain0.0"):
        for found in group(collect([runs / label]).rows, by=table.group_by):
            found.key = (label, *found.key)
            groups.append(found)
    points = panel_points(table, groups)
    assert points["(a) top rate, retaining rate 0"] == [(0.2, pytest.approx(18.0), pytest.approx(1.41421, 1e-4), 2)]
    assert reference_lines(table, groups) == [("no drop", pytest.approx(21.5), pytest.approx(0.70711, 1e-4), 2)]


def test_table4_shows_measured_and_paper_top5_columns(tmp_path):
    result = make_result(seed=0, top1=0.24, **{"config.model.name": "resnet50", "config.drop.name": "none",
                                                "config.drop.top_rate": None, "config.drop.retain_rate": None,
                                                "test_top5_error": 0.0712, "config.trainer.epochs": 105,
                                                "config.dataset.name": "imagenet", "dataset.name": "imagenet"})
    write_run(tmp_path / "table4" / "none", "seed0", result)
    markdown, _ = report_table(load_table("table4"), tmp_path, tmp_path / "out", seeds=1)
    text = markdown.read_text()
    assert "paper top-1 (%) | measured top-5 (%) mean ± std (n) | paper top-5 (%)" in text
    assert "| 24.00 (1) | 23.89 | 7.12 (1) | 7.06 |" in text


def test_rows_filter_runs_only_those_rows_and_renders_no_partial_table(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(experiments, "run_table", lambda table, *args: ran.extend(r.label for r in table.rows))
    assert main(["run", "table4", "--rows", "none,selectscale", "--runs", str(tmp_path), "--out",
                 str(tmp_path / "out")]) == 0
    assert ran == ["none", "selectscale"] and not (tmp_path / "out").exists()
    assert main(["run", "table4", "--rows", "nonsense", "--runs", str(tmp_path)]) == 2


def test_snapshot_epochs_are_spread_over_the_run_and_reach_the_command(tmp_path):
    assert snapshot_epochs(6, 105) == [18, 35, 52, 70, 88, 105]
    assert snapshot_epochs(3, 2) == [1, 2]
    command = row_command(load_table("table4").rows[0], tmp_path, 1, 2, None, None, [], snapshots=2)
    assert command[-1] == "trainer.snapshot_epochs=[1,2]"


# +experiment=NAME files (configs/experiment/): the lightning-hydra-template convention, one setting each
EXPERIMENT_ROWS = {
    "table1_resnet110_selectscale": ("table1", "resnet110-selectscale"),
    "table1_wrn20_4_selectscale": ("table1", "wrn20_4-selectscale"),
    "table1_wrn20_8_selectscale": ("table1", "wrn20_8-selectscale"),
    "table2_resnet110_selectscale": ("table2", "resnet110-selectscale"),
    "table2_wrn20_4_selectscale": ("table2", "wrn20_4-selectscale"),
    "table2_wrn20_8_selectscale": ("table2", "wrn20_8-selectscale"),
    "table3_resnext29_cos600_cd_selectscale": ("table3", "cos600-cd-selectscale"),
    "table4_resnet50_selectscale": ("table4", "selectscale"),
}


def _composed(overrides: list[str], root) -> dict:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, f"dataset.root={root}"])
    validate(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def test_every_experiment_file_is_listed():
    assert sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml")) == sorted(EXPERIMENT_ROWS)


@pytest.mark.parametrize("name", sorted(EXPERIMENT_ROWS))
def test_an_experiment_file_pins_the_same_setting_as_its_table_row(name, tmp_path):
    table, label = EXPERIMENT_ROWS[name]
    row = {row.label: row for row in load_table(table).rows}[label]
    assert _composed([f"+experiment={name}"], tmp_path) == _composed(list(row.overrides), tmp_path)
    assert _composed([f"+experiment={name}", "seed=3"], tmp_path)["seed"] == 3  # overrides still apply after it


# --- Ctrl-C and SIGTERM outside the run queue (issue 32): one line, no traceback, the report's files all or none.

def _mini_runs(root: Path) -> Path:
    for seed in (0, 1):
        write_run(root / "mini_cifar10" / "none", f"seed{seed}", make_result(seed=seed, **{
            "config.model.name": "resnet8", "config.drop.name": "none", "config.drop.top_rate": None,
            "config.drop.retain_rate": None, "config.trainer.epochs": 50}))
    return root


@pytest.mark.parametrize("stop, status, line", [
    (KeyboardInterrupt, 130, "stopped by Ctrl-C; nothing was written"),
    ("SIGTERM", 143, "stopped by SIGTERM; nothing was written"),
])
def test_an_interrupted_report_writes_nothing_and_says_so_in_one_line(tmp_path, monkeypatch, capsys, stop, status,
                                                                      line):
    import signal

    import selectscale.report.table_files as table_files

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt if stop is KeyboardInterrupt else experiments.Interrupted(signal.SIGTERM)

    runs = _mini_runs(tmp_path / "runs")
    argv = ["report", "mini_cifar10", "--seeds", "2", "--runs", str(runs)]
    monkeypatch.setattr(table_files, "plot_curves", interrupted)  # after table.md, table.tex, summary.json
    assert main([*argv, "--out", str(tmp_path / "new")]) == status
    assert capsys.readouterr().err == line + "\n" and not (tmp_path / "new").exists()
    old = tmp_path / "old" / "mini_cifar10"
    old.mkdir(parents=True)
    (old / "table.md").write_text("the previous table")
    assert main([*argv, "--out", str(tmp_path / "old")]) == status
    assert [path.name for path in old.iterdir()] == ["table.md"] and (old / "table.md").read_text() == (
        "the previous table")  # no staging folder left, nothing replaced


def test_a_report_renders_every_file_then_puts_them_in_place(tmp_path, capsys):
    runs = _mini_runs(tmp_path / "runs")
    assert main(["report", "mini_cifar10", "--seeds", "2", "--runs", str(runs), "--out", str(tmp_path / "out")]) == 0
    assert sorted(path.name for path in (tmp_path / "out").rglob("*")) == [
        "curves.png", "mini_cifar10", "paired.md", "summary.json", "table.md", "table.tex"]  # no staging folder left
    assert "mini_cifar10: 2 of 2 expected runs counted" not in capsys.readouterr().err  # complete: nothing to say


def test_report_refuses_an_option_it_does_not_know(tmp_path, capsys):
    assert main(["report", "table1", "--colour", "--runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --colour: not an option of report") and err.count("\n") == 1


def test_evaluate_turns_ctrl_c_into_one_line(tmp_path, monkeypatch, capsys):
    import selectscale.evaluate as evaluate

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "evaluate_run", interrupted)
    assert evaluate.main([str(tmp_path)]) == 130
    assert capsys.readouterr().err == "stopped by Ctrl-C; nothing was written\n"
