"""selectscale-evaluate (a finished run's weights on its own or other data) and experiments compare (issue 15)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from report_fixtures import make_result, write_run

from selectscale.engine import ConfigError, fit, register_configs
from selectscale.evaluate import evaluate_run, main
from selectscale.experiments import main as experiments_main
from selectscale.report.compare import compare_runs

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()
TINY = ["dataset=synthetic", "dataset.train_size=128", "dataset.test_size=96", "model=resnet8", "drop=selectscale",
        "trainer.batch_size=32", "trainer.epochs=1", "trainer.device=cpu", "trainer.progress_bar=false"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evaluate") / "run"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*TINY, f"output_dir={run_dir}"])
    return run_dir, fit(cfg)


def test_evaluate_reproduces_the_runs_own_test_error(finished):
    run_dir, result = finished
    evaluated = evaluate_run(run_dir, [], with_drops=False, repeats=1)
    assert evaluated["test_top1_error"] == pytest.approx(result["test_top1_error"])
    assert evaluated["test_images"] == 96 and evaluated["with_drops"] is False


def test_evaluate_with_drops_at_inference_and_other_settings(finished, capsys):
    run_dir, _ = finished
    with_drops = evaluate_run(run_dir, ["trainer.batch_size=16"], with_drops=True, repeats=2)
    assert with_drops["repeats"] == 2 and 0.0 <= with_drops["test_top1_error"] <= 1.0
    assert main([str(run_dir), "--json"]) == 0 and '"test_top1_error"' in capsys.readouterr().out
    with pytest.raises(ConfigError, match="model.name=resnet20: only the data and how to run may change"):
        evaluate_run(run_dir, ["model.name=resnet20"], with_drops=False, repeats=1)
    assert main([str(run_dir.parent / "missing")]) == 2
    assert "is not a run directory (no such folder)" in capsys.readouterr().err


def test_compare_groups_by_the_differing_settings_with_welch_p(tmp_path, capsys):
    for seed, (a, b) in enumerate([(0.050, 0.045), (0.052, 0.044), (0.051, 0.046)]):
        write_run(tmp_path, f"none/seed{seed}", make_result(seed=seed, top1=a, **{"config.drop.name": "none",
                                                                                  "config.drop.top_rate": None,
                                                                                  "config.drop.retain_rate": None}))
        write_run(tmp_path, f"ss/seed{seed}", make_result(seed=seed, top1=b))
    text = compare_runs([tmp_path / "none", tmp_path / "ss"])
    assert "Settings that differ: drop.name, drop.retain_rate, drop.top_rate" in text
    assert "5.10 ± 0.10 (3)" in text and "4.50 ± 0.10 (3)" in text and "dof=4.0" in text and "p=" in text
    same = compare_runs([tmp_path / "ss"])
    assert "none (every run has the same setting)" in same
    assert experiments_main(["compare", str(tmp_path / "empty")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
