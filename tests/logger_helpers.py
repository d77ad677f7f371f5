"""What tests/test_loggers.py and tests/test_loggers_extras.py share: a tiny real run with chosen loggers, and
readers of what the loggers wrote."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from hydra import compose, initialize_config_dir

from selectscale.engine import fit, register_configs

REPO = Path(__file__).resolve().parents[1]
register_configs()
# 64 images, batch 16, at most 3 steps an epoch, 2 epochs: 6 optimizer steps, about a second on 2 cores.
TINY = ["dataset=synthetic", "dataset.train_size=64", "dataset.test_size=32", "model=resnet8", "trainer.batch_size=16",
        "trainer.epochs=2", "trainer.max_steps_per_epoch=3", "trainer.device=cpu", "trainer.progress_bar=false",
        "trainer.precision=fp32", "schedule=cosine", "drop=selectscale", "curriculum=linear"]
STEPS = 6
# An epoch's summary line ("epoch   1/2 | lr ..."), not the progress line a slow machine logs mid-epoch
# ("epoch 1 step 12/20 | ...", every engine.steps.PROGRESS_EVERY_S seconds).
EPOCH_SUMMARY = re.compile(r"epoch +\d+/\d+ \|")


def epoch_summaries(lines) -> list[str]:
    """The epoch summary lines among ``lines`` (log messages or output lines), in order."""
    return [line for line in lines if EPOCH_SUMMARY.match(line)]


# The TensorBoard tags of every run before the logger group (engine/records.py's TENSORBOARD_TAGS), by hand.
EPOCH_TAGS = {"train/lr": "lr", "train/drop_strength": "drop_strength", "train/loss": "train_loss",
              "train/top1_error": "train_top1_error", "test/loss": "test_loss", "test/top1_error": "test_top1_error",
              "test/top5_error": "test_top5_error", "speed/images_per_second": "images_per_second"}
STEP_TAGS = {"train_step/loss": "train_loss", "train_step/lr": "lr", "train_step/drop_strength": "drop_strength"}


def make_cfg(*overrides: str, run_dir: Path | None = None):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        where = [f"output_dir={run_dir}"] if run_dir is not None else []
        return compose(config_name="train", overrides=[*TINY, *where, *overrides])


def run(tmp_path: Path, *overrides: str) -> tuple[Path, list[dict], dict]:
    run_dir = tmp_path / "run"
    result = fit(make_cfg(*overrides, run_dir=run_dir))
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, records, result


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def expected_steps(every: int) -> list[int]:
    return list(range(0, STEPS, every))


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)
