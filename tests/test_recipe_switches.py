"""Issue 36: the recipe switches (EMA, gradient clipping, label smoothing, Mixup/CutMix, RandAugment/TrivialAugment,
linear warm-up, best checkpoint by validation error), each off by default and the default unchanged."""

import copy
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from selectscale.data.autoaugment import PerImageAugment
from selectscale.data.loader import DeviceLoader
from selectscale.engine import ConfigError, fit, register_configs
from selectscale.engine import steps as engine_steps
from selectscale.engine.config import validate
from selectscale.engine.ema import WeightAverage
from selectscale.engine.mixing import BatchMixer, build_mixer
from selectscale.engine.model_setup import build_model
from selectscale.engine.schedule import learning_rate
from selectscale.engine.schema import ScheduleConfig
from selectscale.engine.signals import Preempted
from selectscale.engine.steps import StepContext, StepSettings
from selectscale.runs.checkpoint import list_snapshots, load_weights, read_best, read_checkpoint_file
from selectscale.runs.history import ADDED_KEYS
from selectscale.runs.layout import BEST, RUN_FILES

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
register_configs()
# 256 synthetic images, batch 64: 4 steps an epoch (3 with a validation split), resnet8, deterministic CPU.
SMALL = ["dataset=synthetic", "dataset.train_size=256", "dataset.test_size=64", "model=resnet8",
         "trainer.batch_size=64", "trainer.epochs=2", "schedule=cosine", "trainer.device=cpu",
         "trainer.progress_bar=false", "trainer.deterministic=true", "drop=selectscale", "trainer.precision=fp32"]
VOLATILE = {"seconds", "images_per_second"}
SWITCHES = {"trainer.ema_decay": None, "trainer.ema_every": 1, "trainer.grad_clip_norm": None,
            "trainer.label_smoothing": 0.0, "trainer.mixup_alpha": 0.0, "trainer.cutmix_alpha": 0.0,
            "trainer.mix_prob": 1.0, "trainer.keep_best": False, "dataset.auto_augment": None,
            "schedule.warmup_mode": "constant"}


def make_cfg(*overrides: str, run_dir: Path | None = None):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        extra = [] if run_dir is None else [f"output_dir={run_dir}"]
        return compose(config_name="train", overrides=[*SMALL, *extra, *overrides])


def metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k not in VOLATILE}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# --- config: defaults off, recorded history, one-line refusals -----------------------------------------------------

def test_every_switch_is_off_by_default_and_old_runs_read_as_off():
    cfg = make_cfg()
    validate(cfg)
    for key, default in SWITCHES.items():
        assert OmegaConf.select(cfg, key) == default, key
        assert ADDED_KEYS[key] == default, key  # a run recorded before the switch trained with it off
    assert OmegaConf.select(make_cfg(), "trainer.ema_decay") is None


@pytest.mark.parametrize(("override", "message"), [
    ("trainer.ema_decay=1.0", r"trainer.ema_decay=1.0 is invalid: .*\(0, 1\)"),
    ("trainer.ema_every=2", r"trainer.ema_every=2 is invalid: no EMA is kept; set trainer.ema_decay"),
    ("trainer.grad_clip_norm=0", r"trainer.grad_clip_norm=0.0 is invalid: .*> 0"),
    ("trainer.label_smoothing=1.0", r"trainer.label_smoothing=1.0 is invalid: it must be in \[0, 1\)"),
    ("trainer.mixup_alpha=-1", r"trainer.mixup_alpha=-1.0 is invalid: .*>= 0"),
    ("trainer.mix_prob=0.5", r"trainer.mix_prob=0.5 is invalid: no mixing is on"),
    ("trainer.keep_best=true", r"trainer.keep_best=True is invalid: .*never by test error; .*validation_fraction"),
    ("dataset.auto_augment=autoaugment", r"dataset.auto_augment='autoaugment' is invalid: use null, randaugment or"),
    ("schedule.warmup_mode=linear", r"schedule.warmup_mode='linear' is invalid: .*warmup_steps > 0"),
    ("schedule.warmup_mode=cubic", r"schedule.warmup_mode='cubic' is invalid: use one of constant, linear"),
])
def test_bad_values_are_refused_in_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        validate(make_cfg(override))
    assert "\n" not in str(caught.value)


def test_auto_augment_is_refused_for_imagenet():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["dataset=imagenet", "dataset.auto_augment=randaugment"])
    with pytest.raises(ConfigError, match="dataset.auto_augment='randaugment' is invalid: .*null for imagenet"):
        validate(cfg)


# --- one training step: the default is the plain step; clipping and smoothing do what they say --------------------

def _step_setup(*overrides: str, seed: int = 0):
    cfg = make_cfg("drop=none", *overrides)
    torch.manual_seed(seed)
    model = build_model(cfg, 10, torch.device("cpu"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                                foreach=True)
    ctx = StepContext(StepSettings.from_config(cfg, torch.device("cpu")), optimizer, torch.device("cpu"), model, 1,
                      False, None)
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(16, 3, 32, 32, generator=generator).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (16,), generator=generator)
    return model, optimizer, ctx, images, labels


def test_the_default_step_is_exactly_the_plain_cross_entropy_step():
    model, optimizer, ctx, images, labels = _step_setup()
    assert ctx.settings.grad_clip_norm is None and ctx.settings.label_smoothing == 0.0
    reference = copy.deepcopy(model)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                          weight_decay=5e-4, foreach=True)
    for _ in range(2):
        loss = engine_steps._train_step(model, images, labels, ctx, torch.zeros(2, dtype=torch.float64))
        reference_optimizer.zero_grad(set_to_none=True)
        reference_loss = F.cross_entropy(reference(images), labels)  # the step as it was before the switches
        reference_loss.backward()
        reference_optimizer.step()
        assert torch.equal(loss, reference_loss.detach())
    state, expected = model.state_dict(), reference.state_dict()
    assert all(torch.equal(state[key], expected[key]) for key in expected)


def _grad_norm(model: nn.Module) -> float:
    return float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])))


def test_gradient_clipping_bounds_the_global_norm_of_the_step():
    model, _, ctx, images, labels = _step_setup()
    engine_steps._train_step(model, images, labels, ctx, torch.zeros(2, dtype=torch.float64))
    unclipped = _grad_norm(model)  # the gradients stay in .grad after the step
    model, _, ctx, images, labels = _step_setup("trainer.grad_clip_norm=0.05")
    before = copy.deepcopy(model)
    engine_steps._train_step(model, images, labels, ctx, torch.zeros(2, dtype=torch.float64))
    assert unclipped > 0.5 and _grad_norm(model) == pytest.approx(0.05, rel=1e-4)
    # the clipped gradients are the unclipped ones scaled by 0.05 / norm (one direction, a shorter step)
    before.zero_grad()
    F.cross_entropy(before(images), labels).backward()
    scale = 0.05 / _grad_norm(before)
    for clipped, raw in zip(model.parameters(), before.parameters(), strict=True):
        torch.testing.assert_close(clipped.grad, raw.grad * scale, rtol=1e-4, atol=1e-8)


def test_gradient_clipping_under_bf16_autocast():
    model, _, ctx, images, labels = _step_setup("trainer.grad_clip_norm=0.05", "trainer.precision=bf16")
    assert ctx.settings.autocast_device == "cpu"
    engine_steps._train_step(model, images, labels, ctx, torch.zeros(2, dtype=torch.float64))
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())  # fp32 gradients, no scaler to undo
    assert _grad_norm(model) == pytest.approx(0.05, rel=1e-3)


def test_label_smoothing_changes_the_loss_by_the_known_formula():
    model, _, ctx, images, labels = _step_setup("trainer.label_smoothing=0.5")
    with torch.no_grad():
        logits = copy.deepcopy(model)(images)  # the same forward pass (train mode) the step will make
    log_probs = F.log_softmax(logits.double(), dim=1)
    nll = float(-log_probs.gather(1, labels[:, None]).mean())
    uniform = float(-log_probs.mean())  # cross-entropy against the uniform distribution over the 10 classes
    loss = float(engine_steps._train_step(model, images, labels, ctx, torch.zeros(2, dtype=torch.float64)))
    # (1 - eps) x NLL + eps x CE(uniform): the smoothed target (1 - eps) y + eps / K
    assert loss == pytest.approx(0.5 * nll + 0.5 * uniform, rel=1e-6)
    assert abs(loss - nll) > 1e-3 * nll  # and the formula is told apart from the plain loss


# --- EMA -----------------------------------------------------------------------------------------------------------

def test_ema_equals_a_hand_computed_average_of_weights_and_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = WeightAverage(model, decay=0.9, every=1)
    snapshots = []
    for step in range(1, 4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(8, 4))  # train mode: BatchNorm's running statistics move
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        ema.after_step(model, step)
    expected = dict(snapshots[0])  # the first update copies
    for snapshot in snapshots[1:]:
        expected = {k: 0.9 * expected[k] + 0.1 * snapshot[k] if v.is_floating_point() else expected[k]
                    for k, v in snapshot.items()}
    averaged = ema.module.state_dict()
    for key in ("0.weight", "0.bias", "1.weight", "1.running_mean", "1.running_var"):
        torch.testing.assert_close(averaged[key], expected[key], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(averaged["0.weight"], model.state_dict()["0.weight"])
    assert int(ema.state_dict()["n_averaged"]) == 3


def test_ema_every_n_steps_updates_only_on_those_steps():
    model = nn.Linear(2, 2)
    ema = WeightAverage(model, decay=0.5, every=2)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.after_step(model, 1)  # skipped
    assert int(ema.state_dict()["n_averaged"]) == 0
    ema.after_step(model, 2)
    with torch.no_grad():
        model.weight.fill_(3.0)
    ema.after_step(model, 3)  # skipped
    ema.after_step(model, 4)
    assert torch.equal(ema.module.weight, torch.full((2, 2), 2.0))  # 0.5 x 1 + 0.5 x 3


def interrupt_at_step(monkeypatch, step: int) -> None:
    """SIGTERM to this process during training step ``step`` (counted from 1 across the run)."""
    original, calls = engine_steps._train_step, {"n": 0}

    def step_then_signal(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_steps, "_train_step", step_then_signal)


ALL_ON = ["trainer.ema_decay=0.8", "trainer.grad_clip_norm=2.0", "trainer.label_smoothing=0.1",
          "trainer.mixup_alpha=0.4", "trainer.cutmix_alpha=1.0", "trainer.mix_prob=0.9",
          "dataset.auto_augment=trivialaugment", "schedule.warmup_steps=4", "schedule.warmup_mode=linear",
          "dataset.validation_fraction=0.2", "trainer.keep_best=true", "trainer.max_steps_per_epoch=3"]


@pytest.fixture(scope="module")
def all_on_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("recipe") / "uninterrupted"
    return run_dir, fit(make_cfg(*ALL_ON, run_dir=run_dir))


def test_the_ema_is_logged_beside_the_raw_model(all_on_run):
    run_dir, result = all_on_run
    records = metrics(run_dir)
    for key in ("test_top1_error_ema", "test_top5_error_ema", "test_loss_ema"):
        assert all(0 <= record[key] for record in records), key
        assert result[key] == records[-1][key]
    assert records[-1]["test_loss_ema"] != records[-1]["test_loss"]
    state = read_checkpoint_file(run_dir / "checkpoint.pt")
    assert int(state["ema"]["n_averaged"]) == 2 * 3  # every step of 2 epochs of 3 steps
    assert not torch.equal(state["ema"]["module.fc.weight"], state["model"]["fc.weight"])


@pytest.mark.parametrize("stop_step", [3, 5], ids=["after-epoch-1", "mid-epoch-2"])
def test_a_resumed_run_with_every_switch_equals_an_uninterrupted_one(all_on_run, tmp_path, monkeypatch, stop_step):
    reference_dir, reference_result = all_on_run
    run_dir = tmp_path / "interrupted"
    interrupt_at_step(monkeypatch, stop_step)
    with pytest.raises(Preempted):
        fit(make_cfg(*ALL_ON, run_dir=run_dir))
    monkeypatch.undo()
    assert "ema" in read_checkpoint_file(run_dir / "checkpoint.pt")
    result = fit(make_cfg(*ALL_ON, "trainer.resume=auto", run_dir=run_dir))
    assert metrics(run_dir) == metrics(reference_dir)  # exactly: deterministic CPU mode
    reference, resumed = (read_checkpoint_file(d / "checkpoint.pt") for d in (reference_dir, run_dir))
    for part in ("model", "ema"):
        assert reference[part].keys() == resumed[part].keys()
        assert all(torch.equal(reference[part][k], resumed[part][k]) for k in reference[part]), part
    assert resumed["best"] == reference["best"]
    assert {k: result[k] for k in ("test_top1_error_ema", "best_validation_epoch", "best_validation_top1_error")} == \
        {k: reference_result[k] for k in ("test_top1_error_ema", "best_validation_epoch", "best_validation_top1_error")}


def test_a_run_without_switches_writes_nothing_of_theirs(tmp_path):
    run_dir = tmp_path / "plain"
    result = fit(make_cfg("trainer.epochs=1", "trainer.max_steps_per_epoch=1", run_dir=run_dir))
    state = read_checkpoint_file(run_dir / "checkpoint.pt")
    assert "ema" not in state and "best" not in state and not (run_dir / BEST).exists()
    assert not [key for key in (*result, *metrics(run_dir)[0]) if key.endswith("_ema") or "best" in key]


# --- best checkpoint by validation error ---------------------------------------------------------------------------

def test_the_best_checkpoint_holds_the_weights_of_the_lowest_validation_error(tmp_path):
    run_dir = tmp_path / "best"
    fit(make_cfg("trainer.epochs=4", "dataset.validation_fraction=0.25", "trainer.keep_best=true",
                 "trainer.snapshot_epochs=[1,2,3,4]", "schedule.lr=0.5", run_dir=run_dir))
    errors = [record["test_top1_error"] for record in metrics(run_dir)]
    best_epoch = errors.index(min(errors)) + 1  # the first epoch with the lowest error
    best = read_best(run_dir)
    assert best["epoch"] == best_epoch and best["validation_top1_error"] == min(errors)
    snapshot = load_weights(list_snapshots(run_dir)[best_epoch])
    assert all(torch.equal(best["model"][k], snapshot[k]) for k in snapshot)
    assert json.loads((run_dir / "result.json").read_text())["best_validation_epoch"] == best_epoch
    assert BEST in RUN_FILES  # the run directory's one owner names it


# --- Mixup and CutMix ----------------------------------------------------------------------------------------------

def _indexed_batch(size: int = 8):
    """Image i is the constant i (every pixel), label i: what a mixed image is made of can be read off it."""
    images = torch.arange(size, dtype=torch.float32).view(size, 1, 1, 1).expand(size, 3, 8, 8).contiguous()
    return images, torch.arange(size)


def test_mixup_images_are_the_convex_combinations_the_soft_targets_say():
    torch.manual_seed(0)
    images, labels = _indexed_batch()
    mixed, targets = BatchMixer(mixup_alpha=0.4, cutmix_alpha=0.0, prob=1.0, num_classes=8)(images, labels)
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    assert (targets >= 0).all() and not torch.equal(mixed, images)
    expected = targets @ torch.arange(8, dtype=torch.float32)  # sum_k target_k x (image of class k)
    torch.testing.assert_close(mixed, expected.view(8, 1, 1, 1).expand_as(mixed), rtol=1e-5, atol=1e-5)
    assert len({round(float(targets[i, i]), 6) for i in range(8) if targets[i, i] < 1}) == 1  # one lam a batch


def test_cutmix_pastes_one_box_and_the_targets_are_its_area():
    torch.manual_seed(3)
    images, labels = _indexed_batch()
    mixed, targets = BatchMixer(mixup_alpha=0.0, cutmix_alpha=1.0, prob=1.0, num_classes=8)(images, labels)
    torch.testing.assert_close(targets.sum(1), torch.ones(8))
    for i in range(8):
        kept = (mixed[i] == i).float().mean()
        assert float(kept) == pytest.approx(float(targets[i, i]), abs=1e-6)  # the kept share is the own label's
        partners = {float(k) for k in range(8) if targets[i, k] > 0}
        assert set(mixed[i].unique().tolist()) == partners  # pixels of the image and its partner only


def test_mix_prob_and_both_kinds():
    images, labels = _indexed_batch()
    torch.manual_seed(0)
    never = BatchMixer(0.4, 0.0, prob=1e-9, num_classes=8)
    mixed, targets = never(images, labels)
    assert torch.equal(mixed, images) and torch.equal(targets, F.one_hot(labels, 8).float())
    both, kinds = BatchMixer(0.4, 1.0, prob=1.0, num_classes=8), set()
    for _ in range(20):
        mixed, _ = both(images, labels)
        kinds.add("cutmix" if bool((mixed == mixed.round()).all()) else "mixup")  # CutMix only copies pixels
    assert kinds == {"cutmix", "mixup"}
    assert build_mixer(make_cfg().trainer, 10) is None  # off by default: no random draw at all


# --- RandAugment / TrivialAugmentWide ------------------------------------------------------------------------------

def test_two_images_of_one_batch_get_different_operations():
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    batch = image.expand(16, 3, 32, 32).contiguous()
    for name in ("randaugment", "trivialaugment"):
        augment = PerImageAugment(name)
        state = torch.get_rng_state()
        out = augment(batch, list(range(16)))
        assert torch.equal(torch.get_rng_state(), state)  # the engine's random stream is untouched
        assert out.dtype == torch.uint8 and out.shape == batch.shape
        assert len({bytes(o.flatten().tolist()) for o in out}) > 2, name  # per image, not one op for the batch
        assert torch.equal(out, augment(batch, list(range(16))))  # a pure function of the seeds
        whole = augment.transform(batch)  # torchvision's v2 on the batched tensor: one op for every image
        assert all(torch.equal(whole[0], w) for w in whole)


def test_the_loader_augments_each_image_reproducibly_and_resumes_mid_epoch():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8, generator=generator)
    common = dict(train=True, seed=0, mean=(0.5,) * 3, std=(0.25,) * 3, device="cpu")
    plain = DeviceLoader(images, torch.arange(32), 8, **common)
    augmented = DeviceLoader(images, torch.arange(32), 8, auto_augment="randaugment", **common)
    first = list(augmented)
    assert [torch.equal(a[1], p[1]) for a, p in zip(first, plain, strict=True)] == [True] * 4  # same order
    assert not all(torch.equal(a[0], p[0]) for a, p in zip(first, plain, strict=True))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, augmented, strict=True))  # reproducible
    augmented.set_epoch(0, start_batch=2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[2:], augmented, strict=True))  # resumed mid-epoch
    augmented.set_epoch(1)
    assert not torch.equal(next(iter(augmented))[0], first[0][0])  # a new draw every epoch


# --- linear warm-up ------------------------------------------------------------------------------------------------

def test_linear_warmup_rises_per_step_from_warmup_lr_to_the_schedule():
    step = ScheduleConfig(name="step", lr=0.1, milestones=[0.5], gamma=0.1, warmup_steps=4, warmup_lr=0.02)
    linear = ScheduleConfig(**{**vars(step), "warmup_mode": "linear"})
    rates = [learning_rate(linear, s / 10, epochs=2, steps_per_epoch=10) for s in range(6)]
    assert rates == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1])
    assert [learning_rate(step, s / 10, 2, 10) for s in range(6)] == [0.02] * 4 + [0.1] * 2  # constant: as before
    cosine = ScheduleConfig(**{**vars(linear), "name": "cosine"})
    scheduled = 0.1 * 0.5 * (1 + math.cos(math.pi * 0.2 / 2))
    assert learning_rate(cosine, 0.2, 2, 10) == pytest.approx(0.02 + (scheduled - 0.02) * 2 / 4)
    off = ScheduleConfig(name="step", lr=0.1, milestones=[0.5], gamma=0.1, warmup_mode="linear")
    assert learning_rate(off, 0.0, 2, 10) == 0.1  # no warm-up steps: nothing to ramp
