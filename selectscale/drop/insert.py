"""Put drop layers into any network, as the paper places them in its own: after every BatchNorm (Section 3.5).

>>> import torchvision
>>> from selectscale.drop import drop_factory, insert_drops
>>> model = torchvision.models.resnet50()
>>> insert_drops(model, drop_factory("selectscale", top_rate=0.1, retain_rate=0.2),
...              modules=("layer3", "layer4"), rate_scale={"layer3": 0.5},
...              exclude=("*.downsample.*",), followed_by_relu=("*.bn1", "*.bn2"))  # = create_model("resnet50")
... # doctest: +ELLIPSIS
ResNet(...)

Without ``exclude`` a drop also follows each downsample BatchNorm (29 layers: ``drop_on_shortcut=True``); without
``followed_by_relu`` the drops after ``bn1``/``bn2`` act before the block's ReLU, on signed maps, so a selective
method ranks the maps by another score than in ``create_model("resnet50")`` (tests/test_placement.py).

Mechanism: a forward hook on each chosen module applies a drop layer to its output; the drop layer is attached
to that module as the child ``selectscale_drop``. Why hooks, and not the other two ways:

* Wrapping (``bn -> nn.Sequential(bn, drop)``) renames every key below the wrapped module (``bn1.weight`` becomes
  ``bn1.0.weight``), so published weights no longer load; a hook changes no key, no parameter and no module path.
* torch.fx rewrites the model into a ``GraphModule``: it fails on data-dependent control flow (timm's models have
  some), loses the model's own class and methods, and must be redone after every structural change.
* Hooks registered before ``torch.compile`` are traced into the compiled graph (dynamo inlines module calls with
  their hooks); the drop layers hold no persistent state, so ``state_dict`` round trips are exact; and since the
  layers are real submodules, ``model.train()/eval()``, ``.to()``, ``set_drop_strength``, ``apply_at_inference``
  and DDP see them like any other module.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import Tensor, nn

DROP_CHILD = "selectscale_drop"  # the attribute name of an inserted layer on its host module
_NONNEGATIVE_OUTPUTS = (nn.ReLU, nn.ReLU6)  # modules whose outputs are >= 0: the score needs no |y|


def _apply_inserted_drop(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    """Forward hook: the host's output through its inserted drop layer (a module-level function: picklable)."""
    return getattr(module, DROP_CHILD)(output)


def _apply_inserted_drop_after_relu(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    """Forward hook of a host that the network passes through a ReLU next: ReLU, then the drop layer. The network's
    own ReLU then leaves the result unchanged (every drop factor is >= 0), so the drop acts after the ReLU, as in
    conv-BN-ReLU-[drop], and the eval-mode output is the network's."""
    return getattr(module, DROP_CHILD)(torch.relu(output))


def _chosen_children(model: nn.Module, modules: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    if modules is None:
        return [("", model)]
    if isinstance(modules, str):
        raise TypeError(f"modules={modules!r} must be a sequence of child names, e.g. ({modules!r},)")
    children = dict(model.named_children())
    unknown = [name for name in modules if name not in children]
    if unknown:
        raise ValueError(f"modules {', '.join(map(repr, unknown))} are not top-level children of "
                         f"{type(model).__name__}; its children are {', '.join(children) or 'none'}")
    return [(name, children[name]) for name in modules]


def _scale_of(child_name: str, path: str, rate_scale: Mapping[str, float] | None) -> float:
    """The factor of the top-level child that ``path`` (a dotted module path of the whole model) lies in."""
    if not rate_scale:
        return 1.0
    top = child_name or path.split(".", 1)[0]
    return float(rate_scale.get(top, 1.0))


def _check_rate_scale(model: nn.Module, rate_scale: Mapping[str, float] | None) -> None:
    if rate_scale is None:
        return
    children = dict(model.named_children())
    unknown = [name for name in rate_scale if name not in children]
    if unknown:
        raise ValueError(f"rate_scale names {', '.join(map(repr, unknown))}, which are not top-level children of "
                         f"{type(model).__name__}; its children are {', '.join(children) or 'none'}")


def _hosts(model: nn.Module, modules: Sequence[str] | None, after) -> Iterator[tuple[str, str, nn.Module]]:
    """(top-level child name, dotted path, module) of every module of type ``after`` in the chosen children."""
    for child_name, child in _chosen_children(model, modules):
        for path, module in child.named_modules():
            if isinstance(module, after):
                yield child_name, ".".join(part for part in (child_name, path) if part), module


def _patterns(name: str, patterns: Sequence[str]) -> tuple[str, ...]:
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"{name}={patterns!r} must be a sequence of module-path patterns, e.g. ('*.downsample.*',)")
    return tuple(patterns)


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns)


def _check_patterns_match(name: str, patterns: Sequence[str], paths: list[str]) -> None:
    """A pattern that matches no position is a mistake (a misspelt path would silently change nothing)."""
    unused = [pattern for pattern in patterns if not any(fnmatch.fnmatchcase(path, pattern) for path in paths)]
    if unused:
        raise ValueError(f"{name} pattern(s) {', '.join(map(repr, unused))} match no position; positions are dotted "
                         f"module paths such as {paths[0]!r}")


def insert_drops(model: nn.Module, drop: Callable[..., nn.Module] | None, *, after=nn.BatchNorm2d,
                 modules: Sequence[str] | None = None, rate_scale: Mapping[str, float] | None = None,
                 exclude: Sequence[str] = (), followed_by_relu: Sequence[str] = ()) -> nn.Module:
    """Insert a drop layer after every module of type ``after`` (a class or a tuple of classes) inside the
    top-level children named in ``modules`` (None: the whole model); return ``model``, changed in place.

    ``drop`` is a drop factory, as everywhere in the project (``drop_factory(name, ...)``,
    ``functools.partial(SelectScale, top_rate=..., retain_rate=...)``), called once per position with
    ``rate_scale``: the factor of the top-level child the position lies in (``{"layer3": 0.5}``, the paper's
    ResNet-50 rule following DropBlock; 1.0 elsewhere). ``None`` inserts nothing. Positions after a ReLU get
    ``nonnegative_input=True`` (one reduction for the max score instead of two); after a BatchNorm the maps are
    signed. Parameters, state-dict keys and eval-mode outputs are unchanged. A module shared by several call
    sites (torchvision's one ``relu`` per block) drops at each call: choose BatchNorm2d positions there.

    ``exclude``: shell-style patterns (``fnmatch``) of dotted module paths that get no drop layer, e.g.
    ``("*.downsample.*",)`` for the BatchNorm of torchvision's downsample shortcuts. ``followed_by_relu``: patterns of
    positions whose output the network passes through a ReLU next (``("*.bn1", "*.bn2")`` in torchvision's
    Bottleneck): there the drop acts after that ReLU (the hook applies the ReLU first; the network's own ReLU then
    changes nothing, as every drop factor is >= 0) and scores the maps without ``|y|``, as conv-BN-ReLU-[drop] in
    this project's models. A pattern that matches no position is a ``ValueError``.
    """
    if drop is None:
        return model
    if isinstance(drop, nn.Module) or not callable(drop):  # a layer instance is callable too, but one per position
        raise TypeError(f"drop={drop!r} is not a factory (one new layer per position): pass e.g. "
                        "drop_factory('selectscale', top_rate=0.1, retain_rate=0.2)")
    _check_rate_scale(model, rate_scale)
    exclude, followed_by_relu = _patterns("exclude", exclude), _patterns("followed_by_relu", followed_by_relu)
    found = list(_hosts(model, modules, after))
    if found:
        _check_patterns_match("exclude", exclude, [path for _, path, _ in found])
    hosts = [host for host in found if not _matches(host[1], exclude)]
    if not hosts:
        raise ValueError(f"no module of type {getattr(after, '__name__', after)} inside "
                         f"{', '.join(modules) if modules else type(model).__name__}"
                         f"{' outside exclude' if found else ''}: nothing to insert after")
    _check_patterns_match("followed_by_relu", followed_by_relu, [path for _, path, _ in hosts])
    already = [path for _, path, module in hosts if hasattr(module, DROP_CHILD)]
    if already:
        raise ValueError(f"{already[0]} already has an inserted drop layer ({len(already)} positions): insert once, "
                         "or build a fresh model")
    for child_name, path, module in hosts:
        layer = drop(rate_scale=_scale_of(child_name, path, rate_scale))
        relu_first = _matches(path, followed_by_relu)
        if (relu_first or isinstance(module, _NONNEGATIVE_OUTPUTS)) and hasattr(layer, "nonnegative_input"):
            layer.nonnegative_input = True
        module.add_module(DROP_CHILD, layer)
        module.register_forward_hook(_apply_inserted_drop_after_relu if relu_first else _apply_inserted_drop)
    return model
