"""Where every drop layer sits, read from one forward pass of the real modules (issue 34, items 2 and 3).

Forward hooks record the leaf modules in the order they run, with their inputs and outputs; for every drop layer
the test asserts what feeds it (a convolution, then its BatchNorm, then a ReLU or not: the drop's input must *be*
that BN's output or exactly its ReLU) and what it feeds (the next convolution, or the residual addition), against
the placement docs/reproduction.md documents from the paper's words:

* ResNets and WRNs on CIFAR, "The data drop method is applied to every convolutional layer for ResNets and WRNs"
  (Section 3.1): conv-BN-ReLU-[drop] and conv-BN-[drop] before the addition, in every basic block (none after the
  stem unless ``drop_after_stem``, none on the parameter-free shortcuts);
* ResNeXt-29, "data drop is used before and after the 3x3 group convolutions" (Section 3.1);
* ResNet-50, "Drop methods are applied to the third and fourth groups after every BN layer" (Section 3.5): after
  bn1 + ReLU, bn2 + ReLU and bn3 of every bottleneck of layer3 (rate scale 0.5) and layer4, not on the downsample
  BN unless ``drop_on_shortcut``.

A test of "the drop's input is signed" alone is also met by a convolution's output; these are not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import torch
import torchvision
from torch import nn

from selectscale.drop import DropLayer, SelectScale, drop_factory, drop_layers, insert_drops
from selectscale.drop.insert import DROP_CHILD
from selectscale.models import create_model

FACTORY = functools.partial(SelectScale, top_rate=0.25, retain_rate=0.2)


@dataclass
class Call:
    name: str
    module: nn.Module
    input: torch.Tensor
    output: torch.Tensor


def record_forward(model: nn.Module, x: torch.Tensor, also: tuple[str, ...] = ()) -> tuple[list[Call], dict]:
    """Run ``model(x)`` in training mode; return the leaf modules' calls in execution order (``nn.Identity`` slots
    left out) and the calls of the modules named in ``also`` (containers: blocks, shortcuts) by name."""
    calls: list[Call] = []
    named: dict[str, Call] = {}
    handles = []

    def hook(name, module, inputs, output):
        call = Call(name, module, inputs[0].detach().clone(), output.detach().clone())
        if name in also:
            named[name] = call
        else:
            calls.append(call)

    for name, module in model.named_modules():
        leaf = not list(module.children())
        if (leaf and not isinstance(module, nn.Identity)) or name in also:
            handles.append(module.register_forward_hook(functools.partial(hook, name)))
    with torch.no_grad():
        model.train()(x)
    for handle in handles:
        handle.remove()
    return calls, named


@dataclass(frozen=True)
class Expected:
    """One drop position: after a BN (``relu``: and then a ReLU); ``feeds``: 'conv' (the next convolution's input)
    or 'add' (the residual addition of block ``block``, whose shortcut output comes from module ``shortcut``)."""

    relu: bool
    feeds: str
    rate_scale: float = 1.0
    grouped_before: bool = False  # the convolution before the BN is a group convolution (ResNeXt)
    grouped_after: bool = False  # the convolution the drop feeds is a group convolution


def check_placement(model: nn.Module, x: torch.Tensor, expected: dict[str, Expected], blocks: dict[str, str]) -> None:
    """``expected``: drop layer name -> its position; ``blocks``: the name of the block each 'add' drop ends ->
    the name of its shortcut module ('' for an identity shortcut). Every drop layer of ``model`` must be listed."""
    assert sorted(name for name, m in model.named_modules() if isinstance(m, DropLayer)) == sorted(expected)
    shortcut_names = tuple(s for s in blocks.values() if s)
    calls, named = record_forward(model, x, also=(*blocks, *shortcut_names))
    ran = [call.name for call in calls if isinstance(call.module, DropLayer)]
    assert sorted(ran) == sorted(expected), "every drop layer runs once in a forward pass"
    for index, call in enumerate(calls):
        if not isinstance(call.module, DropLayer):
            continue
        want = expected[call.name]
        before = calls[index - 1]
        if want.relu:
            if isinstance(before.module, nn.ReLU):  # torchvision's Bottleneck: an nn.ReLU module between BN and drop
                assert torch.equal(call.input, before.output), f"{call.name}: input is not the ReLU's output"
                before = calls[index - 2]
            assert isinstance(before.module, nn.BatchNorm2d), f"{call.name} follows {before.name}, not a BN + ReLU"
            assert (before.output < 0).any(), "the BN output has negative values, so the ReLU check means something"
            assert torch.equal(call.input, before.output.clamp_min(0)), f"{call.name}: input is not ReLU({before.name})"
            assert call.module.nonnegative_input, f"{call.name} sees ReLU outputs: scores without |y|"
        else:
            assert isinstance(before.module, nn.BatchNorm2d), f"{call.name} follows {before.name}, not a BN"
            assert torch.equal(call.input, before.output), f"{call.name}: input is not {before.name}'s output"
            assert (call.input < 0).any() and not call.module.nonnegative_input, f"{call.name}: signed maps, |y| score"
        conv = calls[index - 3] if isinstance(calls[index - 1].module, nn.ReLU) else calls[index - 2]
        assert isinstance(conv.module, nn.Conv2d), f"{before.name} follows {conv.name}, not a convolution"
        assert torch.equal(before.input, conv.output), f"{before.name}'s input is not {conv.name}'s output"
        assert (conv.module.groups > 1) == want.grouped_before, f"{call.name}: after {conv.name}"
        assert call.module.rate_scale == want.rate_scale, call.name
        if want.feeds == "conv":
            following = calls[index + 1]
            assert isinstance(following.module, nn.Conv2d), f"{call.name} feeds {following.name}, not a convolution"
            assert torch.equal(following.input, call.output), f"{following.name}'s input is not {call.name}'s output"
            assert (following.module.groups > 1) == want.grouped_after, f"{call.name}: before {following.name}"
        else:
            block_name = next(b for b in blocks if call.name.startswith(b + "."))
            block, shortcut = named[block_name], blocks[block_name]
            if call.name.startswith(f"{shortcut}."):  # a drop on the shortcut: the main path's last drop is the other
                other = next(c for c in calls if c.name.startswith(block_name + ".") and c.name != call.name
                             and isinstance(c.module, DropLayer) and expected[c.name].feeds == "add"
                             and not c.name.startswith(f"{shortcut}."))
                assert torch.equal(block.output, (other.output + call.output).relu()), call.name
                continue
            identity = named[shortcut].output if shortcut else block.input
            assert torch.equal(block.output, (call.output + identity).relu()), \
                f"{block_name}'s output is not ReLU({call.name} + shortcut)"


# --- CIFAR ResNets and WRNs ------------------------------------------------------------------------------------------

def cifar_resnet_expected(model: nn.Module, stem: bool) -> tuple[dict, dict]:
    expected, blocks = {}, {}
    for stage in ("layer1", "layer2", "layer3"):
        for index, block in enumerate(getattr(model, stage)):
            name = f"{stage}.{index}"
            expected[f"{name}.drop1"] = Expected(relu=True, feeds="conv")
            expected[f"{name}.drop2"] = Expected(relu=False, feeds="add")
            blocks[name] = "" if isinstance(block.shortcut, nn.Identity) else f"{name}.shortcut"
    if stem:
        expected["drop_stem"] = Expected(relu=True, feeds="conv")
    return expected, blocks


@pytest.mark.parametrize("name, options", [("resnet20", {}), ("resnet20", {"drop_after_stem": True}),
                                           ("resnet8", {"shortcut": "avgpool"}), ("wrn20_2", {}),
                                           ("wrn20_4", {"drop_after_stem": True})])
def test_cifar_resnets_and_wrns_drop_after_the_bn_of_every_block_convolution(name, options):
    torch.manual_seed(0)
    model = create_model(name, 10, drop=FACTORY, **options)
    expected, blocks = cifar_resnet_expected(model, options.get("drop_after_stem", False))
    check_placement(model, torch.randn(2, 3, 32, 32), expected, blocks)
    # "every convolutional layer": each convolution of a residual block is followed (BN, ReLU) by a drop layer
    block_convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n.startswith("layer")}
    assert {n.rsplit(".", 1)[0] + ".conv" + n[-1] for n in expected if n != "drop_stem"} == block_convs


# --- ResNeXt-29 ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stem", [False, True])
def test_resnext_drops_sit_before_and_after_every_group_convolution(stem):
    torch.manual_seed(0)
    model = create_model("resnext29_8x64d", 10, drop=FACTORY, drop_after_stem=stem)
    expected, blocks = {}, {}
    for stage in ("layer1", "layer2", "layer3"):
        for index in range(3):
            name = f"{stage}.{index}"
            expected[f"{name}.drop_reduce"] = Expected(relu=True, feeds="conv", grouped_after=True)
            expected[f"{name}.drop_group"] = Expected(relu=True, feeds="conv", grouped_before=True)
    if stem:
        expected["drop_stem"] = Expected(relu=True, feeds="conv")
    check_placement(model, torch.randn(2, 3, 32, 32), expected, blocks)
    group_convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(group_convs) == 9  # each one: a drop on its input and one after its BN + ReLU


# --- ResNet-50 -------------------------------------------------------------------------------------------------------

def resnet50_expected(shortcut: bool) -> tuple[dict, dict]:
    expected, blocks = {}, {}
    for stage, blocks_in_stage, scale in (("layer3", 6, 0.5), ("layer4", 3, 1.0)):
        for index in range(blocks_in_stage):
            name = f"{stage}.{index}"
            expected[f"{name}.drop1"] = Expected(relu=True, feeds="conv", rate_scale=scale)
            expected[f"{name}.drop2"] = Expected(relu=True, feeds="conv", rate_scale=scale)
            expected[f"{name}.drop3"] = Expected(relu=False, feeds="add", rate_scale=scale)
            blocks[name] = f"{name}.downsample" if index == 0 else ""
            if shortcut and index == 0:
                expected[f"{name}.downsample.2"] = Expected(relu=False, feeds="add", rate_scale=scale)
    return expected, blocks


@pytest.mark.parametrize("shortcut", [False, True])
def test_resnet50_drops_after_every_bn_of_groups_3_and_4(shortcut):
    torch.manual_seed(0)
    model = create_model("resnet50", 10, drop=FACTORY, drop_on_shortcut=shortcut)
    expected, blocks = resnet50_expected(shortcut)
    assert len(expected) == (29 if shortcut else 27)
    check_placement(model, torch.randn(2, 3, 64, 64), expected, blocks)


# --- the README's insert_drops example = create_model("resnet50")'s placement (item 3) -------------------------------

README_PLACEMENT = dict(modules=("layer3", "layer4"), rate_scale={"layer3": 0.5}, exclude=("*.downsample.*",),
                        followed_by_relu=("*.bn1", "*.bn2"))


def inserted_positions(model: nn.Module) -> list[tuple]:
    """(host path as create_model names the slot, class, rate_scale, nonnegative_input, arguments) of every drop layer
    insert_drops added, in module order."""
    slots = {"bn1": "drop1", "bn2": "drop2", "bn3": "drop3", "downsample.1": "downsample.2"}
    rows = []
    for name, module in model.named_modules():
        if not name.endswith("." + DROP_CHILD):
            continue
        host = name[: -len(DROP_CHILD) - 1]
        slot = next(slot for slot in slots if host.endswith("." + slot))
        rows.append((f"{host[: -len(slot) - 1]}.{slots[slot]}", *describe(module)))
    return rows


def describe(layer: DropLayer) -> tuple:
    return (type(layer), layer.rate_scale, layer.nonnegative_input, layer.top_rate, layer.retain_rate, layer.score,
            layer.rounding)


def created_positions(model: nn.Module) -> list[tuple]:
    return [(name, *describe(module)) for name, module in model.named_modules() if isinstance(module, DropLayer)]


@pytest.mark.parametrize("shortcut, score", [(False, "max"), (True, "max"), (False, "mean")])
def test_the_readme_insert_drops_example_gives_create_models_resnet50_placement(shortcut, score):
    """Module by module (host, class, rate_scale, score flags), then the outputs of the two models under one seed and
    the same weights in training mode: equal bit for bit, so the drops sit at the same places relative to BN and ReLU
    and draw in the same order. Without ``exclude`` the example gives ``drop_on_shortcut=True``'s 29 layers. With the
    max score a drop placed just before its ReLU instead of after gives the same output (non-negative factors, the same
    max over a map with a positive value), so the mean score checks that order too (scripts/fidelity_bug_demos.py)."""
    factory = drop_factory("selectscale", top_rate=0.1, retain_rate=0.2, score=score)
    placement = dict(README_PLACEMENT)
    if shortcut:
        del placement["exclude"]
    torch.manual_seed(0)
    ours = create_model("resnet50", 10, drop=factory, drop_on_shortcut=shortcut)
    theirs = insert_drops(torchvision.models.resnet50(num_classes=10), factory, **placement)
    theirs.load_state_dict(ours.state_dict(), strict=True)  # the same keys: the drops hold no state
    assert len(list(drop_layers(theirs))) == len(list(drop_layers(ours))) == (29 if shortcut else 27)
    assert sorted(inserted_positions(theirs), key=str) == sorted(created_positions(ours), key=str)
    x = torch.randn(4, 3, 64, 64)
    outputs = []
    for model in (ours, theirs):
        torch.manual_seed(1)
        outputs.append(model.train()(x))
    assert torch.equal(*outputs), "the same weights, seed and input: the drops differ in place or order"
    assert torch.equal(ours.eval()(x), theirs.eval()(x))
    torch.manual_seed(1)
    without_relu_first = insert_drops(torchvision.models.resnet50(num_classes=10), factory,
                                      **{**placement, "followed_by_relu": ()})
    without_relu_first.load_state_dict(ours.state_dict(), strict=True)
    torch.manual_seed(1)
    assert not torch.equal(without_relu_first.train()(x), outputs[0])  # drops before the ReLU: another network


def test_insert_drops_placement_options_refuse_patterns_that_match_nothing():
    model = torchvision.models.resnet18()
    with pytest.raises(ValueError, match="exclude pattern.s. '\\*.shortcut.\\*' match no position"):
        insert_drops(model, FACTORY, modules=("layer4",), exclude=("*.shortcut.*",))
    with pytest.raises(ValueError, match="followed_by_relu pattern.s. 'bn1' match no position; positions are dotted "
                       "module paths such as 'layer4.0.bn1'"):
        insert_drops(model, FACTORY, modules=("layer4",), followed_by_relu=("bn1",))
    with pytest.raises(TypeError, match="exclude='layer4' must be a sequence of module-path patterns"):
        insert_drops(model, FACTORY, exclude="layer4")
    with pytest.raises(ValueError, match="no module of type BatchNorm2d inside layer4 outside exclude"):
        insert_drops(model, FACTORY, modules=("layer4",), exclude=("*",))
    assert not list(drop_layers(model))  # nothing inserted by a refused call
