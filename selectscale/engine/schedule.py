"""Learning rate and drop strength as pure functions of training progress.

Progress is measured in epochs (a float: 2.5 is halfway through the third epoch). Because nothing
here has state, resuming needs only the step counter: no scheduler object to save or restore.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from .config import milestone_epochs


def learning_rate(schedule: DictConfig, progress: float, epochs: int) -> float:
    """Step: lr x gamma^(milestones passed), changing at epoch boundaries (the paper's recipe).
    Cosine: lr x (1 + cos(pi x progress / epochs)) / 2, updated every step (Loshchilov and Hutter)."""
    if schedule.name == "step":
        passed = sum(int(progress) >= m for m in milestone_epochs(schedule.milestones, epochs))
        return schedule.lr * schedule.gamma**passed
    if schedule.name == "cosine":
        return schedule.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress / epochs, 1.0)))
    raise ValueError(f"schedule.name={schedule.name!r} is not known: use step or cosine")


def drop_strength(curriculum: DictConfig, progress: float, epochs: int) -> float:
    """Curriculum: 1 (none), or a linear ramp 0 -> 1 over ``ramp_fraction`` of the run (Morerio et
    al. 2017, as DropBlock uses it), updated every step or at every epoch start."""
    if curriculum.name == "none":
        return 1.0
    if curriculum.name == "linear":
        if curriculum.per == "epoch":
            progress = math.floor(progress)
        return min(1.0, progress / (curriculum.ramp_fraction * epochs))
    raise ValueError(f"curriculum.name={curriculum.name!r} is not known: use none or linear")
