"""Tests that kill the mutants the first `make mutation` run left alive (issue 34, item 1; docs/mutation.md).

Most survivors were arguments that never reached the code they configure: a selective method's score, window,
stride, ``nonnegative_input`` or rounding dropped on the way from a layer or function to the selection, a
``rate_scale`` not passed to the layer that drops, a draw made on the wrong device. Each test here checks the
effect of one such argument through every form that takes it (layer classes and functions), against the
brute-force selection reference of tests/test_drop_selection.py.
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from drop_cases import DROP_ARGS
from test_drop_selection import reference_top_set
from torch import nn

from selectscale.drop import (
    DROP_LAYERS,
    DropBlock,
    DropLayer,
    SelectDropBlock,
    Selectout,
    SelectScale,
    SpatialDropout,
    build_drop,
    drop_block,
    drop_layers,
    functional,
)
from selectscale.drop.functional import (
    dropout,
    feature_map_scores,
    num_top_maps,
    round_count,
    select_scale,
    selectout,
    spatial_dropout,
    spatial_scale,
    top_map_indices,
)
from selectscale.drop.selective import Selective, selective
from selectscale.models import create_model
from selectscale.models.cifar_resnet import CifarResNet, PaddingShortcut

# --- every selection argument reaches the selection, through every form ------------------------------------------

CHANNELS = 10
# kwargs, top rate, the reference's score arguments, k. Selectout's retain rate makes it drop m = k maps (every
# candidate) under the same rounding: 1 - p = 0.25 (2.5: round 3, floor 2, ceil 3) or 0.21 (2.1: 2, 2, 3).
CASES = {
    "defaults": ({}, 0.25, dict(score="max", nonnegative=False, window=3, stride=1), 3),
    "avgpool_default_window": ({"score": "avgpool"}, 0.25,
                               dict(score="avgpool", nonnegative=False, window=3, stride=1), 3),
    "avgpool_2x2_stride_2": ({"score": "avgpool", "score_window": 2, "score_stride": 2}, 0.25,
                             dict(score="avgpool", nonnegative=False, window=2, stride=2), 3),
    "mean": ({"score": "mean"}, 0.25, dict(score="mean", nonnegative=False, window=3, stride=1), 3),
    "nonnegative_flag": ({"nonnegative_input": True}, 0.25, dict(score="max", nonnegative=True, window=3, stride=1), 3),
    "nonnegative_mean": ({"score": "mean", "nonnegative_input": True}, 0.25,
                         dict(score="mean", nonnegative=True, window=3, stride=1), 3),
    "floor": ({"rounding": "floor"}, 0.25, dict(score="max", nonnegative=False, window=3, stride=1), 2),
    "ceil": ({"rounding": "ceil"}, 0.22, dict(score="max", nonnegative=False, window=3, stride=1), 3),
}
SELECTOUT_RETAIN = {0.25: 0.75, 0.22: 0.79}


def _zeroed(x: torch.Tensor, out: torch.Tensor) -> list[set[int]]:
    return [{c for c in range(x.shape[1]) if bool((out[n, c] == 0).all())} for n in range(x.shape[0])]


def _changed(x: torch.Tensor, out: torch.Tensor) -> list[set[int]]:
    return [{c for c in range(x.shape[1]) if not torch.equal(out[n, c], x[n, c])} for n in range(x.shape[0])]


# name -> (build(top_rate, kwargs) -> callable, which maps it acted on). Each acts on every selected map: SelectScale
# scales by u ~ U(0, 2), Selectout drops all k candidates, the others zero the selected maps.
FORMS = {
    "SelectScale": (lambda t, kw: SelectScale(t, 0.0, **kw).train(), _changed),
    "select_scale()": (lambda t, kw: lambda x: select_scale(x, t, 0.0, **kw), _changed),
    "Selectout": (lambda t, kw: Selectout(t, SELECTOUT_RETAIN[t], **kw).train(), _zeroed),
    "selectout()": (lambda t, kw: lambda x: selectout(x, t, SELECTOUT_RETAIN[t], **kw), _zeroed),
    "Selective": (lambda t, kw: Selective(SpatialDropout(0.0), t, **kw).train(), _zeroed),
    "selective()": (lambda t, kw: lambda x: selective(x, lambda maps: maps * 0, t, **kw), _zeroed),
    "SelectDropBlock": (lambda t, kw: SelectDropBlock(t, 0.0, block_size=1, **kw).train(), _zeroed),
}


@pytest.fixture(scope="module")
def signed_maps() -> torch.Tensor:
    torch.manual_seed(40)
    return torch.randn(8, CHANNELS, 6, 6)


def test_the_cases_select_different_maps(signed_maps):
    """Each case's reference selection differs from the defaults' in some sample: a form that ignored the argument
    would act on the wrong maps."""
    def top(reference, k):
        return [reference_top_set(signed_maps, n, k, **reference) for n in range(signed_maps.shape[0])]

    defaults = CASES["defaults"][2]
    for case, (_, top_rate, reference, k) in CASES.items():
        if case != "defaults":  # against what the defaults select at this top rate
            assert top(reference, k) != top(defaults, num_top_maps(top_rate, CHANNELS)), case


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("form", list(FORMS))
def test_every_selective_form_acts_on_the_reference_top_maps(form, case, signed_maps):
    kwargs, top_rate, reference, k = CASES[case]
    build, acted = FORMS[form]
    torch.manual_seed(41)
    out = build(top_rate, kwargs)(signed_maps)
    expected = [reference_top_set(signed_maps, n, k, **reference) for n in range(signed_maps.shape[0])]
    assert acted(signed_maps, out) == expected


def test_a_single_selected_map_is_acted_on_and_top_rate_zero_is_the_identity():
    x = torch.rand(4, 10, 3, 3) + 0.5
    assert all(len(maps) == 1 for maps in _zeroed(x, Selective(SpatialDropout(0.0), 0.1).train()(x)))  # k = 1
    assert torch.equal(Selective(SpatialDropout(0.0), 0.0).train()(x), x)
    assert torch.equal(selective(x, lambda maps: maps * 0, 0.0), x)


# --- rate_scale reaches the layer that drops; defaults the paper relies on -------------------------------------------

@pytest.mark.parametrize("name", [name for name, cls in DROP_LAYERS.items() if cls is not None])
def test_rate_scale_reaches_every_layer_that_drops(name):
    args = {**DROP_ARGS[name], "rate_scale": 0.5}
    if name == "selectout":
        args.update(top_rate=0.2, retain_rate=0.7)  # 1 - p = 0.3 > t, but rate_scale x (1 - p) = 0.15 <= t: valid
    layer = build_drop(name, **args)
    layers = list(drop_layers(layer))
    assert layers and all(inner.rate_scale == 0.5 for inner in layers)
    retain = args["retain_rate"]
    assert all(float(inner.effective_retain_rate()) == pytest.approx(1 - 0.5 * (1 - retain)) for inner in layers)


def test_selectout_drops_rate_scale_times_the_maps():
    x = torch.rand(6, 20, 3, 3) + 0.5
    out = Selectout(0.2, 0.7, rate_scale=0.5).train()(x)  # m = round(0.5 * 0.3 * 20) = 3 of k = 4
    assert ((out == 0).flatten(2).all(2).sum(1) == 3).all()
    kept = out[out != 0] / x[out != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.85))


def test_dropblock_block_size_defaults_to_ghiasis_7():
    assert DropBlock(0.9).block_size == 7 and SelectDropBlock(0.2, 0.9).base.block_size == 7


# --- Selectout's drop count under each rounding, at fractional and float-inexact values -----------------------------

@pytest.mark.parametrize("retain, rounding, expected", [
    (0.87, "round", 1), (0.87, "floor", 1), (0.87, "ceil", 2),  # (1 - p) C = 1.3
    (0.83, "round", 2), (0.83, "floor", 1), (0.83, "ceil", 2),  # 1.7
    (0.5, "floor", 5), (0.5, "ceil", 5), (0.5, "round", 5),  # exactly 5
    (0.9, "ceil", 1), (0.9, "floor", 1),  # 1 - float32(0.9) = 0.100000024: 1.0000002 maps, which is 1 under ceil too
    (0.3, "floor", 7), (0.3, "ceil", 7),  # 1 - float32(0.3) = 0.7 + 1e-8: about 7.0000001
])
def test_selectout_drop_count_under_each_rounding(retain, rounding, expected):
    x = torch.rand(6, 10, 3, 3) + 0.5
    for out in (selectout(x, 1.0, retain, rounding=rounding), Selectout(1.0, retain, rounding=rounding).train()(x)):
        assert ((out == 0).flatten(2).all(2).sum(1) == expected).all()


# --- the functions check their rates; the draws are made on the input's device ---------------------------------------

FUNCTIONS = {
    "dropout": lambda y, t, p: dropout(y, p),
    "spatial_dropout": lambda y, t, p: spatial_dropout(y, p),
    "spatial_scale": lambda y, t, p: spatial_scale(y, p),
    "selectout": lambda y, t, p: selectout(y, t, p),
    "select_scale": lambda y, t, p: select_scale(y, t, p),
}


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_functions_refuse_rates_outside_0_1(name):
    y = torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="retain_rate=1.5"):
        FUNCTIONS[name](y, 0.5, 1.5)
    if name in ("selectout", "select_scale"):
        with pytest.raises(ValueError, match="top_rate=1.5"):
            FUNCTIONS[name](y, 1.5, 0.9)


@pytest.mark.parametrize("name", list(DROP_ARGS))
def test_every_method_draws_on_the_inputs_device(name):
    """On the meta device a draw made on the CPU (a lost ``device=`` argument) fails: it would fail on a GPU too."""
    layer = build_drop(name, **DROP_ARGS[name]).train().to("meta")
    assert layer(torch.randn(2, 8, 6, 6, device="meta")).device.type == "meta"


# --- the channels-last score path, on shapes whose row grouping is not a power of two ---------------------------------

@pytest.mark.parametrize("shape", [(2, 8, 6, 6), (2, 4, 12, 12), (2, 16, 3, 12), (2, 2, 10, 10)])
def test_channels_last_scores_equal_nchw_scores_on_more_shapes(shape):
    torch.manual_seed(42)
    y = torch.randn(shape)
    channels_last = y.contiguous(memory_format=torch.channels_last)
    assert torch.equal(feature_map_scores(channels_last), feature_map_scores(y))


# --- what a printed model shows --------------------------------------------------------------------------------------

def test_reprs_show_every_non_default_selection_argument():
    layer = SelectScale(0.2, 0.1, rate_scale=0.5, score="avgpool", score_window=2, score_stride=2,
                        nonnegative_input=True, rounding="floor")
    assert repr(layer) == ("SelectScale(top_rate=0.2, retain_rate=0.1, rate_scale=0.5, score=avgpool, score_window=2, "
                           "score_stride=2, nonnegative_input=True, rounding=floor)")
    assert repr(SelectScale(0.2, 0.1)) == "SelectScale(top_rate=0.2, retain_rate=0.1, rate_scale=1.0, score=max)"
    wrapped = Selective(SpatialDropout(0.5), 0.3, score="mean", rounding="ceil")
    assert wrapped.extra_repr() == "top_rate=0.3, score=mean, rounding=ceil"
    assert isinstance(wrapped.base, DropLayer)


def test_the_selectout_rate_check_accepts_its_own_tolerance():
    """1 - p may exceed t by the documented 1e-9 (float error in 1 - p); at exactly t + 1e-9 it is still accepted."""
    retain = 1 - (0.5 + 1e-9)
    assert 1 - retain == 0.5 + 1e-9
    Selectout(0.5, retain)
    with pytest.raises(ValueError, match="too low for Selectout"):
        Selectout(0.5, retain - 1e-6)


def test_dropblock_layer_passes_its_block_size_on():
    x = torch.rand(2, 4, 9, 9) + 0.5
    for block_size in (1, 3):
        torch.manual_seed(43)
        by_layer = DropBlock(0.7, block_size).train()(x)
        torch.manual_seed(43)
        assert torch.equal(by_layer, drop_block(x, 0.7, block_size))


# --- the CIFAR networks around the drops: widths, strides, shortcuts, initialisation ---------------------------------

@pytest.mark.parametrize("name, parameters", [("resnet8", 75_290), ("resnet20", 269_722), ("wrn20_2", 1_073_962)])
def test_cifar_networks_have_their_golden_parameter_counts(name, parameters):
    """The values of tests/test_models.py's GOLDEN (literal, as there)."""
    model = create_model(name, 10)
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert sum(p.numel() for p in create_model(name, 10, shortcut="avgpool").parameters()) == parameters


def test_cifar_resnet_halves_the_maps_at_the_first_block_of_stages_2_and_3():
    model = create_model("resnet20", 10).eval()
    sizes = {}

    def record(key, module, inputs, output) -> None:
        sizes[key] = tuple(output.shape)

    for stage in ("layer1", "layer2", "layer3"):
        for index, block in enumerate(getattr(model, stage)):
            block.register_forward_hook(functools.partial(record, f"{stage}.{index}"))
    model(torch.randn(2, 3, 32, 32))
    expected = {f"layer{s + 1}.{i}": (2, 16 * 2**s, 32 // 2**s, 32 // 2**s) for s in range(3) for i in range(3)}
    assert sizes == expected
    assert CifarResNet(1, 10).fc.in_features == 64  # width 1 by default


@pytest.mark.parametrize("mode", ["pad", "avgpool"])
def test_option_a_shortcuts_subsample_or_average_then_pad_with_zero_channels(mode):
    model = create_model("resnet8", 10, shortcut=mode)
    shortcut = model.layer2[0].shortcut
    assert isinstance(shortcut, PaddingShortcut) and isinstance(model.layer1[0].shortcut, nn.Identity)
    x = torch.randn(2, 16, 8, 8)
    halved = F.avg_pool2d(x, 2) if mode == "avgpool" else x[:, :, ::2, ::2]
    assert torch.equal(shortcut(x), torch.cat([halved, torch.zeros(2, 16, 4, 4)], 1))


def test_convolutions_are_he_normal_with_fan_out():
    torch.manual_seed(44)
    model = create_model("wrn20_2", 10)
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
            ratio = module.weight.std().item() / math.sqrt(2.0 / fan_out)
            assert 0.85 < ratio < 1.15, (name, ratio)  # fan_in differs by 2x (stage starts) to 5x (the stem)


# --- argument checks and defaults of the selection --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["score_window", "score_stride"])
@pytest.mark.parametrize("value", [0, True, 2.5])
def test_score_window_and_stride_must_be_integers_of_at_least_1(name, value):
    for layer_class in (SelectScale, Selectout):
        with pytest.raises(ValueError, match=f"{name}={value!r} is invalid: it must be an integer >= 1"):
            layer_class(0.5, 0.9, score="avgpool", **{name: value})


def test_the_default_score_is_the_maximum_of_the_absolute_value():
    torch.manual_seed(45)
    y = torch.randn(3, 5, 4, 4)
    assert torch.equal(feature_map_scores(y), y.abs().amax((2, 3)))


def test_scores_one_ulp_apart_keep_their_order_under_random_tie_breaking():
    """The random tie-break bits never reach the score bits: of two maps whose scores differ in the last bit of the
    float, the larger is always the one selected."""
    low = torch.tensor(1.5)
    high = torch.nextafter(low, torch.tensor(2.0))
    x = torch.stack([low, high]).reshape(1, 2, 1, 1).expand(4000, 2, 1, 1).contiguous()
    torch.manual_seed(46)
    changed = select_scale(x, 0.5, 0.0) != x  # k = 1 of 2 maps
    assert changed[:, 1].all() and not changed[:, 0].any()


def test_feature_map_scores_defaults_and_float32_accumulation():
    torch.manual_seed(47)
    y = torch.randn(2, 3, 6, 6)
    pooled = F.avg_pool2d(y.abs(), 3, 1).amax((2, 3))  # avgpool's defaults: window 3, stride 1
    torch.testing.assert_close(feature_map_scores(y, "avgpool"), pooled, rtol=0, atol=1e-6)
    low = y.bfloat16()  # the mean is accumulated in float32 even for bf16 maps (no bf16 rounding of the score)
    torch.testing.assert_close(feature_map_scores(low, "mean"), low.abs().float().mean((2, 3)), rtol=1e-6, atol=0)


def test_round_count_defaults_to_half_up_and_knows_ceil():
    assert round_count(2.5) == 3 and round_count(2.2) == 2
    assert round_count(2.2, "ceil") == 3 and round_count(2.8, "floor") == 2


@pytest.mark.parametrize("top_rate", [0.5, 1.0])  # 1.0: every map, the path without ranking
def test_selection_runs_on_the_inputs_device(top_rate):
    y = torch.randn(2, 8, 4, 4, device="meta")
    for layer in (SelectScale(top_rate, 0.2), Selectout(top_rate, 0.5), Selective(SpatialDropout(0.5), top_rate)):
        assert layer.train()(y).device.type == "meta"


def test_rates_and_every_map_indices_are_made_on_the_inputs_device():
    """The two helpers whose output only meets the input in operations that accept a CPU scalar or CPU indices on the
    meta device (and may not on a GPU): checked directly."""
    like = torch.empty(2, 8, 4, 4, device="meta")
    assert functional._as_tensor(0.5, like).device.type == "meta"
    assert functional._as_tensor(torch.tensor(0.5), like).dtype == torch.float32
    assert top_map_indices(torch.empty(2, 8, device="meta"), 1.0).device.type == "meta"
