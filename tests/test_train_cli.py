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
