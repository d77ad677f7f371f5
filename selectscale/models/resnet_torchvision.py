"""torchvision's ResNet with drop slots: the classes behind :func:`selectscale.models.resnet.resnet50`.

A module of its own, imported when a ResNet-50 is built: torchvision takes about 4 s to import on a 2-core
CPU, which the CIFAR models should not pay. The design is in :mod:`selectscale.models.resnet`.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, ResNet

from .registry import DropFactory, make_drop


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
        out = self.drop1(self.relu(self.bn1(self.conv1(x))))
        out = self.drop2(self.relu(self.bn2(self.conv2(out))))
        out = self.drop3(self.bn3(self.conv3(out)))
        # the shortcut after the main path, as torchvision's Bottleneck: with drop_on_shortcut the drops draw in
        # the order of insert_drops on torchvision's resnet50, so the two give the same outputs under one seed
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class DropResNet(ResNet):
    """torchvision's ``ResNet`` plus ``features`` (the CIFAR models have it too)."""

    def features(self, x: Tensor) -> Tensor:
        """The last convolutional feature maps (N x 2048 x 7 x 7 at 224 px), used for CAM (Figure 5)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
