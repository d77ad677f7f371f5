"""Selection checked against a brute-force reference written with plain Python loops (Section 2.3)."""

import pytest
import torch

from selectscale.drop import Selectout, SelectScale, feature_map_scores
from selectscale.drop.functional import num_top_maps, round_half_up


def reference_score(feature_map: torch.Tensor, score: str, nonnegative: bool, window: int, stride: int) -> float:
    values = [[float(v) if nonnegative else abs(float(v)) for v in row] for row in feature_map]
    height, width = len(values), len(values[0])
    if score == "max":
        return max(max(row) for row in values)
    if score == "mean":
        return sum(sum(row) for row in values) / (height * width)
    pooled = []
    for top in range(0, height - window + 1, stride):
        for left in range(0, width - window + 1, stride):
            window_sum = sum(values[top + i][left + j] for i in range(window) for j in range(window))
            pooled.append(window_sum / window**2)
    return max(pooled)


def reference_top_set(x: torch.Tensor, sample: int, k: int, **score_args) -> set[int]:
    scores = [reference_score(x[sample, c], **score_args) for c in range(x.shape[1])]
    return set(sorted(range(len(scores)), key=lambda c: -scores[c])[:k])


def changed_maps(x: torch.Tensor, y: torch.Tensor, sample: int) -> set[int]:
    return {c for c in range(x.shape[1]) if not torch.equal(x[sample, c], y[sample, c])}


SCORE_CASES = [
    dict(score="max", nonnegative=False, window=3, stride=1),
    dict(score="max", nonnegative=True, window=3, stride=1),
    dict(score="mean", nonnegative=False, window=3, stride=1),
    dict(score="avgpool", nonnegative=False, window=2, stride=2),
    dict(score="avgpool", nonnegative=False, window=3, stride=1),
]


@pytest.mark.parametrize("case", SCORE_CASES, ids=lambda c: f"{c['score']}-nn{c['nonnegative']}-w{c['window']}")
def test_scores_match_reference(case):
    torch.manual_seed(10)
    x = torch.randn(3, 5, 6, 6)
    if case["nonnegative"]:
        x = x.relu()
    scores = feature_map_scores(
        x, case["score"], case["nonnegative"], score_window=case["window"], score_stride=case["stride"]
    )
    expected = torch.tensor([[reference_score(x[n, c], **_args(case)) for c in range(5)] for n in range(3)])
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)


def _args(case: dict) -> dict:
    return dict(score=case["score"], nonnegative=case["nonnegative"], window=case["window"], stride=case["stride"])


@pytest.mark.parametrize("case", SCORE_CASES, ids=lambda c: f"{c['score']}-nn{c['nonnegative']}-w{c['window']}")
@pytest.mark.parametrize("channels, top_rate", [(10, 0.3), (16, 0.2), (7, 0.5)])
def test_selectscale_changes_exactly_the_reference_top_maps(case, channels, top_rate):
    torch.manual_seed(11)
    x = torch.randn(6, channels, 6, 6)  # signed values: |y| matters unless nonnegative_input
    if case["nonnegative"]:
        x = x.relu() + 1e-3
    layer = SelectScale(
        top_rate, 0.0, score=case["score"], nonnegative_input=case["nonnegative"],
        score_window=case["window"], score_stride=case["stride"],
    ).train()
    y = layer(x)
    k = num_top_maps(top_rate, channels)
    for sample in range(x.shape[0]):
        assert changed_maps(x, y, sample) == reference_top_set(x, sample, k, **_args(case))


@pytest.mark.parametrize("channels, top_rate, retain", [(10, 0.3, 0.8), (16, 0.2, 0.9), (8, 0.5, 0.5)])
def test_selectout_drops_a_subset_of_the_reference_top_maps(channels, top_rate, retain):
    torch.manual_seed(12)
    x = torch.randn(6, channels, 5, 5)
    y = Selectout(top_rate, retain).train()(x)
    k = num_top_maps(top_rate, channels)
    m = round_half_up((1 - retain) * channels)
    for sample in range(x.shape[0]):
        dropped = {c for c in range(channels) if torch.all(y[sample, c] == 0)}
        assert len(dropped) == m
        assert dropped <= reference_top_set(x, sample, k, score="max", nonnegative=False, window=3, stride=1)
        kept = sorted(set(range(channels)) - dropped)
        torch.testing.assert_close(y[sample, kept], x[sample, kept] / retain)


def test_selection_is_per_sample_not_per_batch():
    torch.manual_seed(13)
    x = torch.rand(2, 8, 4, 4)
    x[0, 0] += 10  # sample 0's top map is channel 0, sample 1's is channel 5
    x[1, 5] += 10
    y = SelectScale(1 / 8, 0.0).train()(x)
    assert changed_maps(x, y, 0) == {0} and changed_maps(x, y, 1) == {5}


@pytest.mark.parametrize(
    "value, expected", [(3.2, 3), (1.6, 2), (0.5, 1), (2.5, 3), (2.4999, 2), (0.0, 0), (0.1 * 25, 3)]
)
def test_round_half_up(value, expected):
    assert round_half_up(value) == expected


@pytest.mark.parametrize(
    "top_rate, channels, expected",
    [(0.2, 16, 3), (0.1, 16, 2), (0.05, 10, 1), (0.01, 16, 1), (0.0, 16, 0), (1.0, 7, 7)],
)
def test_number_of_candidates(top_rate, channels, expected):
    assert num_top_maps(top_rate, channels) == expected


@pytest.mark.parametrize("shape", [(4, 16, 32, 32), (3, 8, 7, 7), (2, 32, 6, 10), (2, 64, 4, 4), (2, 3, 1, 1)])
@pytest.mark.parametrize("nonnegative", [False, True])
def test_channels_last_scores_equal_nchw_scores_exactly(shape, nonnegative):
    """Narrow channels-last tensors take a two-pass reduction (fast on CPU); it must give the same maxima."""
    y = torch.randn(shape)
    if nonnegative:
        y = y.relu()
    channels_last = y.contiguous(memory_format=torch.channels_last)
    assert torch.equal(feature_map_scores(channels_last, nonnegative_input=nonnegative),
                       feature_map_scores(y, nonnegative_input=nonnegative))
