"""Statistical checks of every row of the semantics table (issue 2), with fixed seeds.

Tolerances are stated next to each check as multiples of the sampling standard deviation, so a
correct implementation fails with negligible probability and a wrong rate or range cannot pass.
"""

import math

import pytest
import torch

from selectscale.drop import Dropout, Selectout, SelectScale, SpatialDropout, SpatialScale


def map_factors(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-map factor y / x (N x C), after checking it is constant over each map."""
    ratio = y / x
    per_map = ratio[:, :, :1, :1]
    assert torch.allclose(ratio, per_map.expand_as(ratio), rtol=1e-5, atol=1e-6), "factor varies inside a map"
    return per_map[:, :, 0, 0]


@pytest.mark.parametrize("retain", [0.5, 0.9])
def test_dropout_keeps_fraction_p_and_scales_by_inverse_p(retain):
    torch.manual_seed(0)
    x = torch.rand(64, 32, 16, 16) + 0.5  # strictly positive: zero in the output means dropped
    y = Dropout(retain).train()(x)
    kept = y != 0
    n = x.numel()
    # 524,288 Bernoulli draws: sd of the kept fraction <= 0.0007; allow 10 sd.
    assert abs(kept.float().mean().item() - retain) < 10 * math.sqrt(retain * (1 - retain) / n)
    assert torch.allclose(y[kept], x[kept] / retain, rtol=1e-6)
    # Elementwise, not per map: almost every map has both kept and dropped units at p = 0.5.
    if retain == 0.5:
        mixed = kept.flatten(2).any(-1) & (~kept).flatten(2).any(-1)
        assert mixed.float().mean() > 0.99


@pytest.mark.parametrize("retain", [0.5, 0.9])
def test_spatial_dropout_keeps_whole_maps_with_probability_p(retain):
    torch.manual_seed(1)
    x = torch.rand(128, 64, 4, 4) + 0.5
    factors = map_factors(x, SpatialDropout(retain).train()(x))
    kept = factors != 0
    assert torch.allclose(factors[kept], torch.full_like(factors[kept], 1 / retain), rtol=1e-6)
    n = factors.numel()  # 8,192 maps: allow 6 sd of the kept fraction
    assert abs(kept.float().mean().item() - retain) < 6 * math.sqrt(retain * (1 - retain) / n)


def check_uniform(factors: torch.Tensor, low: float, high: float) -> None:
    """Range, mean and variance of i.i.d. Uniform(low, high) samples (tolerances: 6 sd of each)."""
    n = factors.numel()
    assert factors.min() >= low - 1e-6 and factors.max() <= high + 1e-6
    width = high - low
    # The extremes of n uniform samples come within width * 10 / n of the ends with prob > 1 - e^-10.
    assert factors.min() < low + width * 10 / n and factors.max() > high - width * 10 / n
    mean_sd = width / math.sqrt(12 * n)
    assert abs(factors.mean().item() - (low + high) / 2) < 6 * mean_sd
    variance = width**2 / 12
    variance_sd = width**2 * math.sqrt(1 / 180 / n) * 2  # 4th central moment bound, doubled
    assert abs(factors.var().item() - variance) < 6 * variance_sd


@pytest.mark.parametrize("retain", [0.0, 0.4, 0.9])
def test_spatial_scale_factors_are_uniform_rho_to_two_minus_rho(retain):
    torch.manual_seed(2)
    x = torch.rand(256, 64, 2, 2) + 0.5
    factors = map_factors(x, SpatialScale(retain).train()(x))
    check_uniform(factors.flatten(), retain, 2 - retain)


def test_spatial_scale_factors_are_independent_across_samples_and_channels():
    torch.manual_seed(3)
    x = torch.ones(512, 64, 1, 1)
    factors = map_factors(x, SpatialScale(0.0).train()(x))
    centred = factors - 1
    # Correlation of neighbouring channels and samples: sd 1/sqrt(n) ~ 0.006; allow 0.05.
    channel_corr = torch.corrcoef(torch.stack([centred[:, :-1].flatten(), centred[:, 1:].flatten()]))[0, 1]
    sample_corr = torch.corrcoef(torch.stack([centred[:-1].flatten(), centred[1:].flatten()]))[0, 1]
    assert abs(channel_corr) < 0.05 and abs(sample_corr) < 0.05


def test_selectout_drops_round_one_minus_p_times_c_among_top_maps():
    torch.manual_seed(4)
    channels, top_rate, retain = 20, 0.5, 0.7  # k = 10 candidates, m = 6 dropped per sample
    x = torch.rand(4000, channels, 3, 3) + 0.5
    factors = map_factors(x, Selectout(top_rate, retain).train()(x))
    dropped = factors == 0
    assert (dropped.sum(1) == 6).all()
    assert torch.allclose(factors[~dropped], torch.full_like(factors[~dropped], 1 / retain), rtol=1e-6)
    top = x.amax((2, 3)).topk(10, dim=1).indices
    is_top = torch.zeros_like(dropped).scatter(1, top, True)
    assert not (dropped & ~is_top).any(), "a map outside the top k was dropped"
    # Uniform choice among candidates: each top-ranked position dropped with prob 6/10.
    rank_order = x.amax((2, 3)).argsort(dim=1, descending=True)[:, :10]
    per_rank = dropped.gather(1, rank_order).float().mean(0)  # 4,000 draws each: sd 0.0077
    assert (per_rank - 0.6).abs().max() < 6 * math.sqrt(0.24 / 4000)


@pytest.mark.parametrize("top_rate, retain", [(0.2, 0.0), (0.4, 0.4), (0.1, 0.1)])
def test_selectscale_scales_only_top_maps_with_uniform_factors(top_rate, retain):
    torch.manual_seed(5)
    channels = 40
    k = round(top_rate * channels)
    x = torch.rand(2000, channels, 2, 2) + 0.5
    factors = map_factors(x, SelectScale(top_rate, retain).train()(x))
    top = x.amax((2, 3)).topk(k, dim=1).indices
    is_top = torch.zeros(factors.shape, dtype=torch.bool).scatter(1, top, True)
    assert (factors[~is_top] == 1).all(), "a map outside the top k was changed"
    check_uniform(factors[is_top], retain, 2 - retain)
