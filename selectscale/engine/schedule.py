"""Learning rate and drop strength as pure functions of training progress.

Progress is measured in epochs (a float: 2.5 is halfway through the third epoch). Because nothing
here has state, resuming needs only the step counter: no scheduler object to save or restore.
"""

from __future__ import annotations

import math

from omegaconf import DictConfig

from .schema import milestone_epochs


def _step_of(progress: float, steps_per_epoch: int) -> int:
    """The optimizer step (0-based) at ``progress`` epochs; round() undoes the float error of epoch + b / n."""
    return round(progress * steps_per_epoch)


def learning_rate(schedule: DictConfig, progress: float, epochs: int, steps_per_epoch: int = 1) -> float:
    """Step: lr x gamma^(milestones passed), changing at epoch boundaries (the paper's recipe).
    Cosine: lr x (1 + cos(pi x progress / epochs)) / 2, updated every step (Loshchilov and Hutter).

    ``schedule.warmup_steps`` > 0: ``schedule.warmup_lr`` for the first that many steps, then the schedule
    (He et al. 2016's ResNet-110 recipe: 0.01 until the training error is below 80%, about 400 iterations).
    ``schedule.warmup_mode=linear``: at step s < warmup_steps, warmup_lr + (scheduled - warmup_lr) x s / warmup_steps,
    a per-step line from warmup_lr (step 0) to the schedule's own value (reached at step warmup_steps)."""
    warmup = getattr(schedule, "warmup_steps", 0)
    step = _step_of(progress, steps_per_epoch)
    if warmup and step < warmup:
        if getattr(schedule, "warmup_mode", "constant") != "linear":
            return schedule.warmup_lr
        scheduled = _scheduled(schedule, progress, epochs)
        return schedule.warmup_lr + (scheduled - schedule.warmup_lr) * step / warmup
    return _scheduled(schedule, progress, epochs)


def _scheduled(schedule: DictConfig, progress: float, epochs: int) -> float:
    """The step or cosine schedule's learning rate at ``progress``, without warm-up."""
    if schedule.name == "step":
        passed = sum(int(progress) >= m for m in milestone_epochs(schedule.milestones, epochs))
        return schedule.lr * schedule.gamma**passed
    if schedule.name == "cosine":
        return schedule.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress / epochs, 1.0)))
    raise ValueError(f"schedule.name={schedule.name!r} is not known: use step or cosine")


def drop_strength(curriculum: DictConfig, progress: float, epochs: int, steps_per_epoch: int = 1) -> float:
    """Curriculum: 1 (none); a linear ramp 0 -> 1 over ``ramp_fraction`` of the run (the paper's "linearly
    decrease the data retaining rate", as DropBlock does); or Morerio et al.'s (2017) exponential form
    1 - exp(-gamma x step), their theta(t) = (1 - theta_bar) exp(-gamma t) + theta_bar written as a strength,
    with ``gamma`` per optimizer step. Updated every step or at every epoch start (``per``)."""
    if curriculum.name == "none":
        return 1.0
    if curriculum.per == "epoch":
        progress = math.floor(progress)
    if curriculum.name == "linear":
        return min(1.0, progress / (curriculum.ramp_fraction * epochs))
    if curriculum.name == "exponential":
        return 1.0 - math.exp(-curriculum.gamma * _step_of(progress, steps_per_epoch))
    raise ValueError(f"curriculum.name={curriculum.name!r} is not known: use none, linear or exponential")


def steps_to_strength(gamma: float, strength: float) -> float:
    """Steps the exponential curriculum needs to reach ``strength`` (< 1): -ln(1 - strength) / gamma."""
    return -math.log(1.0 - strength) / gamma
