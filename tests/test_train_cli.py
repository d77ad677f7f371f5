"""train.py as a user runs it: the printed recipe, one-line errors with exit status 2, nothing written."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
], ids=["misspelt-key", "unknown-option", "wrong-type", "syntax", "bad-sweep-value"])
def test_hydra_composition_errors_become_one_line(argv, expected):
    from selectscale.cli import composition_error

    message = composition_error(argv, CONFIGS)
    assert message.startswith(expected) and "\n" not in message


def test_valid_command_lines_pass_the_composition_check():
    from selectscale.cli import composition_error

    assert composition_error(["-m", "model=wrn20_4,resnet110", "drop=selectscale", "seed=0,1",
                              "hydra.sweep.dir=x", "hydra/launcher=basic"], CONFIGS) is None
    assert composition_error(["--cfg", "job", "model=wrn20_8"], CONFIGS) is None
    assert composition_error(["-cn", "other", "anything=1"], CONFIGS) is None  # another config: Hydra decides


def test_a_run_dir_that_cannot_be_created_is_named(tmp_path):
    from selectscale.cli import run_dir_error

    (tmp_path / "blocker").write_text("a file")
    assert run_dir_error([f"hydra.run.dir={tmp_path}/blocker/run"]).endswith("is a file, not a folder; choose "
                                                                              "another hydra.run.dir")
    assert run_dir_error([f"hydra.run.dir={tmp_path}/new/run", "hydra.sweep.dir=${now:%H}"]) is None
