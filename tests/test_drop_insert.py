"""insert_drops: drop layers in any network (torchvision's and timm's), keys and parameters untouched (issue 15)."""

import copy
import functools
import io

import pytest
import torch
import torchvision
from torch import nn

from selectscale.drop import (
    SelectScale,
    SpatialDropout,
    apply_at_inference,
    drop_factory,
    drop_layers,
    insert_drops,
    set_drop_strength,
)
from selectscale.drop.insert import DROP_CHILD
from selectscale.models import create_model

FACTORY = drop_factory("selectscale", top_rate=0.2, retain_rate=0.1)


def resnet18_pair():
    """(original, the same weights with drops in layer3 and layer4)."""
    torch.manual_seed(0)
    original = torchvision.models.resnet18(num_classes=10)
    inserted = insert_drops(copy.deepcopy(original), FACTORY, modules=("layer3", "layer4"), rate_scale={"layer3": 0.5})
    return original, inserted


def test_positions_rates_and_an_unchanged_state_dict():
    original, inserted = resnet18_pair()
    layers = {name: module for name, module in inserted.named_modules() if isinstance(module, SelectScale)}
    # layer3 and layer4: 2 blocks x 2 BNs + the downsample BN each
    assert len(layers) == 10 and all(name.startswith(("layer3.", "layer4.")) for name in layers)
    assert {layer.rate_scale for name, layer in layers.items() if name.startswith("layer3")} == {0.5}
    assert {layer.rate_scale for name, layer in layers.items() if name.startswith("layer4")} == {1.0}
    assert not any(layer.nonnegative_input for layer in layers.values())  # after BN the maps are signed
    assert list(inserted.state_dict()) == list(original.state_dict())
    for (name, a), (_, b) in zip(original.named_parameters(), inserted.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_identity_in_eval_and_at_strength_zero_active_otherwise():
    original, inserted = resnet18_pair()
    x = torch.randn(4, 3, 64, 64)
    assert torch.equal(original.eval()(x), inserted.eval()(x))
    with apply_at_inference(inserted):
        assert not torch.equal(original(x), inserted(x))  # Figure 3's mode reaches inserted layers too
    original.train(), inserted.train()
    assert set_drop_strength(inserted, 0.0) == 10
    assert torch.allclose(original(x), inserted(x))  # strength 0: the identity, BN batch statistics included
    set_drop_strength(inserted, 1.0)
    assert not torch.allclose(original(x), inserted(x))


def test_state_dict_round_trips_both_ways_and_the_whole_model_pickles():
    original, inserted = resnet18_pair()
    fresh = insert_drops(torchvision.models.resnet18(num_classes=10), FACTORY, modules=("layer3", "layer4"))
    fresh.load_state_dict(original.state_dict(), strict=True)  # published weights load into an inserted model
    torchvision.models.resnet18(num_classes=10).load_state_dict(inserted.state_dict(), strict=True)
    buffer = io.BytesIO()
    torch.save(inserted, buffer)
    buffer.seek(0)
    restored = torch.load(buffer, weights_only=False)
    assert len(list(drop_layers(restored))) == 10
    x = torch.randn(2, 3, 64, 64)
    set_drop_strength(restored, 0.0)
    assert torch.allclose(restored.train()(x), original.train()(x))


def test_channels_last_is_kept():
    _, inserted = resnet18_pair()
    inserted = inserted.to(memory_format=torch.channels_last).train()
    captured = []
    inserted.layer4[1].bn2.register_forward_hook(lambda module, inputs, output: captured.append(output))
    inserted(torch.randn(2, 3, 64, 64).to(memory_format=torch.channels_last))
    assert captured[0].is_contiguous(memory_format=torch.channels_last)


def test_resnet50_in_the_papers_placement():
    model = insert_drops(torchvision.models.resnet50(), drop_factory("spatial_dropout", retain_rate=0.9),
                         modules=("layer3", "layer4"), rate_scale={"layer3": 0.5})
    # every BN of layer3 and layer4, downsample BNs included: model.drop_on_shortcut=true's 29 positions
    ours = create_model("resnet50", 1000, drop=drop_factory("spatial_dropout", retain_rate=0.9), drop_on_shortcut=True)
    assert len(list(drop_layers(model))) == len(list(drop_layers(ours))) == 29
    assert list(model.state_dict()) == list(torchvision.models.resnet50().state_dict())


def test_after_relu_positions_score_without_the_absolute_value():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU())
    insert_drops(model, FACTORY, after=nn.ReLU)
    layers = list(drop_layers(model))
    assert len(layers) == 2 and all(layer.nonnegative_input for layer in layers)
    insert_drops(model, drop_factory("spatial_dropout", retain_rate=0.9), after=nn.BatchNorm2d)
    assert isinstance(getattr(model[1], DROP_CHILD), SpatialDropout)  # a layer without a score: no such flag


def test_mistakes_are_one_line_errors():
    model = torchvision.models.resnet18()
    with pytest.raises(ValueError, match="modules 'layer5' are not top-level children of ResNet; its children are"):
        insert_drops(model, FACTORY, modules=("layer5",))
    with pytest.raises(TypeError, match="must be a sequence of child names"):
        insert_drops(model, FACTORY, modules="layer3")
    with pytest.raises(ValueError, match="rate_scale names 'stage3'"):
        insert_drops(model, FACTORY, rate_scale={"stage3": 0.5})
    with pytest.raises(ValueError, match="no module of type Conv1d"):
        insert_drops(model, FACTORY, after=nn.Conv1d)
    with pytest.raises(TypeError, match="is not a factory"):
        insert_drops(model, SelectScale(0.2, 0.1))
    insert_drops(model, FACTORY, modules=("layer4",))
    with pytest.raises(ValueError, match="layer4.0.bn1 already has an inserted drop layer"):
        insert_drops(model, FACTORY, modules=("layer4",))
    assert insert_drops(model, None) is model and len(list(drop_layers(model))) == 5  # None inserts nothing


def test_any_factory_works_including_a_partial_of_a_layer_class():
    model = insert_drops(torchvision.models.resnet18(), functools.partial(SelectScale, top_rate=0.1, retain_rate=0.2),
                         modules=("layer4",))
    assert {type(layer) for layer in drop_layers(model)} == {SelectScale}


@pytest.mark.slow
def test_torch_compile_traces_the_inserted_drops():
    original, inserted = resnet18_pair()
    compiled = torch.compile(inserted)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(compiled.eval()(x), original.eval()(x), atol=1e-5)
    compiled.train(), original.train()
    set_drop_strength(inserted, 0.0)  # a buffer fill: no recompilation, and the compiled graph sees it
    assert torch.allclose(compiled(x), original(x), atol=1e-4)
    set_drop_strength(inserted, 1.0)
    assert not torch.allclose(compiled(x), original(x), atol=1e-3)


@pytest.mark.slow
def test_ddp_runs_an_inserted_model(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        _, inserted = resnet18_pair()
        model = nn.parallel.DistributedDataParallel(inserted.train())
        model(torch.randn(2, 3, 64, 64)).sum().backward()
        assert len(list(drop_layers(model))) == 10
        assert all(p.grad is not None for p in inserted.parameters() if p.requires_grad)
    finally:
        dist.destroy_process_group()


def test_timm_resnet_and_convnext():
    timm_module = pytest.importorskip("timm", reason="the optional timm extra: pip install 'selectscale[timm]'")
    from timm.models.convnext import ConvNeXtBlock

    resnet = timm_module.create_model("resnet18", pretrained=False, num_classes=10)
    keys = list(resnet.state_dict())
    insert_drops(resnet, FACTORY, modules=("layer3", "layer4"), rate_scale={"layer3": 0.5})
    assert len(list(drop_layers(resnet))) == 10 and list(resnet.state_dict()) == keys
    convnext = timm_module.create_model("convnext_atto", pretrained=False, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    reference = convnext.eval()(x)
    # ConvNeXt normalises channels-last inside its blocks; the block outputs are N x C x H x W maps
    insert_drops(convnext, FACTORY, after=ConvNeXtBlock, modules=("stages",))
    assert len(list(drop_layers(convnext))) == sum(1 for m in convnext.modules() if isinstance(m, ConvNeXtBlock))
    assert torch.equal(convnext.eval()(x), reference)
    assert convnext.train()(x).shape == (2, 10)
