"""Bad arguments raise ValueError naming the argument, its value and what is allowed."""

import pytest
import torch

from selectscale.drop import (
    Dropout,
    Selectout,
    SelectScale,
    SpatialScale,
    build_drop,
    drop_factory,
    select_scale,
    set_drop_strength,
)

BAD_CONSTRUCTIONS = [
    (lambda: Dropout(1.5), ["retain_rate=1.5", "[0, 1]"]),
    (lambda: Dropout(-0.1), ["retain_rate=-0.1", "[0, 1]"]),
    (lambda: SpatialScale(0.4, rate_scale=2.0), ["rate_scale=2.0", "[0, 1]"]),
    (lambda: SelectScale(top_rate=1.5, retain_rate=0.1), ["top_rate=1.5", "[0, 1]"]),
    (lambda: SelectScale(top_rate=0.2, retain_rate=-0.1), ["retain_rate=-0.1", "[0, 1]"]),
    (lambda: SelectScale(0.2, 0.1, score="median"), ["score='median'", "max, mean, avgpool"]),
    (lambda: SelectScale(0.2, 0.1, score="avgpool", score_window=0), ["score_window=0", ">= 1"]),
    (lambda: Selectout(top_rate=0.1, retain_rate=0.8), ["retain_rate=0.8", "top_rate=0.1", "<= top_rate"]),
    (lambda: Dropout("0.9"), ["retain_rate='0.9'", "number"]),
    (lambda: build_drop("dropconnect"), ["'dropconnect'", "selectscale", "spatial_dropout"]),
    (lambda: build_drop("dropout", retain_rate=0.9, top_rate=0.2), ["top_rate", "retain_rate, rate_scale"]),
    (lambda: build_drop("none", retain_rate=0.9), ["'none'", "retain_rate"]),
    (lambda: drop_factory("selectscale", top_rate=2.0, retain_rate=0.1), ["top_rate=2.0"]),
    (lambda: set_drop_strength(SelectScale(0.2, 0.1), 1.5), ["strength=1.5", "[0, 1]"]),
    (lambda: select_scale(torch.randn(2, 3, 4, 4), top_rate=0.2, retain_rate=3.0), ["retain_rate=3.0"]),
]


@pytest.mark.parametrize("construct, fragments", BAD_CONSTRUCTIONS)
def test_bad_arguments_raise_value_error_with_name_value_and_range(construct, fragments):
    with pytest.raises(ValueError) as error:
        construct()
    message = str(error.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from {message!r}"


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 4, 4, 4), (8,)])
@pytest.mark.parametrize("training", [True, False])
def test_non_4d_input_is_refused(shape, training):
    layer = SelectScale(0.2, 0.1).train(training)
    with pytest.raises(ValueError, match=r"4-D N x C x H x W"):
        layer(torch.randn(shape))


def test_selectout_accepts_the_boundary_one_minus_p_equal_to_t():
    layer = Selectout(top_rate=0.1, retain_rate=0.9).train()
    y = layer(torch.rand(2, 30, 2, 2) + 0.5)
    assert ((y == 0).flatten(2).all(-1).sum(1) == 3).all()
