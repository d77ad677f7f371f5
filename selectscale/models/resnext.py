"""ResNeXt-29 for CIFAR (Xie et al. 2017, Section 5.3 / Table 7).

Stem conv3x3 64 + BN + ReLU; 3 stages x 3 bottleneck blocks; a block is
conv1x1 (D) - BN - ReLU - [drop] - group conv3x3 (D, ``cardinality`` groups) - BN - ReLU - [drop] -
conv1x1 (out) - BN, plus the shortcut, then ReLU. D = cardinality x ``base_width`` x 2^stage and
out = 256 x 2^stage; 1x1 projection shortcuts (conv + BN) where the shape changes. Drop layers sit
before and after the 3x3 group convolution (paper Section 3.1): 2 per block, 18 in all (19 with
``drop_after_stem=True``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .cifar_resnet import CifarBackbone, init_weights
from .registry import DropFactory, make_drop, register_model


class ResNeXtBlock(nn.Module):
    def __init__(self, in_channels: int, inner: int, out_channels: int, stride: int, cardinality: int,
                 drop: DropFactory | None) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(inner)
        self.drop_reduce = make_drop(drop, after_relu=True)
        self.conv_group = nn.Conv2d(inner, inner, 3, stride, padding=1, groups=cardinality, bias=False)
        self.bn_group = nn.BatchNorm2d(inner)
        self.drop_group = make_drop(drop, after_relu=True)
        self.conv_expand = nn.Conv2d(inner, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.drop_reduce(F.relu(self.bn_reduce(self.conv_reduce(x))))
        out = self.drop_group(F.relu(self.bn_group(self.conv_group(out))))
        out = self.bn_expand(self.conv_expand(out))
        return F.relu(out + self.shortcut(x))


class CifarResNeXt(CifarBackbone):
    def __init__(self, num_classes: int, cardinality: int = 8, base_width: int = 64,
                 drop: DropFactory | None = None, blocks_per_stage: int = 3, drop_after_stem: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.set_stem_drop(drop, drop_after_stem)
        stages, in_channels = [], 64
        for stage in range(3):
            inner, out_channels = cardinality * base_width * 2**stage, 256 * 2**stage
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(ResNeXtBlock(in_channels, inner, out_channels, stride, cardinality, drop))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(in_channels, num_classes)
        init_weights(self)


@register_model(options=("drop_after_stem",))
def resnext29_8x64d(num_classes, drop=None, **options):
    return CifarResNeXt(num_classes, cardinality=8, base_width=64, drop=drop, **options)


@register_model(options=("drop_after_stem",))
def resnext29_16x64d(num_classes, drop=None, **options):
    return CifarResNeXt(num_classes, cardinality=16, base_width=64, drop=drop, **options)
