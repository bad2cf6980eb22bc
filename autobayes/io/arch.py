"""The architecture a checkpoint records: ``{"arch": NAME, "kwargs": {...}}``, and the network it rebuilds.

A network built by :func:`autobayes.models.build_model` carries its spec (``autobayes_arch``); a ``transformers``
model is described by its class and config (``"transformers:<Class>"``, see :mod:`autobayes.hf.io`). For one
built by timm or torchvision directly, :func:`arch_spec` recognises it: it rebuilds the candidate architectures of that
library (on the meta device: no memory, nothing downloaded) and accepts the one that reproduces every tensor
shape. :func:`build_deterministic` turns a spec back into the deterministic network, never fetching pretrained
weights (a checkpoint's tensors replace them).
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..errors import CheckpointError

__all__ = ["arch_spec", "build_deterministic"]


def arch_spec(bnn: nn.Module, arch: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The spec to store for ``bnn``: ``arch`` if given, else the network's ``autobayes_arch``, else the timm /
    torchvision architecture recognised from its class and tensor shapes.

    Raises:
        CheckpointError: nothing describes the network (the message suggests an ``arch=`` argument), or the spec
            is not ``{"arch": str, "kwargs": dict}`` of JSON values.

    Example:
        >>> arch_spec(bnn, {"arch": "mypackage.models:make_net", "kwargs": {"width": 64}})  # doctest: +SKIP
        {'arch': 'mypackage.models:make_net', 'kwargs': {'width': 64}}
    """
    spec = arch if arch is not None else getattr(bnn, "autobayes_arch", None)
    if spec is None:
        from ..hf.io import hf_spec

        spec = hf_spec(bnn)  # a transformers model: its class and config
    if spec is None:
        spec, example = _infer_arch(bnn)
        if spec is None:
            raise CheckpointError(
                "cannot save: the network carries no architecture spec, so the checkpoint could not rebuild it. "
                "Build the deterministic model with autobayes.models.build_model(...) before bayesify, or pass "
                f"save(bnn, path, arch={example})"
            )
    if isinstance(spec, str):
        spec = {"arch": spec, "kwargs": {}}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("arch"), str):
        raise CheckpointError(f"the architecture spec must be {{'arch': str, 'kwargs': dict}}, got {spec!r}")
    spec = {"arch": spec["arch"], "kwargs": dict(spec.get("kwargs") or {})}
    try:
        json.dumps(spec)
    except TypeError as err:
        raise CheckpointError(f"the architecture spec must be JSON-serialisable (numbers, strings, lists, dicts): {err}; got {spec!r}") from err
    return spec


def _deterministic_shapes(bnn: nn.Module) -> Dict[str, Tuple[int, ...]]:
    """The state-dict shapes of the deterministic network ``bnn`` was converted from: a posterior's mean
    ``<path>.<name>_posterior.mu`` stands for the parameter ``<path>.<name>``; its other tensors are dropped."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    for key, value in bnn.state_dict().items():
        if "_posterior." in key:
            owner, _, rest = key.rpartition("_posterior.")
            if rest == "mu":
                shapes[owner] = tuple(value.shape)
        else:
            shapes[key] = tuple(value.shape)
    return shapes


def _library_candidates(bnn: nn.Module, size: int) -> Tuple[str, List[Tuple[str, Optional[int]]]]:
    """``(library, [("timm:NAME" | "torchvision:NAME", parameters or None), ...])``: the architectures of timm or
    torchvision whose class ``bnn`` was built from, the likeliest first (``("", [])`` for a network of neither).
    torchvision's are its builders of that class, ordered by how close their parameter count (from their
    weights' metadata, at 1000 classes) is to ``size``."""
    def made_by_autobayes(cls: type) -> bool:  # autobayes' own classes and the class bayesify derives
        return cls.__module__.startswith("autobayes.") or any(b.__module__.startswith("autobayes.") for b in cls.__bases__)

    # the class of the network that was converted: a user's subclass of a library class is not the library's
    origin = next((c for c in type(bnn).__mro__ if not made_by_autobayes(c)), object)
    if not origin.__module__.startswith(("timm.", "torchvision.models.")):
        return "", []
    if origin.__module__.startswith("timm."):
        cfg = getattr(bnn, "pretrained_cfg", None) or getattr(bnn, "default_cfg", None) or {}
        name = cfg.get("architecture") if isinstance(cfg, Mapping) else None
        return "timm", [(f"timm:{name}", None)] if isinstance(name, str) and name else []
    try:
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        same = [n for n in names if torchvision.models.get_model_builder(n).__module__ == origin.__module__]
    except Exception:  # noqa: BLE001 - an unusual torchvision: no guess
        return "torchvision", []

    def parameters(name: str) -> Optional[int]:
        try:
            return int(next(iter(torchvision.models.get_model_weights(name))).meta["num_params"])
        except Exception:  # noqa: BLE001 - a builder without published weights
            return None

    counted = [(n, parameters(n)) for n in same]
    key = origin.__name__.lower()  # ties: the class's own name first (ResNet -> resnet18), then shorter names
    counted.sort(key=lambda item: (item[1] is None, abs(math.log((item[1] or 1) / max(size, 1))),
                                   not item[0].startswith(key), len(item[0]), item[0]))
    return "torchvision", [(f"torchvision:{n}", count) for n, count in counted]


def _infer_arch(bnn: nn.Module) -> Tuple[Optional[Dict[str, Any]], str]:
    """The spec of a timm / torchvision network converted without :func:`autobayes.models.build_model`.

    Each candidate architecture of the network's library (timm: ``pretrained_cfg["architecture"]``; torchvision:
    the builders of the network's class) is built on the meta device (no memory, nothing downloaded; for real
    only when its builder needs data and it is not much larger than the network), sized by the network's first
    convolution (``in_channels``) and last layer (``num_classes``), and accepted only when every state-dict
    shape matches. Returns ``(spec, example)``: ``spec`` is ``None`` when nothing matches, and ``example`` is
    the ``arch=`` argument to suggest then.
    """
    from ..models import build_model

    shapes = _deterministic_shapes(bnn)
    size = sum(math.prod(shape) for shape in shapes.values())
    library, candidates = _library_candidates(bnn, size)
    if not candidates:
        name = {"timm": "timm:resnet18", "torchvision": "torchvision:resnet18"}.get(library, "mypackage.models:make_net")
        return None, f"{{'arch': {name!r}, 'kwargs': {{...}}}}"

    def build(candidate: str, count: Optional[int], **kwargs: Any) -> nn.Module:
        try:
            with torch.device("meta"):
                return build_model(candidate, image_size=None, **kwargs)
        except Exception:  # noqa: BLE001 - a builder that computes with tensors (RegNet): for real, if small
            if library == "torchvision" and (count is None or count > 2 * size + 5_000_000):
                raise
            return build_model(candidate, image_size=None, **kwargs)

    for candidate, count in candidates:
        try:
            probe = build(candidate, count).state_dict()
            first = next((k for k, v in probe.items() if v.dim() == 4 and k.endswith("weight")), None)
            last = next(reversed(probe))  # the classifier's bias (or weight): (num_classes, ...)
            channels = int(shapes[first][1]) if first is not None else 3
            model = build(candidate, count, num_classes=int(shapes[last][0]), in_channels=channels)
        except Exception:  # noqa: BLE001 - a candidate that cannot be built or sized is simply not this network
            continue
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
            return dict(model.autobayes_arch), ""
    guess = candidates[0][0]
    return None, f"{{'arch': {guess!r}, 'kwargs': {{'num_classes': ..., 'in_channels': ...}}}}"


def build_deterministic(arch: Mapping[str, Any]) -> nn.Module:
    """The deterministic network of a spec, with :func:`autobayes.models.build_model` (a ``transformers:`` spec:
    from its stored config, :func:`autobayes.hf.io.build_from_spec`); ``pretrained`` / ``weights`` are dropped,
    so nothing is downloaded.

    Example:
        >>> build_deterministic({"arch": "digits_cnn", "kwargs": {"num_classes": 10}})  # doctest: +SKIP
    """
    from ..hf.io import HF_PREFIX, build_from_spec
    from ..models import build_model

    if arch["arch"].startswith(HF_PREFIX):
        return build_from_spec(arch)
    kwargs = dict(arch.get("kwargs") or {})
    # The tensors come from the checkpoint: never fetch pretrained weights to overwrite them.
    kwargs.pop("pretrained", None)
    kwargs.pop("weights", None)
    return build_model(arch["arch"], **kwargs)
