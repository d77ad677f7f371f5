"""Random tie-breaking in the selection (issue 12): among equal scores every map is equally likely to be
chosen; distinct scores are ranked exactly as ``torch.topk`` ranks them."""

import pytest
import torch
from scipy import stats

from selectscale.drop import SelectScale
from selectscale.drop.functional import tie_broken_keys, top_map_indices

# Seeded draws: a chi-square p below this would fail a fair selection about once in 10^4 seeds.
P_FLOOR = 1e-4


def selected_counts(scores: torch.Tensor, top_rate: float) -> torch.Tensor:
    """How often each channel is chosen, over the rows of ``scores``."""
    chosen = torch.zeros_like(scores).scatter(1, top_map_indices(scores, top_rate), 1.0)
    return chosen.sum(dim=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_distinct_scores_are_ranked_like_topk(dtype):
    torch.manual_seed(20)
    scores = torch.randn(500, 37).to(dtype).float()  # bf16 rounding makes some ties: drop rows that have any
    distinct = torch.tensor([len(set(row.tolist())) == row.numel() for row in scores])
    scores = scores[distinct]
    assert scores.shape[0] > 100
    ours = top_map_indices(scores, 0.3).sort(dim=1).values
    reference = scores.topk(ours.shape[1], dim=1).indices.sort(dim=1).values
    assert torch.equal(ours, reference)


def test_keys_keep_the_order_of_signed_scores_and_tie_zeros():
    scores = torch.tensor([[-3.0, -1.0, -0.0, 0.0, 1e-30, 2.0, float("inf"), -float("inf")]])
    keys = tie_broken_keys(scores)[0]
    order = keys.argsort().tolist()
    assert order[0] == 7 and order[1] == 0 and order[2] == 1 and set(order[3:5]) == {2, 3} and order[5:] == [4, 5, 6]
    assert abs(int(keys[2]) - int(keys[3])) < (1 << 31)  # -0.0 and +0.0 differ only in the random bits


def test_all_tied_maps_are_chosen_uniformly():
    torch.manual_seed(21)
    counts = selected_counts(torch.zeros(20_000, 8), top_rate=0.25)  # k = 2 of 8 all-zero maps
    assert counts.sum() == 40_000
    assert stats.chisquare(counts.numpy()).pvalue > P_FLOOR
    # The old deterministic choice (torch.topk) would always take the same two channels: the test would see it.
    assert stats.chisquare(selected_counts_topk(torch.zeros(20_000, 8), 2).numpy()).pvalue < P_FLOOR


def selected_counts_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.zeros_like(scores).scatter(1, scores.topk(k, dim=1).indices, 1.0).sum(dim=0)


def test_a_tie_at_the_kth_score_is_broken_uniformly_and_the_rest_is_exact():
    torch.manual_seed(22)
    row = torch.tensor([5.0, 2.0, 2.0, 2.0, 2.0, 1.0, 0.5, 2.0])  # k = 3: channel 0, then 2 of the five 2.0s
    counts = selected_counts(row.expand(30_000, 8).contiguous(), top_rate=3 / 8)
    assert counts[0] == 30_000 and counts[5] == 0 and counts[6] == 0
    tied = counts[[1, 2, 3, 4, 7]]
    assert tied.sum() == 60_000 and stats.chisquare(tied.numpy()).pvalue > P_FLOOR


def test_pairs_among_ties_are_uniform():
    """Not only each map: every 2-subset of 4 tied maps equally likely (6 subsets)."""
    torch.manual_seed(23)
    chosen = top_map_indices(torch.ones(24_000, 4), 0.5).sort(dim=1).values
    codes = (chosen[:, 0] * 4 + chosen[:, 1]).tolist()
    observed = [codes.count(a * 4 + b) for a in range(4) for b in range(a + 1, 4)]
    assert sum(observed) == 24_000 and stats.chisquare(observed).pvalue > P_FLOOR


def test_selectscale_layer_breaks_ties_between_identical_maps():
    torch.manual_seed(24)
    x = torch.ones(4_000, 4, 3, 3)  # four identical maps per sample: k = 1 must pick each a quarter of the time
    y = SelectScale(0.25, 0.0).train()(x)
    changed = (y != x).flatten(2).any(dim=2)
    assert torch.equal(changed.sum(dim=1), torch.ones(4_000, dtype=torch.long))
    assert stats.chisquare(changed.sum(dim=0).numpy()).pvalue > P_FLOOR


def test_top_rate_one_selects_every_map():
    indices = top_map_indices(torch.randn(3, 5), 1.0)
    assert torch.equal(indices.sort(dim=1).values, torch.arange(5).expand(3, 5))
