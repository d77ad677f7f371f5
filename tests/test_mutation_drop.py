"""Tests that kill the mutants the second `make mutation` run (scope widened to all of drop/) left alive in
DropBlock and in the drop functions (issue 34, item 1; each survivor and its fate: docs/mutation.md).

DropBlock is the paper's ResNet-50 method (Section 3.5, Ghiasi et al. 2018) and SelectDropBlock its selecting
version; what these pin: block sizes clipped per side on non-square maps, blocks of every size (2 x 2 included)
dropped whole, the kept-fraction rescaling at its smallest count, the argument checks and the default block size.
"""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from selectscale.drop import drop_block
from selectscale.drop.dropblock import check_block_size, drop_block_mask, masked_and_rescaled


@pytest.mark.parametrize("bad", [2.5, True, 0, -3])
def test_block_size_must_be_an_integer_of_at_least_one(bad):
    with pytest.raises(ValueError, match="block_size"):
        check_block_size(bad)
    with pytest.raises(ValueError, match="block_size"):
        drop_block(torch.ones(1, 2, 8, 8), 0.9, block_size=bad)


def test_the_function_defaults_to_ghiasis_block_of_7():
    assert inspect.signature(drop_block).parameters["block_size"].default == 7
    torch.manual_seed(0)
    mask = drop_block_mask(torch.ones(64, 1, 20, 20), 0.98, 7)
    # every dropped position lies in a fully dropped 7 x 7 square (blocks never leave a map here: 20 >= 7)
    torch.manual_seed(0)
    assert torch.equal(drop_block(torch.ones(64, 1, 20, 20), 0.98) == 0, mask == 0)


def _dropped_whole(mask: torch.Tensor, size: int) -> bool:
    """Every dropped (0) position lies inside some size x size window that is dropped entirely."""
    dropped = 1.0 - mask
    whole = -F.max_pool2d(-dropped, size, stride=1) == 1.0  # windows (by their top-left corner) dropped entirely
    covered = F.max_pool2d(F.pad(whole.float(), (size - 1,) * 4), size, stride=1) == 1.0
    return bool(torch.all(covered | (dropped == 0)))


@pytest.mark.parametrize("size", [2, 3])
def test_small_blocks_are_dropped_whole(size):
    torch.manual_seed(1)
    mask = drop_block_mask(torch.ones(32, 4, 12, 12), 0.9, size)
    assert mask.min() == 0.0, "the draw dropped nothing: the test would not see a single-position drop"
    assert _dropped_whole(mask, size)
    # and the drops are blocks, not single positions: a 1 x 1 drop is never whole at the block size
    assert (mask == 0).sum() >= size * size


@pytest.mark.parametrize("height, width", [(3, 9), (9, 3)])
def test_a_block_larger_than_one_side_is_clipped_to_that_side(height, width):
    torch.manual_seed(2)
    y = torch.ones(16, 3, height, width)
    out = drop_block(y, 0.7, block_size=7)
    assert out.shape == y.shape
    mask = drop_block_mask(y, 0.7, 7)
    side = min(height, width)
    assert mask.min() == 0.0 and _dropped_whole(mask, side)


def test_one_kept_position_is_scaled_by_the_whole_count():
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, 2, 1] = 1.0
    out = masked_and_rescaled(torch.full((1, 1, 4, 4), 3.0), mask)
    assert out[0, 0, 2, 1].item() == pytest.approx(3.0 * 16)
    assert out.sum().item() == pytest.approx(3.0 * 16)


def test_the_rescaling_is_numel_over_kept_for_two_kept_positions():
    mask = torch.zeros(2, 1, 2, 2)
    mask[0, 0, 0, 0] = mask[1, 0, 1, 1] = 1.0
    out = masked_and_rescaled(torch.ones(2, 1, 2, 2), mask)
    assert out[0, 0, 0, 0].item() == pytest.approx(4.0) and out[1, 0, 1, 1].item() == pytest.approx(4.0)


# --- the registry's contract ----------------------------------------------------------------------------------------

def test_none_has_no_factory_and_exactly_the_selecting_methods_are_selective():
    from selectscale.drop import DROP_LAYERS, drop_factory, is_selective

    assert drop_factory("none") is None  # a model without drop layers, not one with identity layers
    assert drop_factory("dropout", retain_rate=0.9) is not None
    assert {name for name in DROP_LAYERS if is_selective(name)} == {"selectout", "selectscale", "select_dropblock"}


# --- the fast path of the map scores: chosen for narrow channels-last CPU tensors only ------------------------------

def test_the_channels_last_reduction_is_chosen_for_narrow_channels_last_cpu_tensors_only():
    """The two reductions give the same scores (tested elsewhere); this pins which one runs, since the other is
    ~45x slower on the maps it is chosen for (a 128 x 16 x 32 x 32 channels-last batch on CPU)."""
    from selectscale.drop.functional import _NARROW_CHANNELS, _is_narrow_channels_last

    def channels_last(c, h=8, w=8):
        return torch.randn(2, c, h, w).contiguous(memory_format=torch.channels_last)

    assert _is_narrow_channels_last(channels_last(16))
    assert _is_narrow_channels_last(channels_last(_NARROW_CHANNELS - 1, 3, 70))  # C decides, not H or W
    assert not _is_narrow_channels_last(channels_last(_NARROW_CHANNELS))
    assert not _is_narrow_channels_last(torch.randn(2, 16, 8, 8))  # NCHW
    assert not _is_narrow_channels_last(torch.randn(2, 16, 8, 8).transpose(2, 3))  # neither layout
    assert not _is_narrow_channels_last(torch.randn(2, 16, 8, 8, device="meta").contiguous(
        memory_format=torch.channels_last))  # not a CPU tensor


# --- which arguments build_drop accepts: a layer's own, and its parents' only while it forwards **kwargs -------------

class _Parent(nn.Module):
    def __init__(self, retain_rate: float = 0.9, block: int = 3) -> None:
        super().__init__()


class _Forwarding(_Parent):
    def __init__(self, top_rate: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)


class _Closed(_Parent):
    def __init__(self, top_rate: float = 0.2) -> None:
        super().__init__()


class _ForwardsToModule(nn.Module):
    def __init__(self, top_rate: float = 0.2, **kwargs) -> None:
        super().__init__(**kwargs)


def test_allowed_arguments_follow_forwarded_kwargs_up_to_nn_module_and_no_further():
    from selectscale.drop import DROP_LAYERS, _allowed_arguments, drop_arguments

    assert _allowed_arguments(_Forwarding) == ["top_rate", "retain_rate", "block"]
    assert _allowed_arguments(_Closed) == ["top_rate"]  # no **kwargs: the parent's are not reachable
    assert _allowed_arguments(_ForwardsToModule) == ["top_rate"]  # nn.Module's own are never offered
    for name in DROP_LAYERS:
        assert not {"self", "kwargs", "args"} & set(drop_arguments(name)), name


# --- the scores' fast path is the one feature_map_scores takes --------------------------------------------------------

def test_feature_map_scores_takes_the_channels_last_path_exactly_when_the_predicate_says(monkeypatch):
    from selectscale.drop import functional

    calls = []
    original = functional._channels_last_reduce
    monkeypatch.setattr(functional, "_channels_last_reduce", lambda y, r: calls.append(1) or original(y, r))
    narrow = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    expected = narrow.abs().amax(dim=(2, 3))
    assert torch.equal(functional.feature_map_scores(narrow), expected) and calls
    calls.clear()
    assert torch.equal(functional.feature_map_scores(narrow.contiguous()), expected) and not calls
