"""Pins of the method where a plausible bug would pass every other test (issue 34, item 2).

Each test reads what the method actually does (the strength the drop layers hold during a real ``fit``, the
masks and factors the layers draw, the counts at exact halves, the layers' state after an exception), not what a
log or a helper reports. The drop placement in every model family: tests/test_placement.py. Which bug each test
catches, shown failing on it: docs/mutation.md.
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from drop_cases import DROP_ARGS
from fault_helpers import make_cfg, metrics
from torch import nn

import selectscale.engine.trainer as trainer_module
from selectscale.drop import (
    DropLayer,
    Selectout,
    SelectScale,
    SpatialDropout,
    apply_at_inference,
    build_drop,
    drop_layers,
)
from selectscale.drop.functional import num_top_maps, select_scale, selectout
from selectscale.drop.selective import Selective
from selectscale.engine import fit, register_configs
from selectscale.engine.schedule import drop_strength, learning_rate

register_configs()

# --- the strength every drop layer holds at each step of a real fit ----------------------------------------------

# The tiny run of fault_helpers.make_cfg: 32 images, batch 16 -> 2 steps an epoch, 3 epochs -> 6 steps; step s is at
# progress s / 2 epochs. The expected strengths are written out here, not computed by schedule.drop_strength.
STEPS, STEPS_PER_EPOCH, EPOCHS = 6, 2, 3
CURRICULA = {
    "none": (["curriculum=none"], lambda step: 1.0),
    "linear": (["curriculum=linear"], lambda step: (step / STEPS_PER_EPOCH) / EPOCHS),  # ramp over the whole run
    "linear_half": (["curriculum=linear", "curriculum.ramp_fraction=0.5"],
                    lambda step: min(1.0, (step / STEPS_PER_EPOCH) / (0.5 * EPOCHS))),
    "linear_per_epoch": (["curriculum=linear", "curriculum.per=epoch"],
                         lambda step: (step // STEPS_PER_EPOCH) / EPOCHS),
    "exponential": (["curriculum=exponential", "curriculum.gamma=0.1"], lambda step: 1.0 - math.exp(-0.1 * step)),
}


def _watch_drop_layers(monkeypatch) -> tuple[list[DropLayer], list[tuple[int, float, float]]]:
    """Make the trainer's build_model register a forward pre-hook on every drop layer of the model it trains; the
    hook records (layer id, the strength buffer's value, the effective retain rate) at each training forward."""
    layers: list[DropLayer] = []
    records: list[tuple[int, float, float]] = []
    real_build = trainer_module.build_model

    def record(layer: DropLayer, inputs) -> None:
        if layer.training:
            records.append((id(layer), float(layer.drop_strength), float(layer.effective_retain_rate())))

    def build_and_watch(*args, **kwargs) -> nn.Module:
        model = real_build(*args, **kwargs)
        for layer in drop_layers(model):
            layer.register_forward_pre_hook(record)
            layers.append(layer)
        return model

    monkeypatch.setattr(trainer_module, "build_model", build_and_watch)
    return layers, records


@pytest.mark.parametrize("curriculum", list(CURRICULA))
def test_every_drop_layer_holds_the_curriculum_strength_at_every_step_of_a_fit(curriculum, tmp_path, monkeypatch):
    overrides, expected = CURRICULA[curriculum]
    layers, records = _watch_drop_layers(monkeypatch)
    run_dir = tmp_path / curriculum
    # resnet8 with the stem drop: 7 drop layers in 4 modules deep, at two retain rates' worth of rate_scale 1
    fit(make_cfg(run_dir, "model=resnet8", "model.drop_after_stem=true", "drop=selectscale", "drop.top_rate=0.25",
                 "drop.retain_rate=0.2", *overrides))
    assert len(layers) == 7
    per_step = len(layers)
    assert len(records) == STEPS * per_step, "every layer runs once in every training step"
    for step in range(STEPS):
        chunk = records[step * per_step:(step + 1) * per_step]
        assert sorted(layer_id for layer_id, _, _ in chunk) == sorted(id(layer) for layer in layers)
        want = expected(step)
        for _, held, retain in chunk:
            assert held == pytest.approx(want, abs=1e-6), f"step {step}: a layer holds {held}, the curriculum {want}"
            assert retain == pytest.approx(1.0 - want * (1.0 - 0.2), abs=1e-6)
    # what metrics.jsonl reports is what the layers held at each epoch's first step
    logged = [record["drop_strength"] for record in metrics(run_dir)]
    held_first = [records[epoch * STEPS_PER_EPOCH * per_step][1] for epoch in range(EPOCHS)]
    assert logged == pytest.approx(held_first, abs=1e-6)


def test_schedule_defaults_and_edges():
    """What the fit test cannot reach: one step an epoch by default (progress counts steps), a schedule object without
    the warm-up keys (no warm-up), and the cosine held at 0 past the last epoch."""
    exponential = SimpleNamespace(name="exponential", gamma=0.1, per="step")
    assert drop_strength(exponential, 3.0, 10) == pytest.approx(1.0 - math.exp(-0.3))
    warm = SimpleNamespace(name="cosine", lr=0.1, warmup_steps=5, warmup_lr=0.01)
    assert learning_rate(warm, 4.0, 10) == 0.01
    assert learning_rate(warm, 5.0, 10) == pytest.approx(0.05 * (1.0 + math.cos(math.pi * 0.5)))
    bare = SimpleNamespace(name="cosine", lr=0.1)
    assert learning_rate(bare, 0.0, 10) == 0.1
    assert learning_rate(bare, 12.0, 10) == pytest.approx(0.0, abs=1e-12)


# --- independent draws across samples, and within a sample where the paper says so ------------------------------

def _factors(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """y / x of one training forward (x has no zeros)."""
    return layer.train()(x) / x


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


@pytest.mark.parametrize("name", list(DROP_ARGS))
def test_identical_samples_in_one_batch_get_independent_draws(name):
    """Every method draws per sample: two copies of one image in a batch get different masks or factors, and over
    many pairs the draws of copy 1 and copy 2 are uncorrelated (a mask shared across the batch: correlation 1)."""
    torch.manual_seed(20)
    layer = build_drop(name, **DROP_ARGS[name])
    image = torch.rand(1, 16, 8, 8) + 0.5  # distinct maps, positive: zero in the output means dropped
    x = image.expand(1024, -1, -1, -1).contiguous()
    factors = _factors(layer, x)
    assert not torch.equal(factors[0], factors[1]), f"{name}: two identical samples got the same draw"
    # Centred per position over the batch (a map outside the selection, or a border position of DropBlock, has its
    # own mean in every copy), then copy 2i against copy 2i + 1: 512 pairs x >= 5 independent values (SelectScale's
    # 5 selected maps): sd <= 0.02; allow 0.12. A draw shared across the batch gives 1.
    centred = factors - factors.mean(0, keepdim=True)
    assert abs(_correlation(centred[0::2], centred[1::2])) < 0.12, f"{name}: draws correlate across samples"


def test_dropout_draws_every_element_of_a_sample_independently():
    torch.manual_seed(21)
    x = torch.ones(4096, 4, 2, 2)
    kept = (_factors(build_drop("dropout", retain_rate=0.5), x) != 0).flatten(1).float()  # 4096 x 16
    pairs = [_correlation(kept[:, i], kept[:, j]) for i, j in itertools.combinations(range(16), 2)]
    assert max(map(abs, pairs)) < 0.08  # 4,096 samples: sd 0.016 per pair, 120 pairs
    assert abs(kept.mean().item() - 0.5) < 0.01


@pytest.mark.parametrize("name", ["spatial_dropout", "spatial_scale"])
def test_map_wise_methods_draw_every_map_of_a_sample_independently(name):
    torch.manual_seed(22)
    layer = build_drop(name, retain_rate=0.5 if name == "spatial_dropout" else 0.0)
    factors = _factors(layer, torch.ones(4096, 8, 2, 2))[:, :, 0, 0]  # 4096 x 8
    pairs = [_correlation(factors[:, i], factors[:, j]) for i, j in itertools.combinations(range(8), 2)]
    assert max(map(abs, pairs)) < 0.08


def _one_sample_with_ranked_maps(channels: int, batch: int) -> torch.Tensor:
    """``batch`` copies of one sample whose map c has score c + 1: the top maps are the last channels."""
    scores = torch.arange(1, channels + 1, dtype=torch.float32)
    return (torch.ones(batch, channels, 2, 2) * scores[None, :, None, None]).contiguous()


@pytest.mark.parametrize("layer", [SelectScale(0.5, 0.0), Selective(build_drop("spatial_scale", retain_rate=0.0), 0.5)],
                         ids=["SelectScale", "Selective(SpatialScale)"])
def test_selectscale_factors_are_independent_across_the_selected_maps_of_a_sample(layer):
    """Eq. (6): each selected map gets its own u ~ Uniform(rho, 2 - rho), i.i.d. (one u per sample: correlation 1)."""
    torch.manual_seed(23)
    x = _one_sample_with_ranked_maps(8, 4096)
    factors = _factors(layer, x)[:, :, 0, 0]
    assert (factors[:, :4] == 1).all(), "only the top 4 of 8 maps are scaled"
    selected = factors[:, 4:]
    pairs = [_correlation(selected[:, i], selected[:, j]) for i, j in itertools.combinations(range(4), 2)]
    assert max(map(abs, pairs)) < 0.08
    assert abs(selected.mean().item() - 1.0) < 0.02 and abs(selected.var().item() - 4 / 12) < 0.02


def test_selectout_drops_a_uniformly_random_subset_of_the_candidates_in_every_sample():
    """Eq. (4): m of the k candidates, every m-subset equally likely, independently per sample (a contiguous run of
    candidates, or one subset for the whole batch, has the right per-map rate but not this)."""
    torch.manual_seed(24)
    x = _one_sample_with_ranked_maps(8, 6000)
    dropped = (Selectout(0.5, 0.75).train()(x) == 0).flatten(2).all(2)  # k = 4 candidates (maps 4-7), m = 2 dropped
    assert not dropped[:, :4].any() and (dropped.sum(1) == 2).all()
    subsets = [tuple(row.nonzero().flatten().tolist()) for row in dropped[:, 4:]]
    counts = {subset: subsets.count(subset) for subset in itertools.combinations(range(4), 2)}
    assert sum(counts.values()) == 6000  # only 2-subsets of the candidates
    # each of the 6 subsets: 1,000 expected, sd 28.9; allow 6 sd
    assert all(abs(count - 1000) < 6 * math.sqrt(6000 * (1 / 6) * (5 / 6)) for count in counts.values()), counts
    first, second = dropped[0::2, 4:].float(), dropped[1::2, 4:].float()
    assert abs(_correlation(first, second)) < 0.05  # independent across samples


# --- rounding at exact halves: half up, in exact binary arithmetic ---------------------------------------------------

# t * C is exactly k + 0.5 in binary floating point (t a dyadic fraction); k even, so that half-even rounding gives k
# and half-up k + 1; a few odd k too (both give k + 1 there; half-down fails them).
HALVES = [(0.5, 5, 3), (0.5, 9, 5), (0.5, 13, 7), (0.5, 3, 2), (0.25, 10, 3), (0.25, 18, 5), (0.25, 6, 2),
          (0.75, 6, 5), (0.75, 22, 17), (0.125, 20, 3), (0.375, 12, 5), (0.0625, 40, 3), (0.5, 1025, 513)]


@pytest.mark.parametrize("top_rate, channels, expected", HALVES)
def test_top_count_rounds_exact_halves_up(top_rate, channels, expected):
    assert top_rate * channels == expected - 0.5  # exact in binary: the test is about the rule, not float error
    assert num_top_maps(top_rate, channels) == expected
    assert num_top_maps(top_rate, channels, "floor") == expected - 1
    assert num_top_maps(top_rate, channels, "ceil") == expected


@pytest.mark.parametrize("top_rate, channels, expected", [h for h in HALVES if h[1] <= 40])
def test_selective_layers_act_on_round_half_up_maps(top_rate, channels, expected):
    torch.manual_seed(25)
    x = torch.rand(6, channels, 3, 3) + 0.5  # distinct positive maps: every scaled map changes
    changed = (select_scale(x, top_rate, 0.0) != x).flatten(2).any(2).sum(1)
    assert changed.tolist() == [expected] * 6
    wrapped = Selective(build_drop("spatial_dropout", retain_rate=0.0), top_rate).train()  # drops every selected map
    assert ((wrapped(x) == 0).flatten(2).all(2).sum(1) == expected).all()


# Selectout's m = round((1 - p) * C) with 1 - p exact in float32 and (1 - p) * C exactly m - 0.5.
DROP_HALVES = [(0.5, 5, 3), (0.75, 10, 3), (0.875, 20, 3), (0.25, 6, 5), (0.5, 9, 5), (0.75, 2, 1), (0.9375, 40, 3)]


@pytest.mark.parametrize("retain, channels, expected", DROP_HALVES)
def test_selectout_drop_count_rounds_exact_halves_up(retain, channels, expected):
    assert (1 - retain) * channels == expected - 0.5
    torch.manual_seed(26)
    x = torch.rand(6, channels, 3, 3) + 0.5
    for out in (selectout(x, 1.0, retain), selectout(x, 1.0, torch.tensor(retain)),
                Selectout(1.0, retain).train()(x)):
        assert ((out == 0).flatten(2).all(2).sum(1) == expected).all()
    if retain >= 0.5:  # the same count through the strength buffer: strength 0.5 halves a drop amount of 2 (1 - p)
        layer = Selectout(1.0, 1 - 2 * (1 - retain)).train()
        layer.strength = 0.5
        assert ((layer(x) == 0).flatten(2).all(2).sum(1) == expected).all()


# --- apply_at_inference restores the layers' state when its body raises ---------------------------------------------

def test_apply_at_inference_restores_every_layers_own_state_when_the_body_raises():
    model = nn.Sequential(SpatialDropout(0.5), nn.Sequential(SelectScale(0.5, 0.0), Selectout(0.5, 0.75)),
                          Selective(build_drop("spatial_dropout", retain_rate=0.5), 0.5)).eval()
    layers = list(drop_layers(model))
    layers[1].active_at_inference = True  # already on (an outer caller): must stay on
    before = [layer.active_at_inference for layer in layers]
    assert before == [False, True, False, False]
    x = torch.rand(4, 8, 3, 3) + 0.5
    with pytest.raises(KeyError, match="inner"), apply_at_inference(model):
        assert all(layer.active_at_inference for layer in layers)
        assert not torch.equal(model(x), x)
        with apply_at_inference(model[1]):  # nested: the inner exit restores what the outer set
            raise KeyError("inner")
    assert [layer.active_at_inference for layer in layers] == before
    layers[1].active_at_inference = False
    assert torch.equal(model(x), x)  # identity again in eval
    with pytest.raises(ValueError), apply_at_inference(model):
        raise ValueError
    assert not any(layer.active_at_inference for layer in layers) and torch.equal(model(x), x)
