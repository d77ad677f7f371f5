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

from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, ResNet

from .registry import IMAGENET_DATASETS, DropFactory, make_drop, register_model

# (group name, rate_scale) for the groups that get drop layers; the paper's ImageNet placement.
RESNET50_DROP_GROUPS = (("layer3", 0.5), ("layer4", 1.0))


class DropBottleneck(Bottleneck):
    """torchvision's Bottleneck with a drop slot after each BN of the main path."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.drop1, self.drop2, self.drop3 = nn.Identity(), nn.Identity(), nn.Identity()

    def set_drop(self, drop: DropFactory | None, rate_scale: float, on_shortcut: bool = False) -> None:
        self.drop1, self.drop2 = (make_drop(drop, rate_scale, after_relu=True) for _ in range(2))
        self.drop3 = make_drop(drop, rate_scale)
        if on_shortcut and drop is not None and self.downsample is not None:
            # downsample.2, after conv (0) and BN (1): a drop layer holds no state, so the keys stay torchvision's
            self.downsample.append(make_drop(drop, rate_scale))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.drop1(self.relu(self.bn1(self.conv1(x))))
        out = self.drop2(self.relu(self.bn2(self.conv2(out))))
        out = self.drop3(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


class DropResNet(ResNet):
    """torchvision's ``ResNet`` plus ``features`` (the CIFAR models have it too)."""

    def features(self, x: Tensor) -> Tensor:
        """The last convolutional feature maps (N x 2048 x 7 x 7 at 224 px), used for CAM (Figure 5)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@register_model(options=("drop_groups", "drop_on_shortcut"), datasets=IMAGENET_DATASETS, input_size=224)
def resnet50(num_classes, drop=None, drop_groups=RESNET50_DROP_GROUPS, drop_on_shortcut=False, **options):
    model = DropResNet(DropBottleneck, [3, 4, 6, 3], num_classes=num_classes, **options)
    for group, rate_scale in drop_groups:
        for block in getattr(model, group):
            block.set_drop(drop, rate_scale, on_shortcut=drop_on_shortcut)
    return model
