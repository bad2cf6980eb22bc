"""From a name to a deterministic network: the architecture registry, :func:`build_model` and the
``torchvision:`` / ``timm:`` / ``module:factory`` forms (see :mod:`autobayes.models`)."""

from __future__ import annotations

import difflib
import importlib
import inspect
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

from ..checks import check_int
from ..errors import ConfigError, UnknownNameError
from ..registry import Registry, did_you_mean

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
