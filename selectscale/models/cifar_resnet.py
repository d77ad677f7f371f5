"""CIFAR ResNet-(6n+2) (He et al. 2016a, Section 4.2) and the paper's WRN-20-k (Section 3.1).

WRN-20-k here is *not* Zagoruyko's WRN: the paper defines it as ResNet-20 "with k times more filters
in each layer", the stem included (64/128/256 filters for k = 4). Drop layers sit after every BN inside
the residual blocks (conv-BN-ReLU-[drop], conv-BN-[drop], add, ReLU): 2 per block, none on the
parameter-free shortcuts (He et al.'s "option A") and, by default, none after the stem
(``drop_after_stem=True``: one more, after the stem's BN + ReLU, the literal "after every BN" reading).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .registry import DropFactory, make_drop, register_model

SHORTCUTS = ("pad", "avgpool")
CIFAR_RESNET_OPTIONS = ("shortcut", "drop_after_stem")  # create_model options of every ResNet/WRN here


class PaddingShortcut(nn.Module):
    """Option A: halve H x W (strided subsampling for ``pad``, 2x2 average for ``avgpool``), then
    append zero channels. Parameter-free, so it adds nothing to the state dict."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, mode: str) -> None:
        super().__init__()
        self.extra_channels = out_channels - in_channels
        self.stride = stride
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride) if self.mode == "avgpool" else x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"mode={self.mode}, stride={self.stride}, extra_channels={self.extra_channels}"


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-[drop]-conv3x3-BN-[drop] + shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, drop: DropFactory | None, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.drop1 = make_drop(drop, after_relu=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.drop2 = make_drop(drop)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = PaddingShortcut(in_channels, out_channels, stride, shortcut)

    def forward(self, x: Tensor) -> Tensor:
        out = self.drop1(F.relu(self.bn1(self.conv1(x))))
        out = self.drop2(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


class CifarBackbone(nn.Module):
    """What the CIFAR networks share: stem ``conv1``/``bn1`` + ReLU (+ ``drop_stem``), ``layer1``-``layer3``,
    global average pooling and the classifier ``fc``. Subclasses build those modules and call
    :meth:`set_stem_drop`."""

    def set_stem_drop(self, drop: DropFactory | None, enabled: bool) -> None:
        """``drop_stem``: a drop layer after the stem's BN + ReLU when ``enabled``, else ``nn.Identity``
        (no state either way, so the state dict is the same)."""
        self.drop_stem = make_drop(drop, after_relu=True) if enabled else nn.Identity()

    def features(self, x: Tensor) -> Tensor:
        """The last convolutional feature maps (N x C x 8 x 8 for CIFAR), used for CAM."""
        x = self.drop_stem(F.relu(self.bn1(self.conv1(x))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class CifarResNet(CifarBackbone):
    """Stem conv3x3 (16k) + BN + ReLU, three stages of ``blocks_per_stage`` basic blocks with
    16k, 32k, 64k filters (stride 1, 2, 2), global average pooling, linear classifier."""

    def __init__(
        self,
        blocks_per_stage: int,
        num_classes: int,
        width: int = 1,
        drop: DropFactory | None = None,
        shortcut: str = "pad",
        drop_after_stem: bool = False,
    ) -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut={shortcut!r} is not known: use one of {', '.join(SHORTCUTS)}")
        widths = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.set_stem_drop(drop, drop_after_stem)
        stages, in_channels = [], widths[0]
        for stage, out_channels in enumerate(widths):
            blocks = []
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(in_channels, out_channels, stride, drop, shortcut))
                in_channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)
        init_weights(self)


def init_weights(model: nn.Module) -> None:
    """He (kaiming) normal for convolutions, fan_out, as torchvision's ResNet; BN weight 1, bias 0;
    the linear layer keeps PyTorch's default initialisation."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _cifar_resnet(depth: int, width: int, num_classes: int, drop: DropFactory | None, options: dict) -> CifarResNet:
    if (depth - 2) % 6:
        raise ValueError(f"depth={depth} is not 6n + 2")
    return CifarResNet((depth - 2) // 6, num_classes, width, drop, **options)


@register_model(options=CIFAR_RESNET_OPTIONS)
def resnet8(num_classes, drop=None, **options):
    """ResNet-8 (n = 1): not in the paper; the small member used for long schedules on a CPU (issue 12)."""
    return _cifar_resnet(8, 1, num_classes, drop, options)


@register_model(options=CIFAR_RESNET_OPTIONS)
def resnet20(num_classes, drop=None, **options):
    return _cifar_resnet(20, 1, num_classes, drop, options)


@register_model(options=CIFAR_RESNET_OPTIONS)
def resnet32(num_classes, drop=None, **options):
    return _cifar_resnet(32, 1, num_classes, drop, options)


@register_model(options=CIFAR_RESNET_OPTIONS)
def resnet44(num_classes, drop=None, **options):
    return _cifar_resnet(44, 1, num_classes, drop, options)


@register_model(options=CIFAR_RESNET_OPTIONS)
def resnet56(num_classes, drop=None, **options):
    return _cifar_resnet(56, 1, num_classes, drop, options)


@register_model(options=CIFAR_RESNET_OPTIONS)
def resnet110(num_classes, drop=None, **options):
    return _cifar_resnet(110, 1, num_classes, drop, options)


@register_model(options=CIFAR_RESNET_OPTIONS)
def wrn20_2(num_classes, drop=None, **options):
    return _cifar_resnet(20, 2, num_classes, drop, options)


@register_model(options=CIFAR_RESNET_OPTIONS)
def wrn20_4(num_classes, drop=None, **options):
    return _cifar_resnet(20, 4, num_classes, drop, options)


@register_model(options=CIFAR_RESNET_OPTIONS)
def wrn20_8(num_classes, drop=None, **options):
    return _cifar_resnet(20, 8, num_classes, drop, options)
