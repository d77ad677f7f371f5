"""train.py as a user runs it: the printed recipe, one-line errors with exit status 2, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

from selectscale.engine import register_configs

REPO = Path(__file__).resolve().parents[1]
register_configs()  # the in-process composition checks below compose configs/train.yaml


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_cfg_job_prints_the_resolved_paper_recipe(tmp_path):
    done = train("--cfg", "job", "model=wrn20_8", "drop=selectscale", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for fragment in ("name: wrn20_8", "name: selectscale", "top_rate: 0.2", "retain_rate: 0.1", "batch_size: 128",
                     "weight_decay: 0.0005", "epochs: 200", "milestone_epochs:\n  - 60\n  - 120\n  - 160"):
        assert fragment in text, fragment
    assert "${" not in text
    assert not list(tmp_path.iterdir())


def test_cfg_job_prints_every_fidelity_switch(tmp_path):
    done = train("--cfg", "job", "drop=selectscale", "drop.rounding=floor", "curriculum=exponential",
                 "schedule.warmup_steps=400", "dataset.padding_mode=reflect", "model.drop_after_stem=true",
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for fragment in ("rounding: floor", "name: exponential", "gamma: 0.001", "warmup_steps: 400", "warmup_lr: 0.01",
                     "padding_mode: reflect", "drop_after_stem: true", "drop_on_shortcut: false", "color_jitter: null"):
        assert fragment in done.stdout, fragment
    imagenet = train("--cfg", "job", "dataset=imagenet", "dataset.color_jitter=0", cwd=tmp_path)
    assert imagenet.returncode == 0, imagenet.stderr
    assert "color_jitter: 0" in imagenet.stdout and "lighting: 0.1" in imagenet.stdout


BAD_RUNS = [
    (["drop=selectscale", "drop.top_rate=1.5"], "drop.top_rate=1.5"),
    (["drop=selectout", "drop.top_rate=0.05"], "1 - retain_rate <= top_rate"),
    (["schedule.lr=-1"], "schedule.lr=-1"),
    (["dataset=cifar10", "dataset.root=/nonexistent"], "dataset.root='/nonexistent'"),
]


@pytest.mark.parametrize("overrides, fragment", BAD_RUNS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(overrides, fragment, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    done = train("dataset=synthetic", f"hydra.run.dir={tmp_path}/run", *overrides, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and fragment in lines[-1]
    assert not (tmp_path / "run").exists()


CONFIGS = REPO / "configs"


@pytest.mark.parametrize("argv, expected", [
    (["trainer.epoch=3"], "trainer.epoch=3: there is no key 'trainer.epoch'"),
    (["model=resnet18"], "model=resnet18: no such option in configs/model/; choose one of resnet110, resnet20"),
    (["trainer.epochs=abc"], "trainer.epochs=abc: Value 'abc' of type 'str' could not be converted to Integer"),
    (["schedule.milestones=[0.3"], "schedule.milestones=[0.3: cannot parse it"),
    (["-m", "seed=0,1", "model=resnet20,foo"], "model=foo: no such option in configs/model/"),
    (["experiment=table1_wrn20_4_selectscale"], "experiment=table1_wrn20_4_selectscale: an experiment file adds a "
                                                "whole setting: write +experiment=NAME (one of table1_resnet110"),
    (["+paper=table1"], "+paper=table1: configs/paper/ holds the table specs"),
    # the 65th value of a sweep is checked too (an earlier check stopped after 64 compositions)
    (["-m", "seed=range(0,64)", "drop.top_rate=0.1,abc"],
     "drop.top_rate=abc: Value 'abc' of type 'str' could not be converted to Float"),
    (["-m", "seed=0,1", "trainer.epochs=3,'x y'"], "trainer.epochs='x y': Value 'x y' of type 'str' could not be"),
    (["-m", "model=glob(resnet2*)", "drop=selectscale,nope"], "drop=nope: no such option in configs/drop/"),
    (["-m", "model=glob(xyz*)"], "model=glob(xyz*): the sweep has no values, so no job would run"),
], ids=["misspelt-key", "unknown-option", "wrong-type", "syntax", "bad-sweep-value", "experiment-without-plus",
        "paper-spec", "value-after-64", "quoted-sweep-value", "glob-and-bad-option", "empty-glob"])
def test_hydra_composition_errors_become_one_line(argv, expected):
    from selectscale.argv_checks import composition_error

    message = composition_error(argv, CONFIGS)
    assert message.startswith(expected) and "\n" not in message


def test_valid_command_lines_pass_the_composition_check():
    from selectscale.argv_checks import composition_error

    assert composition_error(["-m", "model=wrn20_4,resnet110", "drop=selectscale", "seed=0,1",
                              "hydra.sweep.dir=x", "hydra/launcher=basic"], CONFIGS) is None
    assert composition_error(["-m", "model=glob(resnet2*)", "seed=range(0,100)", "drop.top_rate=0.2,0.4"],
                             CONFIGS) is None
    assert composition_error(["--cfg", "job", "model=wrn20_8"], CONFIGS) is None
    assert composition_error(["-cn", "other", "anything=1"], CONFIGS) is None  # another config: Hydra decides


def test_a_run_dir_that_cannot_be_created_is_named(tmp_path):
    from selectscale.argv_checks import run_dir_error

    (tmp_path / "blocker").write_text("a file")
    assert run_dir_error([f"hydra.run.dir={tmp_path}/blocker/run"]).endswith("is a file, not a folder; choose "
                                                                              "another hydra.run.dir")
    assert run_dir_error([f"hydra.run.dir={tmp_path}/new/run", "hydra.sweep.dir=${now:%H}"]) is None


def test_a_failed_job_does_not_stop_the_sweep(tmp_path):
    """Issue 13: seed=1's directory already holds a complete run, so that job is refused (exit 2); seeds 0 and 2
    still train, and the sweep ends non-zero with one line naming the failed job and why."""
    tiny = ["dataset=synthetic", "dataset.train_size=32", "dataset.test_size=32", "trainer.batch_size=16",
            "trainer.epochs=1", "trainer.device=cpu", "trainer.progress_bar=false", "model=resnet8"]
    sweep = [f"hydra.sweep.dir={tmp_path}/sweep", "hydra.sweep.subdir=seed${seed}"]
    first = train(*tiny, "seed=1", f"output_dir={tmp_path}/sweep/seed1", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    done = train("-m", *tiny, "seed=0,1,2", *sweep, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    for seed in (0, 2):
        assert (tmp_path / "sweep" / f"seed{seed}" / "result.json").is_file()
    summary = done.stderr[done.stderr.index("1 of 3 jobs of this sweep failed"):].splitlines()
    assert len(summary) == 2 and f"{tmp_path}/sweep/seed1: exit 2: run directory" in summary[1]
    assert "already holds a complete run" in summary[1]


def test_a_refused_run_in_hydras_dated_folder_leaves_no_empty_folder(tmp_path):
    """Issue 13: the default hydra.run.dir is runs/<date>/<time>_...; a refused start removes both folders."""
    done = train("dataset=synthetic", "trainer.epochs=0", "trainer.device=cpu", cwd=tmp_path)
    assert done.returncode == 2 and "trainer.epochs=0" in done.stderr
    assert [p for p in tmp_path.rglob("*") if p.name != "runs"] == []


def test_a_sweep_ends_with_a_table_of_its_jobs(capsys):
    from selectscale.engine import ConfigError
    from selectscale.failures import SweepRecord

    record = SweepRecord(jobs=2)
    record.succeeded("multirun/x/drop=none", {"test_top1_error": 0.0512})
    record.failed("multirun/x/drop=selectscale", 2, ConfigError("drop.top_rate=1.5 is invalid"))
    assert record.finish() == 2
    out, err = capsys.readouterr()
    assert "sweep of 2 jobs:" in out and "multirun/x/drop=none" in out and "5.12" in out
    assert "failed (exit 2)" in out and "1 of 2 jobs of this sweep failed" in err
