"""The issue-23 benchmark scripts run end to end at toy size and print their tables (no timing is asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def run_script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_bench_ceiling_reports_each_network_against_the_ceilings():
    out = run_script("bench_ceiling.py", "--models", "resnet8", "--batch-size", "8", "--rounds", "1", "--steps", "1",
                     "--warmup", "1", "--matmul", "64")
    assert "| resnet8 |" in out and "Matmul ceiling: fp32" in out


def test_bench_levers_reports_the_optimizer_and_evaluation_variants():
    out = run_script("bench_levers.py", "--models", "resnet8", "--rounds", "1", "--repeats", "1", "--eval-batch", "4")
    assert "| resnet8 |" in out and "SGD fused" in out


def test_bench_selection_runs_head_beside_the_reference_commit():
    history = subprocess.run(["git", "cat-file", "-e", "a6785d4"], cwd=SCRIPTS.parent, capture_output=True)
    if history.returncode != 0:
        pytest.skip("needs the project's git history (commit a6785d4)")
    out = run_script("bench_selection.py", "--models", "resnet8", "--layouts", "nchw", "--batch-size", "8",
                     "--rounds", "1", "--steps", "1", "--warmup", "1")
    assert "| resnet8 | nchw |" in out and "HEAD / a6785d4" in out
