"""A small model registry: one decorated builder function per variant (as timm's ``register_model``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

DropFactory = Callable[..., nn.Module]

CIFAR_DATASETS = ("cifar10", "cifar100", "synthetic")  # 32 x 32 images
IMAGENET_DATASETS = ("imagenet", "synthetic")  # 224 x 224 crops (synthetic data can be any size)


@dataclass(frozen=True)
class ModelSpec:
    """What the engine needs to know of a registered model, declared where the model is registered: the
    ``options`` its builder takes (``create_model(name, ..., **options)``), the data sets it is built for, and
    its input side in pixels. Config validation and ``build_model`` read these, never a model's name."""

    name: str
    builder: Callable[..., nn.Module]
    options: tuple[str, ...] = ()
    datasets: tuple[str, ...] = CIFAR_DATASETS
    input_size: int = 32


_MODELS: dict[str, ModelSpec] = {}


def register_model(builder: Callable[..., nn.Module] | None = None, *, options: tuple[str, ...] = (),
                   datasets: tuple[str, ...] = CIFAR_DATASETS, input_size: int = 32):
    """Register ``builder(num_classes, drop, **options)`` under its function name; used bare
    (``@register_model``) or with the model's facts (``@register_model(options=("shortcut",), ...)``)."""

    def register(function: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if function.__name__ in _MODELS:
            raise ValueError(f"model {function.__name__!r} is registered twice")
        _MODELS[function.__name__] = ModelSpec(function.__name__, function, tuple(options), tuple(datasets),
                                               input_size)
        return function

    return register if builder is None else register(builder)


def list_models() -> list[str]:
    """Names of every registered model, in registration order."""
    return list(_MODELS)


def model_spec(name: str) -> ModelSpec:
    """The registered facts of model ``name`` (:class:`ModelSpec`); ValueError names the known models."""
    if name not in _MODELS:
        raise ValueError(f"model {name!r} is not known: use one of {', '.join(_MODELS)}")
    return _MODELS[name]


def create_model(name: str, num_classes: int, drop: DropFactory | None = None, pretrained: str | Path | None = None,
                 **options) -> nn.Module:
    """Build a registered model.

    ``drop`` is ``None`` (no drop layers at all) or a factory: a callable returning a new drop module
    that accepts the keyword ``rate_scale``, e.g. ``functools.partial(SelectScale, top_rate=0.2,
    retain_rate=0.1)`` or ``selectscale.drop.drop_factory("selectscale", ...)``. The model calls it
    once per drop position. ``options`` are the family's extra choices (e.g. ``shortcut="avgpool"``).
    ``pretrained``: a weight file to load, weights only and strictly (see :func:`load_pretrained`): e.g.
    torchvision's ``resnet50-0676ba61.pth`` for ``resnet50`` with 1,000 classes, so that fine-tuning with
    SelectScale starts from published weights (the drop layers hold no state: the keys are torchvision's).
    """
    spec = model_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} is invalid: it must be an integer >= 1")
    if drop is not None and not callable(drop):
        raise ValueError(
            f"drop={drop!r} is not callable: pass None or a factory that returns a drop module and "
            "accepts rate_scale, e.g. functools.partial(SelectScale, top_rate=0.2, retain_rate=0.1)"
        )
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ValueError(f"model {name!r} takes no option {', '.join(unknown)}: its options are "
                         f"{', '.join(spec.options) or 'none'}")
    model = spec.builder(num_classes=num_classes, drop=drop, **options)
    if pretrained is not None:
        load_pretrained(model, pretrained, name)
    return model


def load_pretrained(model: nn.Module, path: str | Path, name: str = "the model") -> nn.Module:
    """Load a state dict from ``path`` into ``model``, strictly, with ``torch.load(weights_only=True)`` (no code
    runs from the file). The file holds the state dict itself (torchvision's weight files) or a mapping with it
    under ``model`` (this project's checkpoint.pt) or ``state_dict``. Raises ValueError naming what does not fit."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained={str(path)!r}: no such file; pass a weight file such as torchvision's "
                                "resnet50-0676ba61.pth")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a file that is not a weights-only pickle
        raise ValueError(f"pretrained={str(path)!r} is not a weights-only torch file ({type(error).__name__}); "
                         "pass a state dict saved with torch.save") from error
    state = content.get("model", content.get("state_dict", content)) if isinstance(content, dict) else content
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained={str(path)!r} holds no state dict of tensors (found {type(state).__name__})")
    problem = _state_dict_mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f"pretrained={str(path)!r} does not fit {name}: {problem}")
    model.load_state_dict(state, strict=True)
    return model


def _state_dict_mismatch(expected: dict, found: dict) -> str | None:
    """What keeps ``found`` from loading strictly into a model whose state dict is ``expected``, or None."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [f"{key} {tuple(found[key].shape)} (the model: {tuple(value.shape)})" for key, value in expected.items()
              if key in found and found[key].shape != value.shape]
    parts = [f"{label} {len(items)} key(s), e.g. {items[0]}" for label, items in
             (("missing", missing), ("unexpected", unexpected), ("a different shape for", shapes)) if items]
    return "; ".join(parts) or None


def make_drop(drop: DropFactory | None, rate_scale: float = 1.0, after_relu: bool = False) -> nn.Module:
    """One drop module from the factory, or ``nn.Identity`` (no state) when there is none.

    ``after_relu``: the model feeds this slot ReLU outputs (>= 0). A layer with a ``nonnegative_input``
    attribute (Selectout, SelectScale) then scores maps by max y instead of max |y|: the same scores from
    one reduction instead of two (measured: a third of SelectScale's cost in ResNet-110 on the CPU)."""
    if drop is None:
        return nn.Identity()
    layer = drop(rate_scale=rate_scale)
    if after_relu and hasattr(layer, "nonnegative_input"):
        layer.nonnegative_input = True
    return layer
