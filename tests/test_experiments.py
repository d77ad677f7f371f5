"""The table specs (configs/experiment/) compose into valid runs; the runner's commands and refusals."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from report_fixtures import make_result, write_run

from selectscale.engine import register_configs, validate
from selectscale.experiments import TABLES, ExperimentError, load_table, main, report_table, row_command

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()
PAPER_ROWS = {"table1": 15, "table2": 15, "table3": 7, "table4": 4}


@pytest.mark.parametrize("name", TABLES)
def test_every_row_of_every_table_composes_and_validates(name, tmp_path):
    table = load_table(name)
    assert len(table.rows) == PAPER_ROWS[name] and len({row.label for row in table.rows}) == len(table.rows)
    for row in table.rows:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[*row.overrides, f"dataset.root={tmp_path}"])
        validate(cfg)
        assert cfg.trainer.epochs == row.paper_epochs  # the paper's schedule unless --epochs shortens it


def test_table_rows_carry_the_captions_rates():
    rows = {row.label: row for row in load_table("table1").rows}
    assert "drop.top_rate=0.2" in rows["wrn20_4-selectscale"].overrides
    assert "drop.retain_rate=0.0" in rows["wrn20_4-selectscale"].overrides
    assert rows["wrn20_8-selectscale"].paper == "3.89 ± 0.10"
    table2 = {row.label: row for row in load_table("table2").rows}
    assert "drop.retain_rate=0.2" in table2["wrn20_8-spatial_scale"].overrides


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
    assert "table1, table2, table3, table4" in capsys.readouterr().err


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
