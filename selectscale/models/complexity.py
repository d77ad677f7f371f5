"""Parameter and multiply-accumulate counts, measured by running a model (also used for MFU)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int, channels: int = 3) -> int:
    """Multiply-accumulates of one forward pass on one image (convolutions and linear layers).

    Runs under torch's FLOP counter, which counts 2 FLOPs per multiply-accumulate. The model may live
    on the meta device, so nothing is allocated or computed.
    """
    device = next(model.parameters()).device
    image = torch.empty(1, channels, image_size, image_size, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    with counter, torch.no_grad():
        model.eval()(image)
    model.train(was_training)
    return counter.get_total_flops() // 2
