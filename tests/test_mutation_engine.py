"""The learning-rate schedule reaching the optimizer at every step of a real ``fit`` (mutants of the second
``make mutation`` run: ``selectscale.engine.steps._set_progress``; docs/mutation.md).

tests/test_engine_config.py and tests/test_fidelity_switches.py check ``schedule.learning_rate`` as a function;
tests/test_fidelity_pins.py checks the drop strength the layers hold during a fit. Nothing checked that the value
``_set_progress`` computes is the one SGD uses at each step, with the run's own ``epochs`` and ``steps_per_epoch``
(warm-up counts optimizer steps, not epochs). A forward pre-hook cannot see that: here a global optimizer step
pre-hook records every param group's ``lr`` just before each ``optimizer.step()`` of the trainer's SGD, i.e. the
learning rate the update is made with. The expected values are written out from the paper's recipe (lr 0.1; step
schedule x0.2 at 30/60/80 % of the run; cosine to 0), not computed by ``learning_rate``.
"""

from __future__ import annotations

import math

import pytest
from fault_helpers import make_cfg, metrics
from torch.optim.optimizer import register_optimizer_step_pre_hook

from selectscale.engine import fit, register_configs

register_configs()

STEPS_PER_EPOCH = 2  # fault_helpers' tiny run: 32 synthetic images, batch 16


def _lr_at_every_step(run_dir, *overrides: str) -> list[float]:
    """Train the tiny run (resnet8, no drop) and return the lr of the optimizer at each of its steps (one value
    per step: every param group must hold the same)."""
    seen: list[list[float]] = []
    handle = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: seen.append([group["lr"] for group in optimizer.param_groups]))
    try:
        fit(make_cfg(run_dir, "model=resnet8", "drop=none", *overrides))
    finally:
        handle.remove()
    assert all(len(set(groups)) == 1 for groups in seen), "param groups hold different learning rates"
    return [groups[0] for groups in seen]


def _cosine(step: int, epochs: int) -> float:
    return 0.1 * 0.5 * (1.0 + math.cos(math.pi * (step / STEPS_PER_EPOCH) / epochs))


def test_optimizer_follows_the_cosine_schedule_at_every_step_of_a_fit(tmp_path):
    """Kills _set_progress mutants 8 and 9 (``progress`` or ``epochs`` not passed: the cosine is evaluated at the
    wrong point of the run, a constant 0 or a curve over 2 epochs instead of 3) and 12/13 (``group["lr"]`` not
    written: SGD keeps its initial 0.1 for the whole run). Cosine annealing updated every step is Table 3's "CA"
    recipe: the lr SGD uses must be lr x (1 + cos(pi t / T)) / 2 at every step t."""
    epochs = 3
    lrs = _lr_at_every_step(tmp_path / "cosine", "schedule=cosine", f"trainer.epochs={epochs}")
    want = [_cosine(step, epochs) for step in range(epochs * STEPS_PER_EPOCH)]
    assert lrs == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert lrs[0] == 0.1 and lrs[-1] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 5 / 6)))
    # metrics.jsonl reports the lr of each epoch's first step: the one the optimizer used
    assert [record["lr"] for record in metrics(tmp_path / "cosine")] == pytest.approx(lrs[::STEPS_PER_EPOCH])


def test_optimizer_holds_the_warmup_lr_for_warmup_steps_optimizer_steps_then_the_step_schedule(tmp_path):
    """Kills _set_progress mutants 6 (``steps_per_epoch=None``: the warm-up check raises), 10 (``steps_per_epoch``
    not passed: warm-up counted in epochs, so 3 warm-up *steps* become 3 *epochs*), 8 and 9 (the step schedule's
    milestones taken from the wrong epoch count or progress) and 12/13 (lr never reaches SGD). He et al. (2016)'s
    ResNet-110 recipe warms up for a number of iterations (``schedule.warmup_steps``); then the paper's CIFAR step
    schedule, lr 0.1, x0.2 at 30, 60 and 80 % of the run: with 5 epochs the milestones are epochs 2, 3 and 4
    (round(1.5), 3, 4)."""
    lrs = _lr_at_every_step(tmp_path / "step", "schedule=step_cifar", "trainer.epochs=5",
                            "schedule.warmup_steps=3", "schedule.warmup_lr=0.01")
    #         epoch 0      | epoch 1     | epoch 2     | epoch 3       | epoch 4
    want = [0.01, 0.01, 0.01, 0.1, 0.02, 0.02, 0.004, 0.004, 0.0008, 0.0008]
    assert lrs == pytest.approx(want, rel=1e-12)
    assert [record["lr"] for record in metrics(tmp_path / "step")] == pytest.approx(lrs[::STEPS_PER_EPOCH])


def test_warmup_counts_optimizer_steps_within_a_cosine_run(tmp_path):
    """Kills _set_progress mutants 6 and 10 under the cosine schedule too: warm-up ends at step ``warmup_steps``,
    mid-epoch (step 3 is the second step of epoch 1), and the cosine continues from where it would have been."""
    epochs = 3
    lrs = _lr_at_every_step(tmp_path / "warm_cosine", "schedule=cosine", f"trainer.epochs={epochs}",
                            "schedule.warmup_steps=3", "schedule.warmup_lr=0.01")
    want = [0.01, 0.01, 0.01] + [_cosine(step, epochs) for step in range(3, epochs * STEPS_PER_EPOCH)]
    assert lrs == pytest.approx(want, rel=1e-12)
