"""``nn.Module`` forms of the five drop methods, in the style of timm's ``DropBlock2d``.

Each layer is the identity in eval mode (unless inside :func:`selectscale.drop.apply_at_inference`)
and holds no parameters and no state-dict entries. The drop amount scales with two numbers:

* ``rate_scale`` (fixed at construction), e.g. 0.5 for ResNet-50's third group (Section 3.5);
* ``strength`` (changed during training by :func:`selectscale.drop.set_drop_strength`), e.g. the
  linear curriculum ramp of Morerio et al. (2017) used in Tables 3 and 4.

effective retain = 1 - rate_scale * strength * (1 - retain_rate), so strength 0 is the identity.
The top rate is never scaled. ``strength`` lives in a non-persistent 0-dim buffer: changing it is
an in-place fill, with no host-device synchronisation and no ``torch.compile`` recompilation.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from . import dropblock, functional


class DropLayer(nn.Module):
    """Base class of the drop layers: strength, rate scaling, train/eval switch, argument checks.

    ``selective`` (a class attribute the engine reads, never a name list): whether the layer ranks the maps
    by the paper's score and takes ``top_rate`` and the score arguments."""

    selective: ClassVar[bool] = False

    def __init__(self, retain_rate: float, rate_scale: float = 1.0) -> None:
        super().__init__()
        functional.check_rate("retain_rate", retain_rate)
        functional.check_rate("rate_scale", rate_scale)
        self.retain_rate = float(retain_rate)
        self.rate_scale = float(rate_scale)
        self.active_at_inference = False  # set by apply_at_inference (Figure 3)
        self.register_buffer("drop_strength", torch.ones(()), persistent=False)

    @property
    def strength(self) -> float:
        """Current drop strength in [0, 1] (reading it synchronises with the device)."""
        return float(self.drop_strength)

    @strength.setter
    def strength(self, value: float) -> None:
        functional.check_rate("strength", value)
        self.drop_strength.fill_(value)

    def effective_retain_rate(self) -> Tensor:
        """1 - rate_scale * strength * (1 - retain_rate), a float32 0-dim tensor."""
        drop_amount = self.rate_scale * (1.0 - self.retain_rate)
        return 1.0 - drop_amount * self.drop_strength.float()

    def forward(self, y: Tensor) -> Tensor:
        functional.check_feature_maps(y)
        if not (self.training or self.active_at_inference):
            return y
        return self._drop(y, self.effective_retain_rate())

    def _drop(self, y: Tensor, retain: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"retain_rate={self.retain_rate}, rate_scale={self.rate_scale}"


class Dropout(DropLayer):
    """Standard dropout on feature maps, eq. (2): each element kept with probability p, x 1/p."""

    def _drop(self, y: Tensor, retain: Tensor) -> Tensor:
        return functional.dropout(y, retain)


class SpatialDropout(DropLayer):
    """SpatialDropout (Tompson et al. 2015), eq. (3): each whole map kept with probability p, x 1/p."""

    def _drop(self, y: Tensor, retain: Tensor) -> Tensor:
        return functional.spatial_dropout(y, retain)


class SpatialScale(DropLayer):
    """SpatialScale, eq. (5): every map x u, u ~ Uniform(rho, 2 - rho) with rho = ``retain_rate``.

    The paper's eq. (5) writes Uniform(1 - q, 1 + q); its captions call rho = 1 - q the retaining
    rate ("retaining rate 0 means Uniform(0, 2)"). We expose rho, so rho = 1 is no regularization.
    """

    def _drop(self, y: Tensor, retain: Tensor) -> Tensor:
        return functional.spatial_scale(y, retain)


class DropBlock(DropLayer):
    """DropBlock (Ghiasi et al. 2018), which the paper follows for ResNet-50: every map loses
    ``block_size`` x ``block_size`` blocks, corners drawn where a block fits at Ghiasi et al.'s rate gamma
    (their eq. 1) for retain rate p, and the output is rescaled by the kept fraction
    (:func:`selectscale.drop.dropblock.drop_block`)."""

    def __init__(self, retain_rate: float, block_size: int = 7, rate_scale: float = 1.0) -> None:
        super().__init__(retain_rate, rate_scale)
        dropblock.check_block_size(block_size)
        self.block_size = block_size

    def _drop(self, y: Tensor, retain: Tensor) -> Tensor:
        return dropblock.drop_block(y, retain, self.block_size)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, block_size={self.block_size}"


def set_selection_arguments(layer: nn.Module, top_rate: float, score: str, nonnegative_input: bool,
                            score_window: int, score_stride: int, rounding: str) -> None:
    """Check the selection's arguments (Section 2.3) and store them on ``layer``: shared by every selective layer
    (SelectScale, Selectout, Selective); ``ValueError`` names the bad one."""
    functional.check_rate("top_rate", top_rate)
    functional.check_rounding(rounding)
    if score not in functional.SCORES:
        raise ValueError(f"score={score!r} is not known: use one of {', '.join(functional.SCORES)}")
    for name, value in (("score_window", score_window), ("score_stride", score_stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is invalid: it must be an integer >= 1")
    layer.top_rate = float(top_rate)
    layer.score = score
    layer.nonnegative_input = bool(nonnegative_input)  # set by models and insert_drops after a ReLU
    layer.score_window = score_window
    layer.score_stride = score_stride
    layer.rounding = rounding  # how t * C (and Selectout's (1 - p) * C) become counts


def selection_repr(layer) -> str:
    """The score arguments of a selective layer that differ from the paper's defaults, for ``extra_repr``."""
    text = f"score={layer.score}"
    if layer.score == "avgpool":
        text += f", score_window={layer.score_window}, score_stride={layer.score_stride}"
    if layer.nonnegative_input:
        text += ", nonnegative_input=True"
    if layer.rounding != "round":
        text += f", rounding={layer.rounding}"
    return text


class _SelectiveDropLayer(DropLayer):
    """Shared arguments of the selective methods: top rate, the score of Section 2.3, and the rounding of
    the counts (``round``: the paper's round(t * C), half up; ``floor`` and ``ceil``: the other readings)."""

    selective = True

    def __init__(
        self,
        top_rate: float,
        retain_rate: float,
        rate_scale: float = 1.0,
        score: str = "max",
        nonnegative_input: bool = False,
        score_window: int = 3,
        score_stride: int = 1,
        rounding: str = "round",
    ) -> None:
        super().__init__(retain_rate, rate_scale)
        set_selection_arguments(self, top_rate, score, nonnegative_input, score_window, score_stride, rounding)

    def _score_kwargs(self) -> dict:
        return dict(
            score=self.score,
            nonnegative_input=self.nonnegative_input,
            score_window=self.score_window,
            score_stride=self.score_stride,
            rounding=self.rounding,
        )

    def extra_repr(self) -> str:
        return f"top_rate={self.top_rate}, {super().extra_repr()}, {selection_repr(self)}"


class Selectout(_SelectiveDropLayer):
    """Selectout, eq. (4): per sample, drop round((1 - p) * C) maps chosen at random among the
    top round(t * C) by score; every kept map x 1/p. Requires 1 - p <= t."""

    def __init__(self, top_rate: float, retain_rate: float, rate_scale: float = 1.0, **score_kwargs) -> None:
        super().__init__(top_rate, retain_rate, rate_scale, **score_kwargs)
        functional.check_selectout_rates(self.top_rate, self.retain_rate, self.rate_scale)

    def _drop(self, y: Tensor, retain: Tensor) -> Tensor:
        return functional.selectout(y, self.top_rate, retain, **self._score_kwargs())


class SelectScale(_SelectiveDropLayer):
    """SelectScale, eq. (6): per sample, the top round(t * C) maps by score are each x u,
    u ~ Uniform(rho, 2 - rho) i.i.d. (rho = ``retain_rate``, see :class:`SpatialScale`); other maps
    are unchanged. The paper's main method; it suggests top_rate 0.1 or 0.2 (Section 4)."""

    def _drop(self, y: Tensor, retain: Tensor) -> Tensor:
        return functional.select_scale(y, self.top_rate, retain, **self._score_kwargs())
