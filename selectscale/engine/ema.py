"""An exponential moving average of the weights (``trainer.ema_decay``), evaluated beside the raw model.

``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(decay)`` and ``use_buffers=True``: the
parameters AND the buffers (BatchNorm's running statistics) are averaged, so the averaged network is evaluated as
it is, with no BatchNorm recalibration pass. Updated after every ``ema_every``-th optimizer step (global step count,
so a resumed run updates at the same steps); AveragedModel's first update copies the weights, each later one is
ema = decay x ema + (1 - decay) x weights. Its state (the averaged module and ``n_averaged``) is saved in the
run's checkpoint and restored on resume. The averaged copy is of the unwrapped model (not DDP, not compiled); its
drop layers are evaluated off, as the raw model's.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .steps import evaluate

# The evaluation keys of the averaged model in the epoch record and result.json: the raw model's, suffixed.
EMA_SUFFIX = "_ema"
EMA_RESULT_KEYS = ("test_top1_error_ema", "test_top5_error_ema", "test_loss_ema")


class WeightAverage:
    """The EMA of ``model``'s parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float, every: int = 1) -> None:
        self.decay, self.every = float(decay), int(every)
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """The averaged network (evaluate it like the model)."""
        return self.averaged.module

    @torch.no_grad()
    def after_step(self, model: nn.Module, global_step: int) -> None:
        """Called after each optimizer step with the steps done so far (1 after the first)."""
        if global_step % self.every == 0:
            self.averaged.update_parameters(model)

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)

    def evaluate(self, loader, device: torch.device, autocast_type: str | None) -> dict:
        """:func:`selectscale.engine.steps.evaluate` of the averaged network, its keys suffixed ``_ema``
        (``test_top1_error_ema`` ...; ``test_images`` is the raw model's)."""
        record = evaluate(self.module, loader, device, autocast_type)
        return {f"{key}{EMA_SUFFIX}": value for key, value in record.items() if key != "test_images"}


def build_ema(trainer, model: nn.Module) -> WeightAverage | None:
    """The EMA the trainer config asks for (``ema_decay``, ``ema_every``), or None (off) when ema_decay is null."""
    decay = trainer.get("ema_decay")
    return None if decay is None else WeightAverage(model, decay, trainer.get("ema_every", 1))
