"""Issue 14: every open reading of the paper is one override away, changes what it should and nothing else.

Each switch: its effect (the count, the strength, the pixels, the layer count), the default untouched, the
validation message, and that an old record without the key still compares equal to today's default."""

import math
from pathlib import Path

import pytest
import torch
import torchvision
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from report_fixtures import make_result
from torchvision import transforms as T

from selectscale.data.imagenet import Lighting, imagenet_train_transform
from selectscale.data.loader import DeviceLoader, crop_and_flip, pad_images
from selectscale.drop import Selectout, SelectScale, build_drop, drop_factory, drop_layers
from selectscale.drop.functional import num_top_maps, round_count, select_scale, selectout
from selectscale.engine import ConfigError, register_configs
from selectscale.engine.config import validate
from selectscale.engine.model_setup import build_model
from selectscale.engine.schedule import drop_strength, learning_rate, steps_to_strength
from selectscale.models import create_model
from selectscale.report.collect import setting_of
from selectscale.runs.directory import config_differences
from selectscale.runs.history import ADDED_KEYS, with_added_keys

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()


def make_cfg(*overrides: str, root: str = "/tmp"):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[f"dataset.root={root}", *overrides])


# --- drop.rounding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("top_rate", "channels", "expected"), [
    (0.25, 10, {"round": 3, "floor": 2, "ceil": 3}),  # 2.5: half up
    (0.15, 10, {"round": 2, "floor": 1, "ceil": 2}),
    (0.2, 10, {"round": 2, "floor": 2, "ceil": 2}),  # an exact product stays itself under every reading
    (0.7, 10, {"round": 7, "floor": 7, "ceil": 7}),  # 0.7 * 10 = 7.000000000000001 in floats: not ceil 8
    (0.01, 16, {"round": 1, "floor": 1, "ceil": 1}),  # at least one candidate whenever top_rate > 0
])
def test_num_top_maps_under_each_rounding(top_rate, channels, expected):
    assert {mode: num_top_maps(top_rate, channels, mode) for mode in expected} == expected
    assert num_top_maps(top_rate, channels) == expected["round"]  # the default is the paper's round()


def _changed_maps(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out != y).flatten(2).any(2).sum(1)  # per sample: maps whose values changed


def test_selectscale_scales_as_many_maps_as_the_rounding_says():
    y = torch.rand(8, 10, 4, 4) + 0.5  # positive, distinct maps: every scaled map changes
    for mode, k in (("round", 3), ("floor", 2), ("ceil", 3)):
        out = select_scale(y, 0.25, 0.0, rounding=mode)
        assert _changed_maps(out, y).tolist() == [k] * 8, mode


def test_selectout_drops_as_many_maps_as_the_rounding_says():
    y = torch.rand(8, 10, 4, 4) + 0.5
    for mode, dropped in (("round", 2), ("floor", 1), ("ceil", 2)):  # (1 - 0.85) * 10 = 1.5 maps
        out = selectout(y, 0.5, 0.85, rounding=mode)
        assert ((out == 0).flatten(2).all(2).sum(1) == dropped).all(), mode


def test_rounding_is_a_layer_argument_shown_in_its_repr_and_checked():
    layer = build_drop("selectscale", top_rate=0.25, retain_rate=0.1, rounding="floor")
    assert isinstance(layer, SelectScale) and "rounding=floor" in repr(layer)
    assert "rounding" not in repr(SelectScale(0.25, 0.1))  # the default is not noise in every repr
    assert isinstance(build_drop("selectout", top_rate=0.5, retain_rate=0.9, rounding="ceil"), Selectout)
    with pytest.raises(ValueError, match="rounding='nearest' is not known: use one of round, floor, ceil"):
        SelectScale(0.2, 0.1, rounding="nearest")
    with pytest.raises(ValueError, match="rounding"):
        round_count(1.5, "banker")


def test_rounding_in_the_config_reaches_the_layers_and_only_selective_methods_take_it():
    cfg = make_cfg("dataset=synthetic", "drop=selectscale", "drop.rounding=ceil")
    validate(cfg)
    model = build_model(cfg, 10, torch.device("cpu"))
    assert {layer.rounding for layer in drop_layers(model)} == {"ceil"}
    with pytest.raises(ConfigError, match="drop.rounding='floor' is invalid: spatial_dropout has no rounding"):
        validate(make_cfg("dataset=synthetic", "drop=spatial_dropout", "drop.rounding=floor"))
    with pytest.raises(ConfigError, match="drop.rounding='up' is invalid: use one of round, floor, ceil"):
        validate(make_cfg("dataset=synthetic", "drop=selectscale", "drop.rounding=up"))
    validate(make_cfg("dataset=synthetic", "drop=spatial_dropout"))  # the default passes for every method


# --- curriculum=exponential ------------------------------------------------------------------------------

def test_exponential_curriculum_is_morerio_et_al_form_per_step():
    curriculum = make_cfg("curriculum=exponential").curriculum
    assert (curriculum.name, curriculum.gamma, curriculum.per) == ("exponential", 0.001, "step")
    steps_per_epoch = 391  # CIFAR at batch 128
    assert drop_strength(curriculum, 0.0, 200, steps_per_epoch) == 0.0
    at_1000_steps = drop_strength(curriculum, 1000 / steps_per_epoch, 200, steps_per_epoch)
    assert at_1000_steps == pytest.approx(1 - math.exp(-1.0))
    # retain rate theta(t) = (1 - theta_bar) exp(-gamma t) + theta_bar, i.e. 1 - strength * (1 - theta_bar)
    theta_bar = 0.9
    assert 1 - at_1000_steps * (1 - theta_bar) == pytest.approx((1 - theta_bar) * math.exp(-1.0) + theta_bar)
    assert steps_to_strength(0.001, 0.95) == pytest.approx(2995.7, abs=0.1)  # the ramp length in the docs
    per_epoch = OmegaConf.merge(curriculum, {"per": "epoch"})
    assert drop_strength(per_epoch, 2.9, 200, 100) == pytest.approx(1 - math.exp(-0.2))  # epoch start: step 200


def test_exponential_curriculum_validates_gamma_and_linear_is_unchanged():
    with pytest.raises(ConfigError, match="curriculum.gamma=0.0 is invalid: allowed range is \\(0.0, 1.0\\]"):
        validate(make_cfg("dataset=synthetic", "curriculum=exponential", "curriculum.gamma=0"))
    linear = make_cfg("curriculum=linear").curriculum
    assert drop_strength(linear, 2.5, 10, 391) == 0.25  # the linear ramp ignores steps_per_epoch


# --- schedule.warmup_steps -------------------------------------------------------------------------------

def test_warmup_holds_the_warmup_lr_for_its_steps_then_the_schedule_takes_over():
    schedule = make_cfg("schedule.warmup_steps=400").schedule
    assert (schedule.warmup_steps, schedule.warmup_lr) == (400, 0.01)
    steps_per_epoch = 391
    lr = [learning_rate(schedule, step / steps_per_epoch, 200, steps_per_epoch) for step in (0, 391, 399, 400, 401)]
    assert lr == [0.01, 0.01, 0.01, 0.1, 0.1]
    off = make_cfg().schedule
    assert off.warmup_steps == 0 and learning_rate(off, 0.0, 200, steps_per_epoch) == 0.1  # default: none
    with pytest.raises(ConfigError, match="schedule.warmup_steps=-1 is invalid"):
        validate(make_cfg("dataset=synthetic", "schedule.warmup_steps=-1"))


# --- dataset.padding_mode --------------------------------------------------------------------------------

def test_reflect_padding_matches_torch_reflection_on_uint8():
    images = torch.randint(0, 256, (2, 3, 6, 5), dtype=torch.uint8)
    expected = torch.nn.functional.pad(images.float(), (4, 4, 4, 4), mode="reflect").to(torch.uint8)
    assert torch.equal(pad_images(images, 4, "reflect"), expected)
    assert torch.equal(pad_images(images, 4, "zeros"), torch.nn.functional.pad(images, (4, 4, 4, 4)))
    with pytest.raises(ValueError, match="padding_mode='edge' is not known: use one of zeros, reflect"):
        pad_images(images, 4, "edge")


def test_padding_mode_changes_only_pixels_that_come_from_the_padding():
    images = torch.randint(1, 256, (4, 3, 8, 8), dtype=torch.uint8)  # no zero pixel in the images
    offsets = torch.tensor([[4, 4], [0, 0], [8, 8], [0, 8]])  # centre, and the three corner crops
    flips = torch.tensor([False, True, False, True])
    zeros = crop_and_flip(images, offsets, flips, 4, "zeros")
    reflect = crop_and_flip(images, offsets, flips, 4, "reflect")
    assert torch.equal(zeros[0], reflect[0])  # the centre crop sees no padding
    differs = zeros != reflect
    assert torch.equal(differs, (zeros == 0) & differs) and differs[1:].any()  # only the black padding changed
    assert (reflect > 0).all()  # reflection never brings in black


def test_padding_mode_reaches_the_loader_and_imagenet_refuses_reflect():
    cfg = make_cfg("dataset=synthetic", "dataset.padding_mode=reflect")
    validate(cfg)
    loader = DeviceLoader(torch.zeros(8, 3, 8, 8, dtype=torch.uint8), torch.zeros(8, dtype=torch.int64), 4,
                          train=True, seed=0, mean=(0.5,) * 3, std=(0.5,) * 3, device="cpu", padding_mode="reflect")
    assert loader.padding_mode == "reflect"
    with pytest.raises(ConfigError, match="dataset.padding_mode='reflect' is invalid: ImageNet's RandomResizedCrop"):
        validate(make_cfg("dataset=imagenet", "dataset.padding_mode=reflect"))


# --- dataset.color_jitter / dataset.lighting -------------------------------------------------------------

def _steps(transform: T.Compose) -> list[type]:
    return [type(step) for step in transform.transforms]


def test_colour_augmentation_readings():
    both = _steps(imagenet_train_transform())
    assert T.ColorJitter in both and Lighting in both  # fb.resnet.torch: jitter 0.4 + lighting 0.1
    lighting_only = _steps(imagenet_train_transform(jitter=0.0))
    assert T.ColorJitter not in lighting_only and Lighting in lighting_only
    none = _steps(imagenet_train_transform(jitter=0.0, lighting_std=0.0))
    assert none == [T.RandomResizedCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    jitter = imagenet_train_transform(jitter=0.2).transforms[2]
    assert list(jitter.brightness) == pytest.approx([0.8, 1.2]) and list(jitter.saturation) == pytest.approx([0.8, 1.2])


def test_colour_augmentation_config_is_imagenet_only():
    cfg = make_cfg("dataset=imagenet")
    assert (cfg.dataset.color_jitter, cfg.dataset.lighting) == (0.4, 0.1)
    validate(make_cfg("dataset=imagenet", "dataset.color_jitter=0", "dataset.lighting=0"))
    assert make_cfg("dataset=cifar10").dataset.color_jitter is None
    with pytest.raises(ConfigError, match="dataset.color_jitter=0.4 is invalid: it is ImageNet's colour augmentation"):
        validate(make_cfg("dataset=synthetic", "dataset.color_jitter=0.4"))
    with pytest.raises(ConfigError, match="dataset.lighting=2.0 is invalid: allowed range is \\[0.0, 1.0\\]"):
        validate(make_cfg("dataset=imagenet", "dataset.lighting=2.0"))


# --- model.drop_on_shortcut / model.drop_after_stem ------------------------------------------------------

def _factory():
    return drop_factory("spatial_dropout", retain_rate=0.9)


def test_resnet50_drop_on_shortcut_adds_two_layers_and_keeps_torchvisions_keys():
    plain = create_model("resnet50", 10, drop=_factory())
    shortcut = create_model("resnet50", 10, drop=_factory(), drop_on_shortcut=True)
    assert (len(list(drop_layers(plain))), len(list(drop_layers(shortcut)))) == (27, 29)
    assert shortcut.layer3[0].downsample[2].rate_scale == 0.5 and shortcut.layer4[0].downsample[2].rate_scale == 1.0
    reference = torchvision.models.resnet50(num_classes=10).state_dict()
    assert list(shortcut.state_dict()) == list(reference)
    shortcut.load_state_dict(plain.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    assert torch.equal(plain.eval()(x), shortcut.eval()(x))  # identity in eval: the same network


def test_cifar_drop_after_stem_adds_one_layer_and_nothing_else():
    torch.manual_seed(0)
    plain = create_model("resnet20", 10, drop=_factory())
    torch.manual_seed(0)
    stem = create_model("resnet20", 10, drop=_factory(), drop_after_stem=True)
    assert (len(list(drop_layers(plain))), len(list(drop_layers(stem)))) == (18, 19)
    assert list(plain.state_dict()) == list(stem.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(plain.eval()(x), stem.eval()(x))
    assert len(list(drop_layers(create_model("resnext29_8x64d", 10, drop=_factory(), drop_after_stem=True)))) == 19


def test_drop_placements_in_the_config():
    cfg = make_cfg("dataset=synthetic", "model=resnet8", "drop=selectscale", "model.drop_after_stem=true")
    validate(cfg)
    assert len(list(drop_layers(build_model(cfg, 10, torch.device("cpu"))))) == 7  # 2 x 3 blocks + the stem
    with pytest.raises(ConfigError, match="model.drop_on_shortcut=True is invalid: resnet20 has no drop_on_shortcut "
                       "option; only resnet50"):
        validate(make_cfg("dataset=synthetic", "model.drop_on_shortcut=true"))
    with pytest.raises(ConfigError, match="model.drop_after_stem=True is invalid: resnet50 has no drop_after_stem"):
        validate(make_cfg("dataset=imagenet", "model.drop_after_stem=true"))


# --- old records compare equal to today's defaults -------------------------------------------------------

def _without_added_keys(config: dict) -> dict:
    """``config`` as a run recorded before issue 14 saved it."""
    old = OmegaConf.to_container(OmegaConf.create(config))
    for dotted in ADDED_KEYS:
        group, key = dotted.split(".")
        old[group].pop(key, None)
    return old


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet"])
def test_a_run_recorded_before_the_switches_resumes_and_groups_with_todays_default(dataset):
    # trainer.precision=fp32: what a run recorded before the precision switch trained in (its cpu_amp was false);
    # today's default, auto, is bf16 on a CPU with native bf16, a setting of its own (issue 35).
    current = make_cfg(f"dataset={dataset}", "drop=selectscale", "trainer.precision=fp32")
    saved = OmegaConf.create(_without_added_keys(OmegaConf.to_container(current, resolve=True)))
    assert config_differences(saved, current) == []
    assert setting_of(OmegaConf.to_container(saved)) == setting_of(OmegaConf.to_container(current, resolve=True))
    floor = make_cfg(f"dataset={dataset}", "drop=selectscale", "trainer.precision=fp32", "drop.rounding=floor")
    assert config_differences(saved, floor) == ["drop.rounding=floor (saved: round)"]  # another reading: refused


def test_every_switch_is_part_of_the_setting_so_readings_never_average():
    base = make_result()
    readings = {"config.drop.rounding": "floor", "config.curriculum.gamma": 0.01, "config.schedule.warmup_steps": 400,
                "config.dataset.padding_mode": "reflect", "config.model.drop_after_stem": True}
    for dotted, value in readings.items():
        other = make_result(**{dotted: value})
        assert setting_of(other["config"]) != setting_of(base["config"]), dotted
    assert with_added_keys({"dataset.name": "imagenet"})["dataset.color_jitter"] == 0.4
    assert with_added_keys({"dataset.name": "cifar10"})["dataset.color_jitter"] is None


# --- model.pretrained (issue 15) ----------------------------------------------------------------------------

def test_pretrained_loads_a_torchvision_weight_file_strictly(tmp_path):
    torch.manual_seed(1)
    published = torchvision.models.resnet50()
    path = tmp_path / "resnet50-published.pth"
    torch.save(published.state_dict(), path)  # a torchvision weight file is exactly this: a bare state dict
    model = create_model("resnet50", 1000, drop=_factory(), pretrained=path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), published.state_dict().values(),
                                                 strict=True))
    with pytest.raises(ValueError, match="does not fit resnet50: a different shape for 2 key"):
        create_model("resnet50", 10, pretrained=path)  # 10 classes: fc.weight and fc.bias differ
    with pytest.raises(FileNotFoundError, match="no such file"):
        create_model("resnet50", 1000, pretrained=tmp_path / "missing.pth")


def test_pretrained_in_the_config(tmp_path):
    torch.manual_seed(2)
    source = create_model("resnet8", 10)
    path = tmp_path / "resnet8.pt"
    torch.save({"model": source.state_dict()}, path)  # this project's checkpoint layout works too
    cfg = make_cfg("dataset=synthetic", "model=resnet8", "drop=selectscale", f"model.pretrained={path}")
    validate(cfg)
    model = build_model(OmegaConf.merge(cfg, {"trainer": {"channels_last": False}}), 10, torch.device("cpu"))
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    with pytest.raises(ConfigError, match="model.pretrained=.* does not fit resnet8: missing"):
        torch.save({"conv1.weight": source.conv1.weight}, path)
        build_model(cfg, 10, torch.device("cpu"))
    with pytest.raises(ConfigError, match="model.pretrained='/nonexistent.pth' is invalid: no such file"):
        validate(make_cfg("dataset=synthetic", "model.pretrained=/nonexistent.pth"))
