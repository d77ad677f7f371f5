"""Drop placement, rate scales and model structure: tests that kill the mutants the second ``make mutation`` run
left alive in selectscale/drop/insert.py and selectscale/models/ (docs/mutation.md).

The survivors were behaviours no test reached: ``insert_drops`` on the whole model (``modules=None``) with a
``rate_scale`` (the paper's ResNet-50 rule, layer3 at half the drop rate, applied to any network); the ReLU that a
``followed_by_relu`` position's drop must act after; the residual add of a ResNeXt block; a CIFAR basic block whose
stride and width do not change together; and the classes' own defaults (ResNeXt-29 8x64d, torchvision's keyword
arguments reaching DropBottleneck, no drop on the shortcut unless asked). Big models are built on the meta device:
their structure without allocating or initialising a weight.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck, conv1x1, resnext50_32x4d

from selectscale.drop import drop_factory, drop_layers, insert_drops
from selectscale.drop.insert import DROP_CHILD
from selectscale.models import create_model
from selectscale.models.cifar_resnet import BasicBlock, PaddingShortcut
from selectscale.models.resnet_torchvision import DropBottleneck, DropResNet
from selectscale.models.resnext import CifarResNeXt, ResNeXtBlock

FACTORY = drop_factory("selectscale", top_rate=0.25, retain_rate=0.2)

# --- insert_drops on the whole model: rate scales and patterns by top-level child --------------------------------


def _rate_scales(model: nn.Module) -> dict[str, float]:
    """{dotted path of the host module: rate_scale of the drop layer inserted after it}."""
    return {name.removesuffix("." + DROP_CHILD): layer.rate_scale for name, layer in model.named_modules()
            if name.endswith(DROP_CHILD)}


def test_whole_model_insertion_scales_each_position_by_its_top_level_child():
    """Kills insert mutants _chosen_children 2 (the whole model named "XXXX": no top-level name matches),
    _scale_of 4, 5, 6, 7, 9, 10, 12 (the top-level child taken from the wrong part of the dotted path, or an error)
    and insert_drops 62 (no path passed). With ``modules=None`` every BatchNorm gets a drop, and the paper's rule
    (DropBlock's, Section 3.5) must still give the positions inside ``layer3`` half the drop rate: a position's
    scale comes from the first component of its path (``layer3.0.bn1`` -> ``layer3``), at any depth."""
    model = create_model("resnet8", 10)  # stem bn1, then layer1..3 of one block each: bn1, bn2 per block
    insert_drops(model, FACTORY, rate_scale={"layer3": 0.5, "bn1": 0.25})
    assert _rate_scales(model) == {"bn1": 0.25, "layer1.0.bn1": 1.0, "layer1.0.bn2": 1.0, "layer2.0.bn1": 1.0,
                                   "layer2.0.bn2": 1.0, "layer3.0.bn1": 0.5, "layer3.0.bn2": 0.5}
    layer3 = [layer for name, layer in model.named_modules() if name.startswith("layer3") and name.endswith(DROP_CHILD)]
    assert [layer.effective_retain_rate().item() for layer in layer3] == pytest.approx([0.6, 0.6])  # 1 - 0.5 x 0.8


def test_whole_model_patterns_match_paths_from_the_top_level_child():
    """Kills _chosen_children 2 through the patterns: with ``modules=None`` the positions' paths start at the
    model's own children (``layer1.0.bn1``), so ``exclude``/``followed_by_relu`` patterns written that way match."""
    model = create_model("resnet8", 10)
    insert_drops(model, FACTORY, exclude=("layer1.*", "bn1"), followed_by_relu=("layer2.0.bn1",))
    assert sorted(_rate_scales(model)) == ["layer2.0.bn1", "layer2.0.bn2", "layer3.0.bn1", "layer3.0.bn2"]
    assert getattr(model.layer2[0].bn1, DROP_CHILD).nonnegative_input
    assert not getattr(model.layer3[0].bn1, DROP_CHILD).nonnegative_input


def test_a_followed_by_relu_that_is_not_a_pattern_sequence_is_an_error_naming_that_argument():
    """Kills insert_drops 16, 20, 21 (the argument's name in the check lost or misspelt): a bare string is the one
    likely mistake (``followed_by_relu="*.bn1"`` would iterate characters), and the error must say which argument."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match=r"^followed_by_relu='\*\.bn1' must be a sequence of module-path patterns"):
        insert_drops(model, FACTORY, followed_by_relu="*.bn1")
    with pytest.raises(TypeError, match=r"^followed_by_relu=\(1,\) must be a sequence"):
        insert_drops(model, FACTORY, followed_by_relu=(1,))


class _Recorder(nn.Module):
    """A 'drop layer' that records what it receives and passes it on unchanged."""

    def __init__(self, rate_scale: float = 1.0) -> None:
        super().__init__()
        self.nonnegative_input = False
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return x


def test_a_followed_by_relu_position_drops_the_relu_output_and_the_others_the_signed_bn_output():
    """Kills insert_drops 87 (the ReLU-first hook never used). The paper's order is conv-BN-ReLU-[drop]: at a
    position the network passes through a ReLU next, the drop layer must receive ReLU(BN(x)) (>= 0: a selective
    method ranks the maps by max y, as in this project's own models), elsewhere the signed BN output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        bn1 = model[1](model[0](x))
        plain = model(x)
    insert_drops(model, _Recorder, followed_by_relu=("1",))
    first, second = getattr(model[1], DROP_CHILD), getattr(model[4], DROP_CHILD)
    with torch.no_grad():
        out = model(x)
    assert torch.equal(first.seen[0], torch.relu(bn1)) and first.nonnegative_input
    assert (second.seen[0] < 0).any() and not second.nonnegative_input  # BN output, before any ReLU
    assert torch.equal(out, plain)  # the network's own ReLU changes nothing after the hook's


# --- CIFAR ResNet: a basic block whose stride and width need not change together ---------------------------------


@pytest.mark.parametrize("in_channels, out_channels, stride", [(4, 8, 1), (4, 4, 2), (4, 8, 2)])
def test_basic_block_shortcut_pads_or_subsamples_whenever_the_shape_changes(in_channels, out_channels, stride):
    """Kills BasicBlock.__init__ 47 (a shortcut only when stride *and* width change). He et al.'s option A: the
    shortcut subsamples (stride) and zero-pads channels (width) whenever the residual branch changes the shape.
    With the residual branch silenced (bn2 = 0) the block's output is ReLU(shortcut(x))."""
    block = BasicBlock(in_channels, out_channels, stride, None, "pad").eval()
    assert isinstance(block.shortcut, PaddingShortcut)
    nn.init.zeros_(block.bn2.weight)
    x = torch.randn(2, in_channels, 6, 6)
    expected = F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, 0, out_channels - in_channels)).relu()
    with torch.no_grad():
        assert torch.equal(block(x), expected)


# --- ResNeXt-29 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_channels, out_channels, stride", [(8, 8, 1), (8, 16, 2)], ids=["identity", "projection"])
def test_resnext_block_adds_its_residual_to_the_shortcut(in_channels, out_channels, stride):
    """Kills ResNeXtBlock.forward 15 (out - shortcut). A residual block computes ReLU(F(x) + shortcut(x)): with
    F silenced (bn_expand = 0) it passes ReLU(shortcut(x)) on, the identity block ReLU(x) itself; with F as it is,
    the output is ReLU of the sum of F and the shortcut, each run apart."""
    torch.manual_seed(1)
    block = ResNeXtBlock(in_channels, 8, out_channels, stride, cardinality=2, drop=None).eval()
    x = torch.randn(2, in_channels, 6, 6)
    with torch.no_grad():
        residual = block.bn_expand(block.conv_expand(
            F.relu(block.bn_group(block.conv_group(F.relu(block.bn_reduce(block.conv_reduce(x))))))))
        assert torch.allclose(block(x), F.relu(residual + block.shortcut(x)))
        nn.init.zeros_(block.bn_expand.weight)
        assert torch.equal(block(x), F.relu(block.shortcut(x)))
        if stride == 1:
            assert torch.equal(block(x), F.relu(x))


def test_resnext_defaults_are_the_papers_resnext29_8x64d():
    """Kills CifarResNeXt.__init__ 1 and 2 (cardinality 9, base width 65 by default). ``CifarResNeXt(num_classes)``
    is ResNeXt-29 (8x64d) of Xie et al. (Table 7: 34.4M parameters), the paper's Table 3 network, as
    ``resnext29_8x64d`` builds it: 8 groups, 512/1024/2048 inner channels."""
    with torch.device("meta"):
        model, registered = CifarResNeXt(10), create_model("resnext29_8x64d", 10)
    shapes = {key: value.shape for key, value in model.state_dict().items()}
    assert shapes == {key: value.shape for key, value in registered.state_dict().items()}
    first_blocks = [stage[0] for stage in (model.layer1, model.layer2, model.layer3)]
    assert [block.conv_group.groups for block in first_blocks] == [8, 8, 8]
    assert [block.conv_group.in_channels for block in first_blocks] == [512, 1024, 2048]
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 34.4


# --- ResNet-50 (torchvision's classes with drop slots) ------------------------------------------------------------


def test_drop_bottleneck_takes_torchvisions_keyword_arguments():
    """Kills DropBottleneck.__init__ 2 (keyword arguments not passed on). torchvision's ``ResNet._make_layer`` builds
    every block after a stage's first with ``groups=``, ``base_width=``, ``dilation=``, ``norm_layer=`` keywords: a
    DropBottleneck must honour them as torchvision's Bottleneck does, or a grouped network built from it (ResNeXt-50
    32x4d) silently gets plain ResNet blocks. Without drops the two blocks compute the same function."""
    with torch.device("meta"):
        grouped, reference = DropResNet(DropBottleneck, [3, 4, 6, 3], groups=32, width_per_group=4), resnext50_32x4d()
    shapes = {key: value.shape for key, value in grouped.state_dict().items()}
    assert shapes == {key: value.shape for key, value in reference.state_dict().items()}
    assert all(block.conv2.groups == 32 for block in grouped.layer1)
    torch.manual_seed(2)
    ours = DropBottleneck(16, 4, groups=2, base_width=128, dilation=2, norm_layer=nn.BatchNorm2d).eval()
    theirs = Bottleneck(16, 4, groups=2, base_width=128, dilation=2).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 7, 7)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert ours.conv2.groups == 2 and ours.conv2.dilation == (2, 2) and ours.conv2.out_channels == 16


def test_set_drop_puts_no_drop_on_the_shortcut_unless_asked():
    """Kills DropBottleneck.set_drop 1 (``on_shortcut=True`` by default). The paper's placement is after every BN of
    the main path (3 per block, 27 in layer3 + layer4); a drop after the downsample BN is the opt-in
    ``drop_on_shortcut`` reading (29). ``set_drop(drop, rate_scale)`` must give the paper's."""
    downsample = nn.Sequential(conv1x1(16, 32, 2), nn.BatchNorm2d(32))
    block = DropBottleneck(16, 8, stride=2, downsample=downsample)
    block.set_drop(FACTORY, 0.5)
    assert len(block.downsample) == 2 and len(list(drop_layers(block))) == 3
    assert all(layer.rate_scale == 0.5 for layer in drop_layers(block))
    block = DropBottleneck(16, 8, stride=2, downsample=nn.Sequential(conv1x1(16, 32, 2), nn.BatchNorm2d(32)))
    block.set_drop(FACTORY, 0.5, on_shortcut=True)
    assert len(block.downsample) == 3 and len(list(drop_layers(block))) == 4
