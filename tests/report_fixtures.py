"""Realistic result.json payloads and run directories for the report and experiment tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from selectscale.runs.result import RESULT_FILE

DELETE = object()  # an override value that removes the key

BASE_RESULT = {
    "schema_version": 1, "complete": True, "epochs_completed": 200,
    "test_top1_error": 0.0522, "test_top5_error": 0.0011, "test_loss": 0.21, "train_loss": 0.05, "seed": 0,
    "dataset": {"name": "cifar10", "train_size": 50000, "test_size": 10000, "num_classes": 10, "verified": True},
    "config": {
        "seed": 0, "output_dir": None,
        "dataset": {"name": "cifar10", "root": "data", "download": False, "workers": 8, "on_bad_image": "fail"},
        "model": {"name": "wrn20_8", "shortcut": None},
        "drop": {"name": "selectscale", "top_rate": 0.2, "retain_rate": 0.1, "score": "max"},
        "schedule": {"name": "step_cifar", "lr": 0.1, "milestones": [60, 120, 160], "gamma": 0.2},
        "curriculum": {"name": "none", "ramp_fraction": 1.0, "per": "step"},
        "trainer": {"epochs": 200, "batch_size": 128, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
                    "device": "cuda", "compile": False, "resume": "never", "dist_timeout_s": 600,
                    "progress_bar": True, "max_steps_per_epoch": None},
    },
    "code": {"commit": "0123abcd", "dirty": False},
    "torch_version": "2.5.0", "device": "NVIDIA H200", "world_size": 1, "wall_time_seconds": 3600.0,
}


def make_result(seed: int = 0, top1: float = 0.0522, **overrides) -> dict:
    """A realistic result.json payload; overrides are dotted paths (``"config.drop.retain_rate": 0.4``)."""
    result = copy.deepcopy(BASE_RESULT)
    result["seed"] = result["config"]["seed"] = seed
    result["test_top1_error"] = top1
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = result
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return result


def write_run(root: Path, name: str, payload: dict | str) -> Path:
    """A run directory ``root/name`` holding result.json (a dict as JSON, a str verbatim)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    path = run_dir / RESULT_FILE
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload, indent=2))
    return path
