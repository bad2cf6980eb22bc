"""Architecture factory: deterministic networks by name, sized for a data set, rebuildable from a small spec.

``build_model(arch, num_classes=..., in_channels=..., image_size=...)`` accepts

* ``"torchvision:NAME"`` (``torchvision.models.get_model(NAME, weights=None)``), ``"timm:NAME"``
  (``timm.create_model(NAME, pretrained=False)``): weights are never downloaded; the first convolution is
  adapted to ``in_channels`` and the head to ``num_classes``;
* the families of the paper repository, written compactly here: ``"fcnet"``, ``"alexnet"``, ``"vgg11"`` /
  ``"vgg13"`` / ``"vgg16"`` / ``"vgg19"``, ``"preact_resnet18"`` / ``"preact_resnet34"``, ``"densenet"``
  (DenseNet-BC), plus ``"digits_cnn"``, the small CNN of the quick start. Their downsampling adapts to
  ``image_size`` (a pooling step is skipped once the feature map is 1x1), so they accept 8x8 digits as well as
  32x32 CIFAR images;
* ``"module:factory"`` (or ``"module.sub:factory"``): ``factory(**kwargs)`` imported from a module of yours;
  it receives the ``num_classes`` / ``in_channels`` / ``image_size`` / ``num_features`` arguments its signature
  accepts.

Every returned model carries ``model.autobayes_arch = {"arch": arch, "kwargs": {...}}``, enough to rebuild it
with ``build_model(spec["arch"], **spec["kwargs"])``: :func:`autobayes.bayesify` copies it and checkpoints store
it.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from .checks import check_int
from .errors import ConfigError, UnknownNameError
from .registry import Registry, did_you_mean

__all__ = ["build_model", "ARCHITECTURES", "register_architecture", "architecture_names"]

#: Built-in architectures: name -> ``factory(num_classes, in_channels, image_size, num_features, **kwargs)``.
ARCHITECTURES: Registry[Callable[..., nn.Module]] = Registry("architecture")


def register_architecture(name: str):
    """Decorator registering ``factory(*, num_classes, in_channels, image_size, num_features, **kwargs)``.

    Example:
        >>> @register_architecture("tiny")  # doctest: +SKIP
        ... def tiny(*, num_classes, in_channels, image_size, num_features, width=8):
        ...     return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))
    """
    return ARCHITECTURES.register(name)


def architecture_names() -> List[str]:
    """Built-in names plus the ``torchvision:`` / ``timm:`` / ``module:factory`` forms."""
    return ARCHITECTURES.names() + ["torchvision:NAME", "timm:NAME", "module:factory"]


def build_model(
    arch: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: Optional[int] = 32,
    num_features: Optional[int] = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a deterministic network by name, sized for the data.

    Args:
        arch: a built-in name (see :data:`ARCHITECTURES`), ``"torchvision:NAME"``, ``"timm:NAME"`` or
            ``"module:factory"``.
        num_classes: number of outputs (classes; or regression outputs).
        in_channels: image channels.
        image_size: side of the (square) input images; ``None`` for tabular data.
        num_features: input features of tabular data (``fcnet``); default ``in_channels * image_size ** 2``.
        **kwargs: options of the architecture (e.g. ``hidden=(256, 256)`` for ``fcnet``, ``width=32`` for
            ``digits_cnn``, ``growth_rate=12`` for ``densenet``); for torchvision / timm, passed to their factory.

    Returns:
        The model, with ``model.autobayes_arch`` set.

    Example:
        >>> model = build_model("digits_cnn", num_classes=10, in_channels=1, image_size=8)
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
        >>> build_model(**{"arch": model.autobayes_arch["arch"], **model.autobayes_arch["kwargs"]})  # doctest: +SKIP
    """
    if not isinstance(arch, str) or not arch:
        raise ConfigError(f"arch must be a non-empty string such as 'digits_cnn' or 'torchvision:resnet18', got {arch!r}")
    num_classes = check_int(num_classes, "num_classes", 1)
    spec_kwargs: Dict[str, Any] = dict(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, num_features=num_features, **kwargs
    )
    prefix, _, rest = arch.partition(":")
    if rest and prefix == "torchvision":
        model = _torchvision(rest, num_classes, in_channels, **kwargs)
    elif rest and prefix == "timm":
        model = _timm(rest, num_classes, in_channels, **kwargs)
    elif rest:
        model = _user_factory(prefix, rest, spec_kwargs)
    else:
        key = arch.lower()
        if key not in ARCHITECTURES:
            raise UnknownNameError(
                f"unknown architecture {arch!r}; choose one of {architecture_names()}.{_suggest(arch)}"
            )
        try:
            model = ARCHITECTURES.get(key)(
                num_classes=num_classes, in_channels=in_channels, image_size=image_size, num_features=num_features,
                **kwargs,
            )
        except TypeError as err:
            raise ConfigError(f"architecture {arch!r}: {err}") from err
    if image_size is not None and (prefix in ("torchvision", "timm") and rest):
        _check_input_size(model, arch, in_channels, image_size)
    model.autobayes_arch = {"arch": arch, "kwargs": spec_kwargs}
    return model


def _suggest(arch: str) -> str:
    """``" Did you mean 'torchvision:resnet18', 'timm:resnet18' or 'preact_resnet18'?"``: the torchvision and timm
    models of exactly that name (the libraries that are installed), then the closest built-in name."""
    options = []
    try:
        import torchvision

        if arch in torchvision.models.list_models():
            options.append(f"torchvision:{arch}")
    except Exception:  # noqa: BLE001 - only a suggestion: a broken or missing torchvision adds none
        pass
    try:
        import timm

        if timm.is_model(arch):
            options.append(f"timm:{arch}")
    except Exception:  # noqa: BLE001 - timm is optional
        pass
    options += difflib.get_close_matches(arch.lower(), ARCHITECTURES.names(), n=1, cutoff=0.5)  # as did_you_mean
    if not options:
        return ""
    quoted = [repr(o) for o in options]
    text = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f" Did you mean {text}?"


# ---------------------------------------------------------------------- torchvision / timm / user factories
def _torchvision(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    import torchvision

    if "weights" in kwargs or "pretrained" in kwargs:
        raise ConfigError(
            "build_model never downloads weights (weights=None); to start from a pretrained network, load its "
            "weights into the returned model yourself (model.load_state_dict(...)) before bayesify"
        )
    names = torchvision.models.list_models()
    if name not in names:
        raise UnknownNameError(f"unknown torchvision model {name!r}; see torchvision.models.list_models().{did_you_mean(name, names)}")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if in_channels != 3:
        _adapt_first_conv(model, in_channels, f"torchvision:{name}")
    return model


def _timm(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    import timm

    if kwargs.pop("pretrained", False):
        raise ConfigError("build_model never downloads weights (pretrained=False); load them yourself if needed")
    if not timm.is_model(name):
        raise UnknownNameError(f"unknown timm model {name!r}; see timm.list_models().{did_you_mean(name, timm.list_models())}")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)


def _adapt_first_conv(model: nn.Module, in_channels: int, arch: str) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                module.dilation, module.groups if module.groups == 1 else in_channels, module.bias is not None,
                module.padding_mode,
            )
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
            return
    raise ConfigError(f"{arch}: found no nn.Conv2d to adapt to {in_channels} input channels")


def _check_input_size(model: nn.Module, arch: str, in_channels: int, image_size: int) -> None:
    """One forward of a zero batch, so that a too-small image fails here with a fix, not mid-training."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, image_size, image_size))
    except RuntimeError as err:
        raise ConfigError(
            f"{arch} does not accept {image_size}x{image_size} inputs ({err}); resize the images, e.g. "
            f"load_dataset(..., image_size=64) / `autobayes train --image-size 64`, or use an architecture that "
            f"adapts to small images such as 'digits_cnn', 'vgg11' or 'preact_resnet18'"
        ) from err
    finally:
        model.train(was_training)


def _user_factory(module_name: str, attr: str, spec_kwargs: Dict[str, Any]) -> nn.Module:
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"architecture '{module_name}:{attr}': cannot import module {module_name!r} ({err}); it must be "
            f"importable (on sys.path / PYTHONPATH; the autobayes command also looks in the current directory), "
            f"e.g. 'my_models:make_net' for my_models.py"
        ) from err
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise UnknownNameError(
            f"architecture '{module_name}:{attr}': module {module_name!r} has no callable {attr!r}; callables: "
            f"{public}.{did_you_mean(attr, public)}"
        )
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    standard = ("num_classes", "in_channels", "image_size", "num_features")
    kwargs = {k: v for k, v in spec_kwargs.items() if k not in standard or takes_any or k in params}
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"architecture '{module_name}:{attr}' returned {type(model).__name__}, not an nn.Module")
    return model


# ---------------------------------------------------------------------- built-in families
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


class _PreActBlock(nn.Module):
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
                stages.append(_PreActBlock(c, out, stride if j == 0 else 1))
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


class _DenseLayer(nn.Module):
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
            layers.append(_DenseLayer(c, growth_rate))
            c += growth_rate
        if block < 2:
            out = int(math.floor(c * compression))
            layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, out, 1, bias=False)]
            layers.append(nn.AvgPool2d(2, ceil_mode=True) if s.stride() == 2 else nn.Identity())
            c = out
    layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)
