"""Module-level conversion, shared by both routes of :func:`autobayes.bayesify`.

Two ways turn a deterministic layer into a Bayesian one, in place in the module tree (so every other module
keeps its qualified name and state-dict keys):

* **layer**: an ``nn.Linear`` / ``nn.ConvNd`` of the *exact* type is replaced by its twin from
  :func:`autobayes.nn.get_default_mappings` (``BayesLinear``, ``BayesConv2d``, ...), at every name it is registered
  under.
* **attribute**: a module that keeps its own forward -- a Linear/Conv subclass with its own forward (timm's
  ``Conv2dSame``, ``StdConv2d``), a layer hidden inside an opaque leaf module, ``nn.MultiheadAttention``'s
  ``in_proj_weight`` -- loses the raw parameter ``weight`` and gains a child ``weight_posterior``
  (a :class:`~autobayes.nn.BayesParameter`); its class becomes a derived class (:mod:`autobayes.fx.derive`) whose
  ``weight`` attribute returns a posterior sample (the mean under :func:`autobayes.use_mean`), so whatever code
  reads ``self.weight`` gets a Bayesian weight. State-dict keys read ``conv.weight_posterior.mu`` exactly as for a
  swapped layer.

Which layers, with which options, is :meth:`autobayes.BayesConfig.resolve_layer`'s decision; the report records
its reason for every layer left deterministic.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import nn

from ..config import BayesConfig
from ..errors import ConfigError
from ..nn import ATTRIBUTE_LAYERS, BayesLayer, BayesParameter, get_default_mappings
from .derive import base_class, set_class
from .report import ConversionReport, LayerRecord

__all__ = [
    "FUNCTIONAL_WEIGHTS",
    "layer_config",
    "select_layer",
    "patch_attributes",
    "replace_module",
    "convert_modules",
]

#: Modules that read raw parameters functionally in their own forward, and which of them are weights.
FUNCTIONAL_WEIGHTS: Dict[type, Tuple[str, ...]] = {
    nn.MultiheadAttention: ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"),
}


def layer_config(config: BayesConfig) -> BayesConfig:
    """The config handed to a layer: the selection fields (and an unpicklable ``filter_fn``) dropped."""
    return dataclasses.replace(config, layer_types=None, include=None, exclude=(), filter_fn=None, overrides={})


def select_layer(config: BayesConfig, name: str, module: nn.Module, as_type: type) -> Tuple[Optional[BayesConfig], str]:
    """``(layer config, "")`` when the layer ``name`` becomes Bayesian, else ``(None, reason)``.

    ``as_type`` is the layer type it counts as for ``layer_types`` (``nn.Linear`` for a weight fed to
    ``F.linear`` / ``matmul``; the module's own type otherwise). The rules are
    :meth:`BayesConfig.resolve_layer`'s.

    Example:
        >>> select_layer(BayesConfig(exclude=["fc"]), "fc", nn.Linear(2, 2), nn.Linear)
        (None, "matched by exclude pattern 'fc'")
    """
    resolved, reason = config.resolve_layer(name, module, as_type=as_type)
    return (None, reason) if resolved is None else (layer_config(resolved), "")


def _mapped_base(module: nn.Module) -> Optional[type]:
    """The deterministic layer type ``module`` is an instance of (``nn.Conv2d`` for ``Conv2dSame``), if any."""
    base = base_class(module)
    mappings = get_default_mappings()
    if base in mappings:
        return base
    for t in mappings:
        if issubclass(base, t):
            return t
    return None


def patch_attributes(module: nn.Module, names: Sequence[str], config: BayesConfig) -> int:
    """Turn the raw parameters ``names`` of ``module`` into posterior attributes; returns the element count."""
    count = 0
    for name in names:
        param = module._parameters.pop(name)
        module.add_module(name + "_posterior", BayesParameter(param, config, from_weights=True))
        count += param.numel()
    set_class(module, attrs=names)
    return count


def replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Replace ``old`` by ``new`` under every name it is registered at (shared modules)."""
    for parent in root.modules():
        for key, child in parent._modules.items():
            if child is old:
                parent._modules[key] = new


def convert_modules(
    model: nn.Module,
    config: BayesConfig,
    report: ConversionReport,
    *,
    inside_leaf: Callable[[str], Optional[str]] = lambda name: None,
    functional: Optional[Mapping[str, Sequence[str]]] = None,
) -> Dict[str, nn.Module]:
    """Convert the layers of ``model`` in place (see the module docstring); returns ``{name: new module}``.

    ``inside_leaf(name)`` returns the qualified name of the opaque leaf module containing ``name`` (or ``None``):
    exact-type layers there get posterior attributes instead of being swapped, since the leaf may read
    ``layer.weight`` itself.

    ``functional`` maps the qualified name of a module of no known layer type to the names of its raw parameters
    that its forward feeds to a weight operation (``F.linear``, ``matmul``, ``addmm``, ...), as found by running
    or capturing the forward: they become posterior attributes, counted as ``nn.Linear`` by ``layer_types``.
    """
    functional = dict(functional or {})
    mappings = get_default_mappings()
    plans: List[Tuple[str, nn.Module, str, Optional[type]]] = []
    skip_below: List[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in skip_below):
            continue
        if isinstance(module, (BayesLayer, BayesParameter)):
            skip_below.append(name)
            continue
        base = base_class(module)
        mapped = _mapped_base(module)
        if mapped is not None:
            how = "layer" if base in mappings and name and inside_leaf(name) is None else "attribute"
            plans.append((name, module, how, mapped))
        elif base in FUNCTIONAL_WEIGHTS or name in functional:
            plans.append((name, module, "attribute", nn.Linear))
        elif isinstance(module._parameters.get("weight"), nn.Parameter):  # affine norms (opt-in): ATTRIBUTE_LAYERS
            plans.extend((name, module, "attribute", t) for t in ATTRIBUTE_LAYERS if isinstance(module, t))

    new_modules: Dict[str, nn.Module] = {}
    for name, module, how, as_type in plans:
        tname = base_class(module).__name__
        leaf = inside_leaf(name) if name else None
        note = f"inside leaf module {leaf!r}" if leaf else ""
        if how == "layer":  # nn.LSTM / GRU / RNN: every weight of theirs
            wanted = tuple(getattr(module, "_flat_weights_names", ("weight", "bias")))
            names = [n for n in wanted if module._parameters.get(n) is not None]
        else:
            wanted = functional.get(name) or FUNCTIONAL_WEIGHTS.get(base_class(module), ("weight", "bias"))
            names = [n for n in wanted if isinstance(module._parameters.get(n), nn.Parameter)]
        n_params = sum(module._parameters[n].numel() for n in names)
        named_weights = base_class(module) in FUNCTIONAL_WEIGHTS or name in functional
        if wanted[0] not in names and not (named_weights and names):
            reason = "its weight is not a plain parameter (lazy, parametrized or weight-normed layer)"
            report.records.append(LayerRecord(name, tname, "skipped", params=names, n_params=n_params, reason=reason))
            continue
        cfg, reason = select_layer(config, name, module, as_type)
        if cfg is None:
            report.records.append(LayerRecord(name, tname, "skipped", params=names, n_params=n_params, reason=reason))
            continue
        if how == "layer":
            try:
                new = mappings[base_class(module)].from_deterministic(module, cfg)
            except ConfigError as err:
                raise ConfigError(f"layer {name!r}: {err}") from err
            replace_module(model, module, new)
            new_modules[name] = new
        else:
            patch_attributes(module, names, cfg)
            new_modules[name] = module
        report.records.append(
            LayerRecord(name, tname, "bayesian", how=how, params=names, n_params=n_params, n_bayes_params=2 * n_params, reason=note)
        )
    return new_modules
