"""The paper's networks: ``create_model(name, num_classes, drop=None)`` and ``list_models()``.

CIFAR: resnet20/32/44/56/110, wrn20_2/4/8 (the paper's widened ResNet-20), resnext29_8x64d/16x64d.
ImageNet: resnet50 (torchvision-identical). See ``docs/reproduction.md`` for every architectural choice.
"""

from . import cifar_resnet, resnet, resnext  # noqa: F401  (registers the models)
from .registry import ModelSpec, create_model, list_models, model_spec, register_model

__all__ = ["ModelSpec", "create_model", "list_models", "model_spec", "register_model"]
