"""The real configs, composed with hydra.compose: recipes, schemas, validate(), the pure schedules."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from selectscale.engine import ConfigError, register_configs, validate
from selectscale.engine.schedule import drop_strength, learning_rate

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg


def test_default_is_the_paper_cifar_recipe():
    cfg = make_cfg()
    assert (cfg.dataset.name, cfg.model.name, cfg.drop.name) == ("cifar10", "resnet20", "none")
    assert cfg.trainer.epochs == 200 and cfg.trainer.batch_size == 128 and cfg.trainer.weight_decay == 5e-4
    assert cfg.schedule.lr == 0.1 and cfg.schedule.gamma == 0.2
    assert list(cfg.schedule.milestone_epochs) == [60, 120, 160]
    assert cfg.trainer.momentum == 0.9 and cfg.trainer.nesterov is True


def test_imagenet_brings_its_recipe_and_overrides_still_win():
    cfg = make_cfg("dataset=imagenet")
    assert cfg.model.name == "resnet50" and cfg.trainer.batch_size == 256 and cfg.trainer.weight_decay == 1e-4
    assert cfg.trainer.epochs == 105 and list(cfg.schedule.milestone_epochs) == [30, 60, 90, 100]
    assert cfg.schedule.gamma == 0.1 and cfg.trainer.nesterov is False
    cfg = make_cfg("dataset=imagenet", "schedule=cosine", "trainer.batch_size=64")
    assert cfg.schedule.name == "cosine" and cfg.trainer.batch_size == 64


def test_shortened_run_scales_milestones():
    cfg = make_cfg("model=wrn20_8", "drop=selectscale", "trainer.epochs=20")
    assert list(cfg.schedule.milestone_epochs) == [6, 12, 16]
    assert (cfg.drop.top_rate, cfg.drop.retain_rate) == (0.2, 0.1)


@pytest.mark.parametrize("drop", ["none", "dropout", "spatial_dropout", "spatial_scale", "selectout", "selectscale"])
@pytest.mark.parametrize("model", ["resnet110", "wrn20_4", "resnext29_8x64d"])
def test_every_shipped_drop_and_model_option_validates(drop, model, tmp_path):
    validate(make_cfg(f"drop={drop}", f"model={model}", f"dataset.root={tmp_path}"))


@pytest.mark.parametrize("override", ["trainer.epoch=5", "drop.toprate=0.2", "model.width=4"])
def test_misspelt_key_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        make_cfg(override)


@pytest.mark.parametrize("override", ["trainer.epochs=ten", "schedule.lr=fast", "trainer.nesterov=maybe"])
def test_wrong_type_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        make_cfg(override)


BAD = [
    (["model.name=resnet18"], "model.name='resnet18'"),
    (["drop.name=dropconnect"], "drop.name='dropconnect'"),
    (["dataset.name=mnist"], "dataset.name='mnist'"),
    (["drop=selectscale", "drop.top_rate=1.5"], "drop.top_rate=1.5"),
    (["drop=selectscale", "drop.retain_rate=-0.1"], "drop.retain_rate=-0.1"),
    (["drop=selectout", "drop.top_rate=0.1", "drop.retain_rate=0.5"], "1 - retain_rate <= top_rate"),
    (["drop=dropout", "drop.top_rate=0.2"], "dropout has no top rate"),
    (["schedule.lr=0"], "schedule.lr=0"),
    (["trainer.epochs=0"], "trainer.epochs=0"),
    (["trainer.batch_size=100"], "divisible by the 3 processes"),
    (["schedule.milestones=[0.6,0.3]"], "strictly increasing"),
    (["schedule.milestones=[0.3,1.5]"], "strictly increasing inside (0, 1)"),
    (["schedule.milestone_epochs=[1,2,3]"], "derived from schedule.milestones"),
    (["dataset.root=/nonexistent/cifar"], "dataset.root='/nonexistent/cifar'"),
    (["model=resnet50"], "use it with dataset=imagenet"),
    (["curriculum=linear", "curriculum.ramp_fraction=0"], "curriculum.ramp_fraction=0"),
    (["trainer.resume=yes"], "trainer.resume='yes'"),
    (["trainer.device=tpu"], "trainer.device='tpu'"),
    (["trainer.epochs=2", "trainer.snapshot_epochs=[5]"], "trainer.snapshot_epochs=[5]"),
    (["trainer.snapshot_epochs=[20,10]"], "strictly increasing within 1..200"),
    (["dataset.train_per_class=-1"], "dataset.train_per_class=-1"),
    (["dataset=imagenet", "dataset.train_per_class=10"], "cifar10, cifar100 and synthetic only"),
]


@pytest.mark.parametrize("overrides, fragment", BAD, ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_validate_names_key_value_and_allowed(overrides, fragment, tmp_path):
    cfg = make_cfg(f"dataset.root={tmp_path}", *overrides)
    with pytest.raises(ConfigError) as error:
        validate(cfg, world_size=3 if "divisible" in fragment else 1)
    message = str(error.value)
    assert fragment in message and "\n" not in message


def test_step_schedule_changes_at_epoch_boundaries():
    schedule = make_cfg().schedule
    assert learning_rate(schedule, 59.99, 200) == pytest.approx(0.1)
    assert learning_rate(schedule, 60.0, 200) == pytest.approx(0.02)
    assert learning_rate(schedule, 125.5, 200) == pytest.approx(0.004)
    assert learning_rate(schedule, 199.9, 200) == pytest.approx(0.1 * 0.2**3)


def test_cosine_schedule_and_linear_curriculum():
    cfg = make_cfg("schedule=cosine", "curriculum=linear")
    assert learning_rate(cfg.schedule, 0, 10) == pytest.approx(0.1)
    assert learning_rate(cfg.schedule, 5, 10) == pytest.approx(0.05)
    assert learning_rate(cfg.schedule, 10, 10) == pytest.approx(0.0)
    assert drop_strength(cfg.curriculum, 0, 10) == 0 and drop_strength(cfg.curriculum, 2.5, 10) == 0.25
    assert drop_strength(cfg.curriculum, 10, 10) == 1.0
    half = make_cfg("curriculum=linear", "curriculum.ramp_fraction=0.5", "curriculum.per=epoch").curriculum
    assert drop_strength(half, 2.9, 10) == 0.4 and drop_strength(half, 7, 10) == 1.0
    assert drop_strength(make_cfg().curriculum, 0, 10) == 1.0


def test_sweep_folder_names_leave_out_only_runtime_keys():
    # a key left out of hydra's override_dirname must not change the result, or two sweep jobs would share a folder
    from selectscale.paths import config_dir
    from selectscale.runs.history import RUNTIME_KEYS

    train = OmegaConf.load(config_dir() / "train.yaml")
    assert set(train.hydra.job.config.override_dirname.exclude_keys) <= RUNTIME_KEYS


def test_every_model_option_in_the_schema_is_declared_by_some_model():
    # the options validate_model checks are the ones models register (register_model(options=...))
    from selectscale.engine.config import _set_model_options
    from selectscale.models import list_models, model_spec

    declared = {option for name in list_models() for option in model_spec(name).options}
    cfg = OmegaConf.create({"shortcut": "pad", "drop_on_shortcut": True, "drop_after_stem": True})
    assert set(_set_model_options(cfg)) <= declared


def test_a_training_subset_larger_than_a_class_is_a_one_line_config_error():
    import torch

    from selectscale.engine.data_setup import build_data
    from selectscale.engine.distributed import DistContext

    cfg = make_cfg("dataset=synthetic", "dataset.train_size=200", "dataset.test_size=50", "dataset.train_per_class=30")
    with pytest.raises(ConfigError, match=r"too few to train on 30 \(dataset.train_per_class\)") as error:
        build_data(cfg, DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))
    assert "\n" not in str(error.value)
