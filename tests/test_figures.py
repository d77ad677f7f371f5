"""Figure 3's inference-time drop curves on a tiny trained run."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from selectscale import figures
from selectscale.engine import fit, register_configs
from selectscale.figures import fig3

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("fig3") / "base"
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "dataset=synthetic", "dataset.train_size=2048", "dataset.test_size=128", "model=resnet20", "drop=none",
            "trainer.batch_size=128", "trainer.epochs=3", "schedule=cosine", "schedule.lr=0.05", "trainer.device=cpu",
            "trainer.progress_bar=false", f"output_dir={run_dir}"])
    fit(cfg)
    return run_dir


def test_curves_start_at_the_clean_error_and_render(trained_run, tmp_path, monkeypatch):
    monkeypatch.setattr(fig3, "RETAIN_RATES", (1.0, 0.6))
    curves = fig3.inference_drop_curves(trained_run, None, repeats=2)
    clean = curves["clean"][0]
    assert clean < 0.6  # the network learned (chance: 0.9), so dropping its strongest maps can hurt it
    for method in fig3.METHODS:
        (rate_one, mean_one, std_one), (rate_low, mean_low, _) = curves[method]
        assert (rate_one, mean_one, std_one) == (1.0, clean, 0.0)  # retain 1 is no drop at all
        assert rate_low == 0.6 and 0.0 <= mean_low <= 1.0
    # Dropping 40% of the maps, the most important ones first, must hurt the trained network.
    assert curves["selectout"][1][1] > clean
    outputs = fig3.render(curves, trained_run, tmp_path / "out", "test")
    assert [p.name for p in outputs] == ["fig3.md", "fig3.png"] and outputs[1].stat().st_size > 1000
    assert "| 0.6 |" in outputs[0].read_text()


def test_a_directory_without_a_run_is_a_one_line_error(tmp_path, capsys):
    assert figures.main(["fig3", str(tmp_path)]) == 2
    assert "holds no config.yaml: train a run there first" in capsys.readouterr().err
