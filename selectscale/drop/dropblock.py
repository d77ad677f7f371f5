"""DropBlock (Ghiasi, Lin and Le 2018), the block-wise drop the paper follows for ResNet-50 (Section 3.5).

Every (sample, channel) map loses square blocks of ``block_size`` x ``block_size`` positions. Block corners are
drawn only where the whole block fits inside the map, each with probability gamma (Ghiasi et al., eq. 1):

    gamma = (1 - p) / block_size^2 * (H * W) / ((H - block_size + 1) * (W - block_size + 1))

so that about a fraction 1 - p of the positions is dropped (fewer where blocks overlap), and the output is
rescaled by the kept fraction, ``numel / sum(mask)`` over the tensor it masks (Ghiasi et al.'s Algorithm 1).
A block larger than the map is clipped to the map (as timm's ``drop_block_2d`` does), so a 7 x 7 block still
acts on 4 x 4 maps. ``retain_rate`` p may be a float or a 0-dim tensor (curriculum strength without a sync).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .functional import Rate, _as_tensor, _check_rates, check_feature_maps


def check_block_size(block_size: int) -> None:
    """Raise ``ValueError`` unless ``block_size`` is an integer >= 1."""
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size={block_size!r} is invalid: it must be an integer >= 1 (Ghiasi et al.: 7)")


def block_seed_rate(retain: Tensor, block_size: int, height: int, width: int) -> Tensor:
    """gamma of Ghiasi et al.'s eq. (1), a float32 0-dim tensor in [0, 1]; ``block_size`` already clipped."""
    valid = (height - block_size + 1) * (width - block_size + 1)
    return ((1.0 - retain) * (height * width) / (block_size**2 * valid)).clamp(0.0, 1.0)


def drop_block_mask(y: Tensor, retain_rate: Rate, block_size: int) -> Tensor:
    """The kept-position mask (1 kept, 0 dropped), float32, N x C x H x W, without gradient."""
    batch, channels, height, width = y.shape
    size = min(block_size, height, width)
    retain = _as_tensor(retain_rate, y)
    with torch.no_grad():
        gamma = block_seed_rate(retain, size, height, width)
        corners = torch.rand(batch, channels, height - size + 1, width - size + 1, device=y.device) < gamma
        # A corner at (i, j) drops rows i..i+size-1 and columns j..j+size-1: a max over the size x size window
        # that ends at each position, i.e. max pooling of the corner grid zero-padded by size - 1 on every side
        # (explicitly: max_pool2d's own padding is limited to half the kernel).
        dropped = corners.float()
        if size > 1:
            dropped = F.max_pool2d(F.pad(dropped, (size - 1,) * 4), size, stride=1)
        return 1.0 - dropped


def masked_and_rescaled(y: Tensor, mask: Tensor) -> Tensor:
    """``y * mask * numel / sum(mask)`` in y's dtype and memory format; all zeros when nothing is kept."""
    kept = mask.sum()
    scale = torch.where(kept > 0, mask.numel() / kept.clamp_min(1.0), torch.zeros_like(kept))
    if y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous():
        mask = mask.contiguous(memory_format=torch.channels_last)
    return y * (mask * scale).to(y.dtype)


def drop_block(y: Tensor, retain_rate: Rate, block_size: int = 7) -> Tensor:
    """DropBlock: every map loses ``block_size`` x ``block_size`` blocks at rate gamma (Ghiasi et al. eq. 1),
    the output is rescaled by the kept fraction. ``retain_rate`` = 1 is the identity."""
    check_feature_maps(y)
    _check_rates(retain_rate=retain_rate)
    check_block_size(block_size)
    return masked_and_rescaled(y, drop_block_mask(y, retain_rate, block_size))
