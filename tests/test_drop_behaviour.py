"""Modes, strength, gradients, dtypes, memory formats, determinism of the drop layers."""

import functools

import pytest
import torch
from drop_cases import DROP_ARGS
from torch import nn

from selectscale.drop import (
    DROP_LAYERS,
    Selectout,
    SelectScale,
    SpatialDropout,
    SpatialScale,
    apply_at_inference,
    build_drop,
    drop_layers,
    set_drop_strength,
)

ARGS = DROP_ARGS
METHODS = list(ARGS)
MAP_METHODS = [m for m in METHODS if m != "dropout"]  # draws per map or block, the same in any memory layout


def make(name: str, **overrides) -> nn.Module:
    return build_drop(name, **{**ARGS[name], **overrides})


def seeded(layer: nn.Module, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return layer(x)


@pytest.mark.parametrize("name", METHODS)
def test_eval_mode_is_identity_and_training_mode_is_not(name):
    x = torch.randn(4, 10, 5, 5)
    layer = make(name)
    assert layer.eval()(x) is x
    assert not torch.equal(seeded(layer.train(), x), x)


@pytest.mark.parametrize("name", METHODS)
def test_no_parameters_and_no_state_dict_entries(name):
    layer = make(name)
    assert list(layer.parameters()) == [] and layer.state_dict() == {}


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_output(name):
    x = torch.randn(4, 10, 5, 5)
    layer = make(name).train()
    assert torch.equal(seeded(layer, x, 3), seeded(layer, x, 3))
    assert not torch.equal(seeded(layer, x, 3), seeded(layer, x, 4))


@pytest.mark.parametrize("name", METHODS)
def test_gradient_is_multiplied_by_the_same_factors(name):
    x = torch.randn(4, 10, 5, 5, dtype=torch.float64, requires_grad=True)
    layer = make(name).train()
    output = seeded(layer, x)
    upstream = torch.randn_like(output)
    output.backward(upstream)
    factors = output.detach() / x.detach()
    torch.testing.assert_close(x.grad, upstream * factors)
    # Finite differences agree too (the selection is locally constant for generic inputs).
    assert torch.autograd.gradcheck(functools.partial(seeded, layer), (x.detach().requires_grad_(),))


@pytest.mark.parametrize("name", METHODS)
def test_strength_zero_is_identity(name):
    x = torch.randn(4, 10, 5, 5)
    layer = make(name).train()
    assert set_drop_strength(layer, 0.0) == 1
    assert torch.equal(layer(x), x)


def test_strength_and_rate_scale_shrink_the_drop_amount():
    # retain 0.2 at strength 0.5 -> effective 0.6: SpatialScale factors in [0.6, 1.4].
    torch.manual_seed(0)
    x = torch.rand(256, 32, 1, 1) + 0.5
    for layer in (SpatialScale(0.2).train(), SpatialScale(0.2, rate_scale=0.5).train()):
        if layer.rate_scale == 1.0:
            layer.strength = 0.5
        factors = layer(x) / x
        assert factors.min() >= 0.6 - 1e-6 and factors.max() <= 1.4 + 1e-6
        assert factors.min() < 0.62 and factors.max() > 1.38
    # SpatialDropout retain 0.2 at strength 0.5: kept maps x 1/0.6.
    layer = SpatialDropout(0.2).train()
    layer.strength = 0.5
    factors = layer(x) / x
    kept = factors[factors != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.6))
    assert abs((factors != 0).float().mean().item() - 0.6) < 0.03  # 8,192 maps: sd 0.0054


def test_strength_scales_selectout_drop_count_but_not_top_rate():
    x = torch.rand(64, 20, 3, 3) + 0.5
    layer = Selectout(top_rate=0.5, retain_rate=0.5).train()  # full strength: 10 of 20 dropped
    layer.strength = 0.5  # effective retain 0.75: 5 dropped, kept x 1/0.75
    factors = (layer(x) / x)[:, :, 0, 0]
    assert ((factors == 0).sum(1) == 5).all()
    kept = factors[factors != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.75))


def test_set_drop_strength_reaches_nested_layers_and_counts_them():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), SelectScale(0.2, 0.1), nn.Sequential(SpatialDropout(0.9)))
    assert set_drop_strength(model, 0.25) == 2
    assert [layer.strength for layer in drop_layers(model)] == [0.25, 0.25]


def test_apply_at_inference_activates_drops_but_keeps_batchnorm_in_eval():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(8), SpatialDropout(0.5)).eval()
    x = torch.randn(16, 8, 4, 4)
    clean = model(x)
    with apply_at_inference(model):
        assert not model[0].training and not model[1].training
        dropped = model(x)
        maps = dropped.flatten(2)
        assert ((maps == 0).all(-1) | torch.isclose(maps, 2 * clean.flatten(2)).all(-1)).all()
        assert (maps == 0).all(-1).any()
    assert torch.equal(model(x), clean)  # restored on exit


def test_apply_at_inference_restores_state_after_an_exception():
    layer = SelectScale(0.2, 0.1).eval()
    with pytest.raises(RuntimeError), apply_at_inference(layer):
        raise RuntimeError("boom")
    assert layer.active_at_inference is False


@pytest.mark.parametrize("name", METHODS)
def test_channels_last_input_keeps_its_memory_format(name):
    x = torch.randn(4, 10, 5, 5)
    layer = make(name).train()
    y_last = seeded(layer, x.to(memory_format=torch.channels_last))
    assert y_last.is_contiguous(memory_format=torch.channels_last)
    if name in MAP_METHODS:  # the same per-map draws, whatever the layout
        torch.testing.assert_close(y_last, seeded(layer, x))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", METHODS)
def test_low_precision_inputs_keep_dtype_and_match_float32(name, dtype):
    x = torch.randn(4, 10, 5, 5).to(dtype)
    layer = make(name).train()
    y = seeded(layer, x)
    assert y.dtype == dtype
    if name in MAP_METHODS:
        torch.testing.assert_close(y.float(), seeded(layer, x.float()), rtol=1e-2, atol=1e-2)


def test_extra_repr_shows_the_arguments():
    text = repr(SelectScale(0.2, 0.1, rate_scale=0.5, score="avgpool", score_window=2, score_stride=2))
    for part in ("top_rate=0.2", "retain_rate=0.1", "rate_scale=0.5", "score=avgpool", "score_window=2"):
        assert part in text
    assert repr(SpatialDropout(0.9)) == "SpatialDropout(retain_rate=0.9, rate_scale=1.0)"


def test_every_registered_method_has_test_arguments():
    # a method added to DROP_LAYERS without an entry in drop_cases.DROP_ARGS would escape every test above
    assert set(ARGS) == set(DROP_LAYERS) - {"none"}


def test_build_drop_knows_every_name():
    assert isinstance(build_drop("none"), nn.Identity)
    assert isinstance(build_drop("none", rate_scale=0.5), nn.Identity)
    for name in METHODS:
        assert isinstance(make(name), DROP_LAYERS[name])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks for host-device synchronisation")
@pytest.mark.parametrize("name", METHODS)
def test_cuda_forward_backward_without_host_sync(name):
    x = torch.randn(8, 32, 8, 8, device="cuda", requires_grad=True)
    layer = make(name).cuda().train()
    layer(x).sum().backward()  # warm-up outside the check
    torch.cuda.set_sync_debug_mode("error")
    try:
        set_drop_strength(layer, 0.5)  # a buffer fill: no sync (Selective's strength lives on its base)
        layer(x).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
