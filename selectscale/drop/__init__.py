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
from .dropblock import drop_block
from .functional import dropout, feature_map_scores, select_scale, selectout, spatial_dropout, spatial_scale
from .insert import insert_drops
from .layers import DropBlock, DropLayer, Dropout, Selectout, SelectScale, SpatialDropout, SpatialScale
from .selective import SelectDropBlock, Selective, selective

__all__ = [
    "DROP_LAYERS",
    "DropBlock",
    "DropLayer",
    "Dropout",
    "SpatialDropout",
    "SpatialScale",
    "Selectout",
    "SelectScale",
    "SelectDropBlock",
    "Selective",
    "apply_at_inference",
    "build_drop",
    "drop_arguments",
    "drop_block",
    "is_selective",
    "drop_factory",
    "drop_layers",
    "dropout",
    "feature_map_scores",
    "functional",
    "insert_drops",
    "select_scale",
    "selective",
    "selectout",
    "set_drop_strength",
    "spatial_dropout",
    "spatial_scale",
]

# The single source of drop method names: the engine's validation, build_model's argument filtering and the
# tests' method lists derive from these classes (their signatures and ``selective`` attribute).
DROP_LAYERS: dict[str, type[nn.Module] | None] = {
    "none": None,
    "dropout": Dropout,
    "spatial_dropout": SpatialDropout,
    "spatial_scale": SpatialScale,
    "selectout": Selectout,
    "selectscale": SelectScale,
    "dropblock": DropBlock,
    "select_dropblock": SelectDropBlock,
}


def _allowed_arguments(layer_class: type[nn.Module]) -> list[str]:
    """The keyword arguments of ``layer_class``: its ``__init__``'s, and its parents' while it forwards
    ``**kwargs`` to them (Selectout passes the score arguments on)."""
    names = []
    for cls in layer_class.__mro__:
        if cls is nn.Module:
            break
        params = inspect.signature(cls.__init__).parameters
        names += [n for n, p in params.items() if n != "self" and p.kind == p.POSITIONAL_OR_KEYWORD]
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return list(dict.fromkeys(names))


def drop_arguments(name: str) -> tuple[str, ...]:
    """The arguments ``build_drop(name, ...)`` takes (``rate_scale`` included; none for ``none``)."""
    if name not in DROP_LAYERS:
        raise ValueError(f"drop method {name!r} is not known: use one of {', '.join(DROP_LAYERS)}")
    layer_class = DROP_LAYERS[name]
    return ("rate_scale",) if layer_class is None else tuple(_allowed_arguments(layer_class))


def is_selective(name: str) -> bool:
    """Whether drop method ``name`` ranks maps by the paper's score (it takes ``top_rate``)."""
    return bool(getattr(DROP_LAYERS[name], "selective", False))


def build_drop(name: str, **kwargs) -> nn.Module:
    """Build a drop layer by name (a key of :data:`DROP_LAYERS`): ``none`` (``nn.Identity``; it accepts and
    ignores ``rate_scale``), ``dropout``, ``spatial_dropout``, ``spatial_scale``, ``selectout``, ``selectscale``,
    ``dropblock``, ``select_dropblock``."""
    allowed = drop_arguments(name)
    unexpected = sorted(set(kwargs) - set(allowed))
    if unexpected:
        if DROP_LAYERS[name] is None:
            raise ValueError(f"drop method 'none' takes no arguments, got {', '.join(unexpected)}")
        raise ValueError(
            f"drop method {name!r} does not take {', '.join(unexpected)}: its arguments are {', '.join(allowed)}"
        )
    layer_class = DROP_LAYERS[name]
    return nn.Identity() if layer_class is None else layer_class(**kwargs)


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
