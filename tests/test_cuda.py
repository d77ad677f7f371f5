"""Checks that need a CUDA GPU (skipped without one): the selection on the GPU, and a short bf16 training run
through train.py. ``scripts/gpu_evidence.sh`` runs every ``cuda``-marked test on a lent GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy import stats

from selectscale.drop.functional import top_map_indices

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
REPO = Path(__file__).resolve().parents[1]


def test_selection_on_cuda_equals_topk_for_distinct_scores_and_is_uniform_among_ties():
    torch.manual_seed(30)
    scores = torch.randn(256, 64, device="cuda")
    ours = top_map_indices(scores, 0.2).sort(dim=1).values
    assert torch.equal(ours, scores.topk(ours.shape[1], dim=1).indices.sort(dim=1).values)
    chosen = torch.zeros(20_000, 8, device="cuda").scatter(1, top_map_indices(torch.zeros(20_000, 8, device="cuda"),
                                                                              0.25), 1.0)
    assert stats.chisquare(chosen.sum(dim=0).cpu().numpy()).pvalue > 1e-4


def test_train_py_runs_on_cuda_with_bf16_and_compile(tmp_path):
    run_dir = tmp_path / "run"
    command = [sys.executable, str(REPO / "train.py"), "dataset=synthetic", "dataset.train_size=512",
               "dataset.test_size=256", "model=resnet20", "drop=selectscale", "trainer.epochs=2",
               "trainer.device=cuda", "trainer.compile=true", "trainer.progress_bar=false", f"output_dir={run_dir}"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["complete"] is True and result["device"] == torch.cuda.get_device_name(0)
