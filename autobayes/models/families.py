"""The built-in architectures, written compactly after the paper repository's families: ``fcnet``, ``digits_cnn``,
``alexnet``, ``vgg11`` / ``vgg13`` / ``vgg16`` / ``vgg19``, ``preact_resnet18`` / ``preact_resnet34``, ``densenet``.

Each registers itself in :data:`autobayes.models.ARCHITECTURES` with :func:`~autobayes.models.register_architecture`
and takes ``num_classes``, ``in_channels``, ``image_size`` and ``num_features``; the convolutional ones skip a
downsampling step once the feature map is 1x1, so they accept 8x8 digits as well as 32x32 CIFAR images.
"""

from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .build import register_architecture

__all__ = ["fcnet", "digits_cnn", "alexnet", "preact_resnet18", "preact_resnet34", "densenet", "PreActResNet",
           "PreActBlock", "DenseLayer"]


def _num_inputs(in_channels: int, image_size: Optional[int], num_features: Optional[int]) -> int:
    if num_features is not None:
        return int(num_features)
    if image_size is None:
        raise ConfigError("fcnet needs num_features (tabular data) or image_size (images are flattened)")
    return in_channels * image_size * image_size


@register_architecture("fcnet")
def fcnet(*, num_classes: int, in_channels: int = 1, image_size: Optional[int] = None,
          num_features: Optional[int] = None, hidden: Sequence[int] = (256, 256), dropout: float = 0.0) -> nn.Module:
    """Fully connected net: flatten, ``[Linear, ReLU(, Dropout)]`` per hidden width, then a linear head."""
    layers: List[nn.Module] = [nn.Flatten()]
    width = _num_inputs(in_channels, image_size, num_features)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_architecture("digits_cnn")
def digits_cnn(*, num_classes: int, in_channels: int = 1, image_size: Optional[int] = 8,
               num_features: Optional[int] = None, width: int = 16, hidden: int = 64) -> nn.Module:
    """The quick start's CNN for 8x8 digits: two 3x3 convolutions, a 2x2 max-pool, two linear layers.

    With the defaults it has ~27k weights, few enough for a Bayesian version to fit 1,437 images in a minute.
    """
    size = image_size or 8
    pooled = max(1, size // 2)
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(2) if size >= 2 else nn.Identity(),
        nn.Flatten(),
        nn.Linear(2 * width * pooled * pooled, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


class _Pool:
    """Bookkeeping of the spatial size while a network is built: a stride-2 step only while the map is >= 2."""

    def __init__(self, size: Optional[int]) -> None:
        self.size = size or 32

    def stride(self) -> int:
        if self.size >= 2:
            self.size = (self.size + 1) // 2
            return 2
        return 1

    def maxpool(self, kernel: int = 2) -> nn.Module:
        if self.stride() != 2:
            return nn.Identity()
        if kernel % 2:  # odd kernel, padded: out = (size + 1) // 2
            return nn.MaxPool2d(kernel, 2, padding=kernel // 2)
        return nn.MaxPool2d(kernel, 2, ceil_mode=True)


@register_architecture("alexnet")
def alexnet(*, num_classes: int, in_channels: int = 3, image_size: Optional[int] = 32,
            num_features: Optional[int] = None, width: int = 64, hidden: int = 1024) -> nn.Module:
    """AlexNet for small images (as in the paper repository's CIFAR version): five convolutions, three
    max-pools, three linear layers."""
    s = _Pool(image_size)
    w = width
    return nn.Sequential(
        nn.Conv2d(in_channels, w, 5, padding=2), nn.ReLU(inplace=True), s.maxpool(3),
        nn.Conv2d(w, 3 * w, 5, padding=2), nn.ReLU(inplace=True), s.maxpool(3),
        nn.Conv2d(3 * w, 6 * w, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(6 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(4 * w, 4 * w, 3, padding=1), nn.ReLU(inplace=True), s.maxpool(3),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(4 * w * 4, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )


_VGG = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg13": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


def _vgg(plan: Sequence[Any]) -> Callable[..., nn.Module]:
    def factory(*, num_classes: int, in_channels: int = 3, image_size: Optional[int] = 32,
                num_features: Optional[int] = None, batch_norm: bool = True, width_mult: float = 1.0) -> nn.Module:
        s = _Pool(image_size)
        layers: List[nn.Module] = []
        c = in_channels
        for item in plan:
            if item == "M":
                layers.append(s.maxpool(2))
                continue
            out = max(1, int(item * width_mult))
            layers.append(nn.Conv2d(c, out, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            c = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
        return nn.Sequential(*layers)

    factory.__doc__ = "VGG for small images (convolutions as in Simonyan and Zisserman, a linear head)."
    return factory


for _name, _plan in _VGG.items():
    register_architecture(_name)(_vgg(_plan))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al., 2016b): BN-ReLU-conv, BN-ReLU-conv, plus the shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride, bias=False) if stride != 1 or c_in != c_out else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """Pre-activation ResNet for small images: a 3x3 stem, four stages of basic blocks, global pooling."""

    def __init__(self, blocks: Sequence[int], num_classes: int, in_channels: int = 3,
                 image_size: Optional[int] = 32, width: int = 64) -> None:
        super().__init__()
        s = _Pool(image_size)
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        stages: List[nn.Module] = []
        c = width
        for i, n in enumerate(blocks):
            out = width * 2**i
            stride = 1 if i == 0 else s.stride()
            for j in range(n):
                stages.append(PreActBlock(c, out, stride if j == 0 else 1))
                c = out
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(c)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        out = self.pool(torch.relu(self.bn(out)))
        return self.fc(torch.flatten(out, 1))


@register_architecture("preact_resnet18")
def preact_resnet18(*, num_classes: int, in_channels: int = 3, image_size: Optional[int] = 32,
                    num_features: Optional[int] = None, width: int = 64) -> nn.Module:
    """Pre-activation ResNet-18 (blocks 2-2-2-2)."""
    return PreActResNet((2, 2, 2, 2), num_classes, in_channels, image_size, width)


@register_architecture("preact_resnet34")
def preact_resnet34(*, num_classes: int, in_channels: int = 3, image_size: Optional[int] = 32,
                    num_features: Optional[int] = None, width: int = 64) -> nn.Module:
    """Pre-activation ResNet-34 (blocks 3-4-6-3)."""
    return PreActResNet((3, 4, 6, 3), num_classes, in_channels, image_size, width)


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (bottleneck to ``4k`` channels), BN-ReLU-conv3x3 (``k`` channels), concatenated to the input."""

    def __init__(self, c_in: int, growth_rate: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, 4 * growth_rate, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth_rate)
        self.conv2 = nn.Conv2d(4 * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(torch.relu(self.bn1(x)))
        out = self.conv2(torch.relu(self.bn2(out)))
        return torch.cat([x, out], 1)


@register_architecture("densenet")
def densenet(*, num_classes: int, in_channels: int = 3, image_size: Optional[int] = 32,
             num_features: Optional[int] = None, depth: int = 40, growth_rate: int = 12,
             compression: float = 0.5) -> nn.Module:
    """DenseNet-BC (Huang et al., 2017) for small images: three dense blocks of ``(depth - 4) / 6`` bottleneck
    layers, joined by compressing transitions (1x1 convolution, 2x2 average pooling)."""
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ConfigError(f"densenet: depth must be 6n + 4 (e.g. 40, 100), got {depth}")
    n = (depth - 4) // 6
    s = _Pool(image_size)
    c = 2 * growth_rate
    layers: List[nn.Module] = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False)]
    for block in range(3):
        for _ in range(n):
            layers.append(DenseLayer(c, growth_rate))
            c += growth_rate
        if block < 2:
            out = int(math.floor(c * compression))
            layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, out, 1, bias=False)]
            layers.append(nn.AvgPool2d(2, ceil_mode=True) if s.stride() == 2 else nn.Identity())
            c = out
    layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)
