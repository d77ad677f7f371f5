"""ResNet-50 for ImageNet, structurally identical to ``torchvision.models.resnet50``.

It *is* torchvision's ``ResNet`` built from a bottleneck subclass that adds three drop slots:
conv1-bn1-ReLU-[drop1], conv2-bn2-ReLU-[drop2], conv3-bn3-[drop3], add, ReLU. The slots are
``nn.Identity`` (no state) except in ``layer3`` and ``layer4``, where the paper applies drops after
every BN of the bottleneck blocks (Section 3.5): 27 layers, those of ``layer3`` with
``rate_scale=0.5`` following DropBlock (Ghiasi et al. 2018). ``drop_on_shortcut=True`` also puts one after
the BN of each downsample shortcut (a literal "after every BN", as DropBlock's reference code does): 29.
Module names, state-dict keys, shapes and initialisation are torchvision's, so its weights load with ``strict=True``.
"""

from __future__ import annotations

from .registry import IMAGENET_DATASETS, register_model

# (group name, rate_scale) for the groups that get drop layers; the paper's ImageNet placement.
RESNET50_DROP_GROUPS = (("layer3", 0.5), ("layer4", 1.0))


@register_model(options=("drop_groups", "drop_on_shortcut"), datasets=IMAGENET_DATASETS, input_size=224)
def resnet50(num_classes, drop=None, drop_groups=RESNET50_DROP_GROUPS, drop_on_shortcut=False, **options):
    from .resnet_torchvision import DropBottleneck, DropResNet  # torchvision, only for this model

    model = DropResNet(DropBottleneck, [3, 4, 6, 3], num_classes=num_classes, **options)
    for group, rate_scale in drop_groups:
        for block in getattr(model, group):
            block.set_drop(drop, rate_scale, on_shortcut=drop_on_shortcut)
    return model
