"""The "selecting version" of any map-wise drop method (the paper's Conclusion): the method acts only on the
top round(t * C) maps of each sample by the paper's score (Section 2.3) and every other map passes unchanged.

``Selective(SpatialScale(rho), top_rate=t)`` is SelectScale (eq. 6) in distribution (tested); the dedicated
:class:`~selectscale.drop.SelectScale` stays because it is faster (it scales in place instead of gathering and
scattering the selected maps: ``make bench-drop``). ``SelectDropBlock`` is DropBlock on the selected maps.

>>> import torch
>>> from selectscale.drop import DropBlock, Selective
>>> layer = Selective(DropBlock(retain_rate=0.9, block_size=3), top_rate=0.2)
>>> layer(torch.randn(2, 16, 8, 8)).shape
torch.Size([2, 16, 8, 8])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from torch import Tensor, nn

from . import functional
from .layers import DropBlock, DropLayer, selection_repr, set_selection_arguments


def selective(
    y: Tensor,
    drop: Callable[[Tensor], Tensor],
    top_rate: float,
    score: str = "max",
    nonnegative_input: bool = False,
    score_window: int = 3,
    score_stride: int = 1,
    rounding: str = "round",
) -> Tensor:
    """``drop`` applied to the top k = round(t * C) maps of every sample (Section 2.3's score, ``rounding``,
    random tie-breaking as in SelectScale), the other maps unchanged.

    ``drop`` receives the selected maps as an N x k x H x W tensor (sample i's k best maps in channel slots
    0..k-1, in no particular order), so it must treat maps independently of their channel index: every
    map-wise method here does. Gradients reach ``y`` through the same factors (gather, then scatter back).
    """
    functional.check_feature_maps(y)
    scores = functional.feature_map_scores(y, score, nonnegative_input, score_window, score_stride)
    chosen = functional.top_map_indices(scores, top_rate, rounding)  # N x k
    if chosen.shape[1] == 0:
        return y
    index = chosen[:, :, None, None].expand(-1, -1, *y.shape[2:])
    # Out-of-place scatter returns a contiguous tensor; a clone (preserve_format, its default) keeps a channels-last
    # input channels-last.
    return y.clone().scatter_(1, index, drop(y.gather(1, index)))


class Selective(nn.Module):
    """A selecting version of ``base`` (a map-wise drop layer such as DropBlock, SpatialDropout or your own
    :class:`~selectscale.drop.DropLayer`): ``base`` acts on the top round(t * C) maps of every sample only.

    ``base`` stays a child module, so :func:`~selectscale.drop.set_drop_strength` (curriculum),
    :func:`~selectscale.drop.apply_at_inference` and ``rate_scale`` act through it; in eval mode the wrapper
    is the identity like every drop layer. No parameters, no state-dict entries.
    """

    selective: ClassVar[bool] = True

    def __init__(
        self,
        base: DropLayer,
        top_rate: float,
        score: str = "max",
        nonnegative_input: bool = False,
        score_window: int = 3,
        score_stride: int = 1,
        rounding: str = "round",
    ) -> None:
        super().__init__()
        if not isinstance(base, DropLayer):
            raise TypeError(f"base={base!r} is not a DropLayer: wrap a map-wise drop layer, e.g. DropBlock(0.9, 3)")
        if base.selective:  # a DropLayer class attribute
            raise ValueError(f"base {type(base).__name__} already selects maps: wrap a non-selective method")
        self.base = base
        set_selection_arguments(self, top_rate, score, nonnegative_input, score_window, score_stride, rounding)

    def forward(self, y: Tensor) -> Tensor:
        functional.check_feature_maps(y)
        if not (self.base.training or self.base.active_at_inference):
            return y
        return selective(y, self.base, self.top_rate, self.score, self.nonnegative_input, self.score_window,
                         self.score_stride, self.rounding)

    def extra_repr(self) -> str:
        return f"top_rate={self.top_rate}, {selection_repr(self)}"


class SelectDropBlock(Selective):
    """SelectDropBlock: DropBlock (Ghiasi et al. 2018) on the top round(t * C) maps of every sample only; the
    kept-fraction rescaling is computed over, and applied to, the selected maps alone."""

    def __init__(
        self,
        top_rate: float,
        retain_rate: float,
        block_size: int = 7,
        rate_scale: float = 1.0,
        score: str = "max",
        nonnegative_input: bool = False,
        score_window: int = 3,
        score_stride: int = 1,
        rounding: str = "round",
    ) -> None:
        super().__init__(DropBlock(retain_rate, block_size, rate_scale), top_rate, score, nonnegative_input,
                         score_window, score_stride, rounding)
