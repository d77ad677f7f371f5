"""Functional forms of the paper's five drop methods (Section 2, equations 2-6).

Every function takes a 4-D feature tensor ``y`` (N x C x H x W) and returns ``y`` times a
random factor: one per element (dropout) or one per (sample, channel) feature map (all others).
The factors are built without gradient, so autograd's backward multiplies the incoming gradient
by the very same factors: the selection and the random draws are constants of the step.

Rates may be Python floats or 0-dim tensors. The layers in :mod:`selectscale.drop.layers` pass
tensors, so that the drop strength can change every step (curriculum) without a host-device
synchronisation or a ``torch.compile`` recompilation.

Notation (see ``docs/reproduction.md``): ``retain_rate`` is the paper's retaining rate. For
dropout, SpatialDropout and Selectout it is p, the probability (or fraction) of kept units. For
SpatialScale and SelectScale it is rho in the captions' sense: factors come from
Uniform(rho, 2 - rho), i.e. equation (5)'s Uniform(1 - q, 1 + q) with q = 1 - rho. So for every
method ``retain_rate = 1`` means "no regularization".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SCORES = ("max", "mean", "avgpool")
ROUNDINGS = ("round", "floor", "ceil")  # how k = t * C (and Selectout's m = (1 - p) * C) become counts

# Added before flooring in round-half-up so that an exact x.5 computed as x.4999... still rounds up.
# Python floats (double) need 1e-9; the per-step drop count of Selectout is a float32 tensor, whose
# error on (1 - p) * C is below 1e-4 for C up to ~1,600 channels.
_ROUND_EPS = 1e-9
_ROUND_EPS_FLOAT32 = 1e-4

Rate = float | Tensor


def round_half_up(value: float) -> int:
    """Round half up, ``floor(value + 0.5)``, as the paper's counts round(t * C) are defined here."""
    return int(math.floor(value + 0.5 + _ROUND_EPS))


def check_rounding(rounding: str) -> None:
    """Raise ``ValueError`` unless ``rounding`` is one of :data:`ROUNDINGS`."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding={rounding!r} is not known: use one of {', '.join(ROUNDINGS)}")


def round_count(value: float, rounding: str = "round") -> int:
    """``value`` (a count such as t * C) as an integer: half up (``round``), ``floor`` or ``ceil``. The
    tolerance keeps an exact product computed as x.9999... or x.0000...1 on its integer."""
    check_rounding(rounding)
    if rounding == "floor":
        return int(math.floor(value + _ROUND_EPS))
    if rounding == "ceil":
        return int(math.ceil(value - _ROUND_EPS))
    return round_half_up(value)


def num_top_maps(top_rate: float, channels: int, rounding: str = "round") -> int:
    """Candidates k = round(top_rate * C), at least 1 when top_rate > 0 (Section 2.3). The paper writes
    round(); ``rounding="floor"`` or ``"ceil"`` are the other readings (``drop.rounding``)."""
    if top_rate <= 0:
        return 0
    return min(channels, max(1, round_count(top_rate * channels, rounding)))


def _dropped_count(retain: Tensor, channels: int, rounding: str) -> Tensor:
    """Selectout's m = (1 - p) * C as a float32 tensor count, rounded as ``rounding`` says (no host sync)."""
    value = (1.0 - retain) * channels
    if rounding == "floor":
        return torch.floor(value + _ROUND_EPS_FLOAT32)
    if rounding == "ceil":
        return torch.ceil(value - _ROUND_EPS_FLOAT32)
    return torch.floor(value + 0.5 + _ROUND_EPS_FLOAT32)


def check_rate(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} is out of range: it must be a number in [0, 1]")


def check_feature_maps(y: Tensor) -> None:
    """Raise ``ValueError`` unless ``y`` is N x C x H x W."""
    if y.dim() != 4:
        raise ValueError(
            f"input has shape {tuple(y.shape)} ({y.dim()}-D): drop layers expect a 4-D N x C x H x W tensor"
        )


def check_selectout_rates(top_rate: float, retain_rate: float, rate_scale: float = 1.0) -> None:
    """Selectout cannot drop more maps than it has candidates: rate_scale * (1 - p) <= t."""
    max_drop = rate_scale * (1.0 - retain_rate)
    if max_drop > top_rate + 1e-9:
        raise ValueError(
            f"retain_rate={retain_rate} is too low for Selectout: with rate_scale={rate_scale} it drops "
            f"{max_drop:.3g} of the maps but top_rate={top_rate} offers fewer candidates: need "
            "1 - retain_rate <= top_rate / rate_scale"
        )


def _check_rates(**rates: Rate) -> None:
    for name, value in rates.items():
        if not isinstance(value, Tensor):
            check_rate(name, value)


def _as_tensor(rate: Rate, like: Tensor) -> Tensor:
    """A float32 0-dim tensor on ``like``'s device (float32 so that bf16 inputs keep exact rates)."""
    return torch.as_tensor(rate, dtype=torch.float32, device=like.device).float()


def _inverse_or_zero(retain: Tensor) -> Tensor:
    """1 / p, and 0 where p = 0: with nothing retained the output is all zeros, never NaN."""
    return torch.where(retain > 0, 1.0 / retain.clamp_min(1e-12), torch.zeros_like(retain))


def _apply_map_factors(y: Tensor, factors: Tensor) -> Tensor:
    """y times an N x C factor per feature map, in y's dtype; keeps y's memory format."""
    return y * factors.to(y.dtype)[:, :, None, None]


def _uniform_factors(retain: Tensor, shape: tuple[int, int], device: torch.device) -> Tensor:
    """Factors u ~ Uniform(rho, 2 - rho) = 1 + q * (2 * U(0, 1) - 1) with q = 1 - rho (eq. 5)."""
    spread = 1.0 - retain
    return 1.0 + spread * (2.0 * torch.rand(shape, device=device) - 1.0)


# Below this many channels, a channels-last reduction over H x W is pathologically slow on CPU (128 x 16 x
# 32 x 32: 5.68 ms against 0.124 ms for NCHW, `python scripts/profile_train.py --scores`): rows of C floats
# are too short for its vectorised path.
_NARROW_CHANNELS = 64
_ROW_FLOATS = 128  # reduce rows of at least this many values instead


def _is_narrow_channels_last(y: Tensor) -> bool:
    return (y.device.type == "cpu" and y.shape[1] < _NARROW_CHANNELS and not y.is_contiguous()
            and y.is_contiguous(memory_format=torch.channels_last))


def _plain_reduce(y: Tensor, reduction) -> Tensor:
    return reduction(y, dim=(2, 3))


def _channels_last_reduce(y: Tensor, reduction) -> Tensor:
    """``reduction`` (amax or amin) over H x W of a channels-last tensor, exactly, in two passes: first
    over rows of ``group`` neighbouring positions x C channels (long contiguous rows), then over the group."""
    batch, channels, height, width = y.shape
    positions, group = height * width, 1
    while group * channels < _ROW_FLOATS and positions % (2 * group) == 0:
        group *= 2
    rows = y.permute(0, 2, 3, 1).reshape(batch, positions // group, group * channels)  # a view: no copy
    return reduction(reduction(rows, dim=1).view(batch, group, channels), dim=1)


def feature_map_scores(
    y: Tensor,
    score: str = "max",
    nonnegative_input: bool = False,
    score_window: int = 3,
    score_stride: int = 1,
) -> Tensor:
    """Importance score of every feature map, N x C, float32, without gradient (Section 2.3).

    ``"max"``: max |y| over H x W (the paper's choice). ``"mean"``: global average of |y|.
    ``"avgpool"``: average pooling (``score_window``, ``score_stride``) of |y|, then the maximum.
    ``nonnegative_input=True`` skips the absolute value (inputs after ReLU), as the paper allows.
    """
    if score not in SCORES:
        raise ValueError(f"score={score!r} is not known: use one of {', '.join(SCORES)}")
    with torch.no_grad():
        y = y.detach()
        if score == "max":
            # max |y| = max(max y, -min y): two vectorised reductions and no |y| temporary; measured
            # 25x faster on CPU than torch.linalg.vector_norm(y, inf), which has no fast path.
            reduce = _channels_last_reduce if _is_narrow_channels_last(y) else _plain_reduce
            scores = reduce(y, torch.amax)
            if not nonnegative_input:
                scores = torch.maximum(scores, reduce(y, torch.amin).neg())
        else:
            magnitude = y if nonnegative_input else y.abs()
            if score == "mean":
                scores = magnitude.mean(dim=(2, 3), dtype=torch.float32)
            else:
                pooled = F.avg_pool2d(magnitude, score_window, score_stride)
                scores = pooled.amax(dim=(2, 3))
    return scores.float()


_TIE_BITS = 31  # random bits below the 32 score bits; two tied maps draw equal noise with probability 2^-31


def tie_broken_keys(scores: Tensor) -> Tensor:
    """int64 keys that order like ``scores`` (float32, N x C) with ties between equal scores broken at random.

    The high bits are the float's bits mapped to a monotonic integer (IEEE-754 order: negatives reversed),
    the low 31 bits uniform random, so distinct scores keep their exact order and among equal scores every
    ordering is equally likely. ``torch.topk`` alone would always pick the lowest channel index among ties
    (all-zero maps after ReLU; many maps under bf16 autocast, whose rounded maps tie often).
    """
    bits = (scores.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0: the two must tie
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    noise = torch.randint(0, 1 << _TIE_BITS, scores.shape, device=scores.device, dtype=torch.int64)
    return ordered * (1 << _TIE_BITS) + noise


def top_map_indices(scores: Tensor, top_rate: float, rounding: str = "round") -> Tensor:
    """Indices (N x k) of the k = round(top_rate * C) highest-scoring maps of every sample; among equal
    scores at the boundary the choice is uniformly random (:func:`tie_broken_keys`)."""
    k = num_top_maps(top_rate, scores.shape[1], rounding)
    if k == scores.shape[1]:
        return torch.arange(k, device=scores.device).expand(scores.shape[0], k)  # every map: nothing to rank
    return tie_broken_keys(scores).topk(k, dim=1, sorted=False).indices


def dropout(y: Tensor, retain_rate: Rate) -> Tensor:
    """Standard dropout, eq. (2): each element kept with probability p, kept ones x 1/p."""
    check_feature_maps(y)
    _check_rates(retain_rate=retain_rate)
    retain = _as_tensor(retain_rate, y)
    # One fused Bernoulli draw in y's dtype and memory format, scaled in place: the fastest of the
    # eager variants measured on CPU (F.dropout needs a Python float p, i.e. a device sync per call).
    factors = torch.empty_like(y).bernoulli_(retain).mul_(_inverse_or_zero(retain))
    return y * factors


def spatial_dropout(y: Tensor, retain_rate: Rate) -> Tensor:
    """SpatialDropout, eq. (3): each (sample, channel) map kept with probability p, kept ones x 1/p."""
    check_feature_maps(y)
    _check_rates(retain_rate=retain_rate)
    retain = _as_tensor(retain_rate, y)
    keep = torch.rand(y.shape[:2], device=y.device) < retain
    return _apply_map_factors(y, keep * _inverse_or_zero(retain))


def spatial_scale(y: Tensor, retain_rate: Rate) -> Tensor:
    """SpatialScale, eq. (5): every map x u, u ~ Uniform(rho, 2 - rho), i.i.d. per (sample, channel)."""
    check_feature_maps(y)
    _check_rates(retain_rate=retain_rate)
    retain = _as_tensor(retain_rate, y)
    return _apply_map_factors(y, _uniform_factors(retain, y.shape[:2], y.device))


def selectout(
    y: Tensor,
    top_rate: float,
    retain_rate: Rate,
    score: str = "max",
    nonnegative_input: bool = False,
    score_window: int = 3,
    score_stride: int = 1,
    rounding: str = "round",
) -> Tensor:
    """Selectout, eq. (4): among the top k = round(t * C) maps of each sample, drop
    m = round((1 - p) * C) chosen uniformly at random; every kept map is multiplied by 1 / p.

    Requires 1 - p <= t: it cannot drop more maps than it has candidates. ``rounding`` (round, floor,
    ceil) turns both t * C and (1 - p) * C into counts.
    """
    check_feature_maps(y)
    _check_rates(top_rate=top_rate, retain_rate=retain_rate)
    if not isinstance(retain_rate, Tensor):
        check_selectout_rates(top_rate, retain_rate)
    retain = _as_tensor(retain_rate, y)
    scores = feature_map_scores(y, score, nonnegative_input, score_window, score_stride)
    candidates = top_map_indices(scores, top_rate, rounding)  # N x k
    num_dropped = _dropped_count(retain, y.shape[1], rounding)
    # A uniformly random subset of size m of the k candidates: those whose random rank is below m.
    random_rank = torch.rand(candidates.shape, device=y.device).argsort(dim=1).argsort(dim=1)
    inverse_retain = _inverse_or_zero(retain)
    candidate_factors = torch.where(random_rank < num_dropped, 0.0, inverse_retain)
    factors = (torch.ones_like(scores) * inverse_retain).scatter(1, candidates, candidate_factors)
    return _apply_map_factors(y, factors)


def select_scale(
    y: Tensor,
    top_rate: float,
    retain_rate: Rate,
    score: str = "max",
    nonnegative_input: bool = False,
    score_window: int = 3,
    score_stride: int = 1,
    rounding: str = "round",
) -> Tensor:
    """SelectScale, eq. (6): the top k = round(t * C) maps of each sample by score are each
    multiplied by u ~ Uniform(rho, 2 - rho), i.i.d.; every other map is unchanged. ``rounding``: how
    t * C becomes k (round half up, floor or ceil).
    """
    check_feature_maps(y)
    _check_rates(top_rate=top_rate, retain_rate=retain_rate)
    retain = _as_tensor(retain_rate, y)
    scores = feature_map_scores(y, score, nonnegative_input, score_window, score_stride)
    candidates = top_map_indices(scores, top_rate, rounding)
    candidate_factors = _uniform_factors(retain, candidates.shape, y.device)
    factors = torch.ones_like(scores).scatter(1, candidates, candidate_factors)
    return _apply_map_factors(y, factors)
