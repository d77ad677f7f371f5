"""The paper's drop methods as layers and functions, plus the helpers models and the engine use.

>>> import torch
>>> from selectscale.drop import SelectScale
>>> layer = SelectScale(top_rate=0.2, retain_rate=0.1)   # Table 2, WRN-20-8
>>> layer(torch.randn(2, 16, 8, 8)).shape
torch.Size([2, 16, 8, 8])
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import nn

from . import functional
from .functional import dropout, feature_map_scores, select_scale, selectout, spatial_dropout, spatial_scale
from .insert import insert_drops
from .layers import DropLayer, Dropout, Selectout, SelectScale, SpatialDropout, SpatialScale

__all__ = [
    "DROP_LAYERS",
    "DropLayer",
    "Dropout",
    "SpatialDropout",
    "SpatialScale",
    "Selectout",
    "SelectScale",
    "apply_at_inference",
    "build_drop",
    "drop_factory",
    "drop_layers",
    "dropout",
    "feature_map_scores",
    "functional",
    "insert_drops",
    "select_scale",
    "selectout",
    "set_drop_strength",
    "spatial_dropout",
    "spatial_scale",
]

DROP_LAYERS: dict[str, type[DropLayer] | None] = {
    "none": None,
    "dropout": Dropout,
    "spatial_dropout": SpatialDropout,
    "spatial_scale": SpatialScale,
    "selectout": Selectout,
    "selectscale": SelectScale,
}


def _allowed_arguments(layer_class: type[DropLayer]) -> list[str]:
    names = []
    for cls in layer_class.__mro__:
        if cls is nn.Module:
            break
        params = inspect.signature(cls.__init__).parameters
        names += [n for n, p in params.items() if n != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]
    return list(dict.fromkeys(names))


def build_drop(name: str, **kwargs) -> nn.Module:
    """Build a drop layer by name: ``none`` (``nn.Identity``; it accepts and ignores ``rate_scale``),
    ``dropout``, ``spatial_dropout``, ``spatial_scale``, ``selectout``, ``selectscale``."""
    if name not in DROP_LAYERS:
        raise ValueError(f"drop method {name!r} is not known: use one of {', '.join(DROP_LAYERS)}")
    layer_class = DROP_LAYERS[name]
    if layer_class is None:
        unexpected = sorted(set(kwargs) - {"rate_scale"})
        if unexpected:
            raise ValueError(f"drop method 'none' takes no arguments, got {', '.join(unexpected)}")
        return nn.Identity()
    allowed = _allowed_arguments(layer_class)
    unexpected = sorted(set(kwargs) - set(allowed))
    if unexpected:
        raise ValueError(
            f"drop method {name!r} does not take {', '.join(unexpected)}: its arguments are {', '.join(allowed)}"
        )
    return layer_class(**kwargs)


def drop_factory(name: str, **kwargs) -> Callable[..., nn.Module] | None:
    """A factory for ``create_model(..., drop=...)``: called once per drop position, with the
    keyword ``rate_scale``. Returns ``None`` for ``none`` (no drop layers at all). The arguments
    are checked now, by building one layer, so a bad config fails before a model is built."""
    build_drop(name, **kwargs)
    if name == "none":
        return None
    return functools.partial(build_drop, name, **kwargs)


def drop_layers(module: nn.Module) -> Iterator[DropLayer]:
    """Every drop layer inside ``module`` (the module itself included)."""
    return (m for m in module.modules() if isinstance(m, DropLayer))


def set_drop_strength(module: nn.Module, strength: float) -> int:
    """Set ``strength`` (in [0, 1]) on every drop layer inside ``module``; returns how many.

    The drop amount 1 - retain scales linearly with it; 0 makes every layer the identity."""
    functional.check_rate("strength", strength)
    layers = list(drop_layers(module))
    for layer in layers:
        layer.strength = strength
    return len(layers)


@contextmanager
def apply_at_inference(module: nn.Module) -> Iterator[nn.Module]:
    """Make every drop layer inside ``module`` act as in training while the rest of the model
    keeps its mode (BatchNorm in eval uses its running statistics). Figure 3 of the paper.

    >>> with apply_at_inference(model.eval()):   # doctest: +SKIP
    ...     logits = model(images)
    """
    layers = list(drop_layers(module))
    previous = [layer.active_at_inference for layer in layers]
    for layer in layers:
        layer.active_at_inference = True
    try:
        yield module
    finally:
        for layer, was_active in zip(layers, previous, strict=True):
            layer.active_at_inference = was_active
