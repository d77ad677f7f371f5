"""Models: golden parameter counts, shapes, drop placement, torchvision parity, bad input."""

import functools

import pytest
import torch
import torchvision
from torch import nn

from selectscale.drop import DropLayer, SelectScale, SpatialDropout, drop_factory, drop_layers
from selectscale.models import create_model, list_models, model_spec
from selectscale.models.complexity import count_macs, count_parameters
from selectscale.models.resnext import CifarResNeXt

CIFAR_MODELS = [m for m in list_models() if "cifar10" in model_spec(m).datasets]
# Large models are checked on the meta device (shapes without memory or compute).
LARGE = {"resnext29_8x64d", "resnext29_16x64d", "resnet50", "wrn20_8"}


def build(name, num_classes=10, drop=None, **options):
    device = "meta" if name in LARGE else "cpu"
    with torch.device(device):
        return create_model(name, num_classes, drop=drop, **options)


# --- Parameter counts computed by hand from the architectures (weights + BN affine + classifier) ----
def cifar_resnet_parameters(depth: int, width: int, classes: int) -> int:
    blocks = (depth - 2) // 6
    widths = [16 * width, 32 * width, 64 * width]
    total = 3 * 9 * widths[0] + 2 * widths[0]  # stem conv + BN
    in_channels = widths[0]
    for out in widths:
        for _ in range(blocks):
            total += 9 * in_channels * out + 9 * out * out + 4 * out  # two 3x3 convs, two BNs
            in_channels = out
    return total + widths[-1] * classes + classes


def resnext29_parameters(cardinality: int, base_width: int, classes: int) -> int:
    total, in_channels = 3 * 9 * 64 + 2 * 64, 64
    for stage in range(3):
        inner, out = cardinality * base_width * 2**stage, 256 * 2**stage
        for _ in range(3):
            total += in_channels * inner + 2 * inner  # 1x1 reduce + BN
            total += 9 * inner * inner // cardinality + 2 * inner  # grouped 3x3 + BN
            total += inner * out + 2 * out  # 1x1 expand + BN
            if in_channels != out:
                total += in_channels * out + 2 * out  # projection shortcut + BN
            in_channels = out
    return total + 1024 * classes + classes


GOLDEN = {  # literal values, so that a change to the formulas above cannot hide a change to a model
    ("resnet8", 10): 75_290, ("resnet8", 100): 81_140,
    ("resnet20", 10): 269_722, ("resnet20", 100): 275_572,
    ("resnet32", 10): 464_154, ("resnet44", 10): 658_586, ("resnet56", 10): 853_018,
    ("resnet110", 10): 1_727_962, ("resnet110", 100): 1_733_812,
    ("wrn20_2", 10): 1_073_962, ("wrn20_4", 10): 4_286_026, ("wrn20_4", 100): 4_309_156,
    ("wrn20_8", 10): 17_124_490, ("wrn20_8", 100): 17_170_660,
    ("resnext29_8x64d", 10): 34_426_698, ("resnext29_8x64d", 100): 34_518_948,
    ("resnext29_16x64d", 10): 68_155_210, ("resnext29_16x64d", 100): 68_247_460,
    ("resnet50", 1000): 25_557_032, ("resnet50", 10): 23_528_522, ("resnet50", 100): 23_712_932,
}
PUBLISHED = {"resnet110": 1.7e6, "resnet20": 0.27e6, "resnext29_8x64d": 34.4e6, "resnext29_16x64d": 68.1e6}


def hand_count(name: str, classes: int) -> int:
    if name.startswith("resnet") and name != "resnet50":
        return cifar_resnet_parameters(int(name[6:]), 1, classes)
    if name.startswith("wrn20_"):
        return cifar_resnet_parameters(20, int(name[6:]), classes)
    if name.startswith("resnext29_"):
        return resnext29_parameters(int(name.split("_")[1].split("x")[0]), 64, classes)
    return 25_557_032 - 2048 * 1000 - 1000 + 2048 * classes + classes


@pytest.mark.parametrize("name, classes", sorted(GOLDEN))
def test_golden_parameter_counts(name, classes):
    count = count_parameters(build(name, classes))
    assert count == GOLDEN[(name, classes)] == hand_count(name, classes)
    if name in PUBLISHED and classes == 10:
        assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.02


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_a_golden_count_for_10_and_100_classes(name):
    for classes in (10, 100):
        assert count_parameters(build(name, classes)) == hand_count(name, classes)


EXPECTED_DROPS = {"resnet8": 6, "resnet20": 18, "resnet32": 30, "resnet44": 42, "resnet56": 54, "resnet110": 108,
                  "wrn20_2": 18, "wrn20_4": 18, "wrn20_8": 18, "resnext29_8x64d": 18, "resnext29_16x64d": 18,
                  "resnet50": 27}


@pytest.mark.parametrize("name", list_models())
def test_output_shape_and_number_of_drop_layers(name):
    factory = functools.partial(SelectScale, top_rate=0.2, retain_rate=0.1)
    model = build(name, 7, drop=factory)
    drops = [m for m in model.modules() if isinstance(m, DropLayer)]
    assert len(drops) == EXPECTED_DROPS[name]
    assert not any(isinstance(m, DropLayer) for m in build(name, 7).modules())
    size = 224 if name == "resnet50" else 32
    x = torch.randn(2, 3, size, size, device="meta" if name in LARGE else "cpu")
    assert model.train()(x).shape == (2, 7)


def drop_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, DropLayer)]


def test_cifar_resnet_drop_positions():
    model = create_model("resnet20", 10, drop=functools.partial(SpatialDropout, retain_rate=0.9))
    names = drop_names(model)
    assert names[:2] == ["layer1.0.drop1", "layer1.0.drop2"] and names[-1] == "layer3.2.drop2"
    assert not any("shortcut" in n for n in names)
    # block = conv-BN-ReLU-[drop] then conv-BN-[drop]: the first drop sees post-ReLU maps.
    seen = {}
    block = model.layer2[0]
    block.drop1.register_forward_hook(lambda m, i, o: seen.setdefault("drop1", i[0]))
    block.drop2.register_forward_hook(lambda m, i, o: seen.setdefault("drop2", i[0]))
    model.eval()(torch.randn(2, 3, 32, 32))
    assert (seen["drop1"] >= 0).all() and (seen["drop2"] < 0).any()
    assert seen["drop1"].shape == (2, 32, 16, 16)


def test_resnext_drops_surround_the_group_convolution():
    model = build("resnext29_8x64d", drop=functools.partial(SelectScale, top_rate=0.1, retain_rate=0.2))
    names = drop_names(model)
    assert names[:2] == ["layer1.0.drop_reduce", "layer1.0.drop_group"] and len(names) == 18
    block = model.layer1[0]
    assert block.conv_group.groups == 8 and block.conv_group.in_channels == 512
    assert model.layer3[0].conv_group.out_channels == 2048 and model.fc.in_features == 1024


def test_resnet50_drops_in_groups_3_and_4_with_half_rate_in_group_3():
    model = build("resnet50", 1000, drop=functools.partial(SelectScale, top_rate=0.1, retain_rate=0.2))
    scales = {name: module.rate_scale for name, module in model.named_modules() if isinstance(module, DropLayer)}
    assert {n.split(".")[0] for n in scales} == {"layer3", "layer4"}
    assert sum(n.startswith("layer3") for n in scales) == 18 and sum(n.startswith("layer4") for n in scales) == 9
    assert all(s == 0.5 for n, s in scales.items() if n.startswith("layer3"))
    assert all(s == 1.0 for n, s in scales.items() if n.startswith("layer4"))


def test_resnet50_is_torchvision_resnet50():
    torch.manual_seed(0)
    reference = torchvision.models.resnet50()
    ours = create_model("resnet50", 1000, drop=functools.partial(SpatialDropout, retain_rate=0.9))
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    ours.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    torch.testing.assert_close(ours.eval()(x), reference.eval()(x))
    plain = create_model("resnet50", 1000)
    plain.load_state_dict(ours.state_dict(), strict=True)
    reference.load_state_dict(plain.state_dict(), strict=True)  # and back
    torch.testing.assert_close(plain.eval()(x), reference(x))


@pytest.mark.parametrize("name", ["resnet20", "wrn20_2", "resnet50"])
def test_zero_parameter_drop_layers_add_no_state_dict_entries(name):
    factory = functools.partial(SelectScale, top_rate=0.2, retain_rate=0.1)
    with torch.device("meta"):
        assert build(name).state_dict().keys() == create_model(name, 10, drop=factory).state_dict().keys()


@pytest.mark.parametrize("shortcut", ["pad", "avgpool"])
def test_shortcut_options_are_parameter_free_and_differ(shortcut):
    torch.manual_seed(0)
    model = create_model("resnet20", 10, shortcut=shortcut)
    assert count_parameters(model) == GOLDEN[("resnet20", 10)]
    other = create_model("resnet20", 10, shortcut="avgpool" if shortcut == "pad" else "pad")
    other.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(model.eval()(x), other.eval()(x))


@pytest.mark.parametrize("name", ["resnet20", "resnext29_8x64d"])
def test_channels_last_forward_matches_contiguous(name):
    torch.manual_seed(0)
    # A narrow ResNeXt (cardinality 2, width 4) keeps the check fast; the code path is the same.
    model = CifarResNeXt(10, cardinality=2, base_width=4) if name.startswith("resnext") else create_model(name, 10)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "name, image_size, published_macs",
    [("resnet110", 32, 0.25e9), ("resnext29_8x64d", 32, 5.4e9), ("resnet50", 224, 4.1e9)],
)
def test_measured_macs_match_published_figures(name, image_size, published_macs):
    with torch.device("meta"):
        model = create_model(name, 1000 if name == "resnet50" else 10)
    assert abs(count_macs(model, image_size) - published_macs) / published_macs < 0.02


BAD = [
    (lambda: create_model("resnet18", 10), ["'resnet18'", "resnet110", "wrn20_8", "resnext29_8x64d", "resnet50"]),
    (lambda: create_model("resnet20", 0), ["num_classes=0", ">= 1"]),
    (lambda: create_model("resnet20", 2.5), ["num_classes=2.5"]),
    (lambda: create_model("resnet20", 10, drop="selectscale"), ["drop='selectscale'", "not callable"]),
    (lambda: create_model("resnet20", 10, shortcut="conv"), ["shortcut='conv'", "pad, avgpool"]),
]


@pytest.mark.parametrize("construct, fragments", BAD)
def test_bad_input_raises_value_error_with_reason(construct, fragments):
    with pytest.raises(ValueError) as error:
        construct()
    for fragment in fragments:
        assert fragment in str(error.value)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "wrn20_2"])
def test_compiled_model_matches_eager_in_eval_and_trains(name):
    torch.manual_seed(0)
    model = create_model(name, 10, drop=functools.partial(SelectScale, top_rate=0.2, retain_rate=0.1))
    compiled = torch.compile(model)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(compiled.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-4)
    loss = compiled.train()(x).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name, channels, size", [("resnet20", 64, 8), ("wrn20_4", 256, 8),
                                                  ("resnext29_8x64d", 1024, 8), ("resnet50", 2048, 7)])
def test_features_are_the_last_convolutional_maps_that_feed_the_classifier(name, channels, size):
    model = build(name, 10).eval()
    x = torch.randn(2, 3, size * 4 if name != "resnet50" else 224, size * 4 if name != "resnet50" else 224,
                    device="meta" if name in LARGE else "cpu")
    assert model.features(x).shape == (2, channels, size, size)
    assert model.fc.in_features == channels


@pytest.mark.parametrize("name, after_relu, signed",
                         [("resnet20", 9, 9), ("resnext29_8x64d", 18, 0), ("resnet50", 18, 9)])
def test_slots_after_a_relu_score_without_the_absolute_value(name, after_relu, signed):
    """Slots fed by a ReLU get nonnegative_input=True (max y = max |y| there: same scores, one reduction)."""
    with torch.device("meta"):
        model = create_model(name, 10, drop=drop_factory("selectscale", top_rate=0.2, retain_rate=0.1))
    flags = [layer.nonnegative_input for layer in drop_layers(model)]
    assert flags.count(True) == after_relu and flags.count(False) == signed
