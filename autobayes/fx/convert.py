"""Module-level conversion, shared by both routes of :func:`autobayes.bayesify`.

Two ways turn a deterministic layer into a Bayesian one, in place in the module tree (so every other module
keeps its qualified name and state-dict keys):

* **layer**: an ``nn.Linear`` / ``nn.ConvNd`` of the *exact* type is replaced by its twin from
  :func:`autobayes.nn.get_default_mappings` (``BayesLinear``, ``BayesConv2d``, ...), at every name it is registered
  under.
* **attribute**: a module that keeps its own forward -- a Linear/Conv subclass with its own forward (timm's
  ``Conv2dSame``, ``StdConv2d``), a layer hidden inside an opaque leaf module, ``nn.MultiheadAttention``'s
  ``in_proj_weight``, transformers' ``Conv1D`` (its weight used through ``torch.addmm``), a raw parameter a
  forward feeds to a weight op (``functional=``), an owner of a tied tensor -- loses the raw parameter
  ``weight`` and gains a child ``weight_posterior``
  (a :class:`~autobayes.nn.BayesParameter`); its class becomes a derived class (:mod:`autobayes.fx.derive`) whose
  ``weight`` attribute returns a posterior sample (the mean under :func:`autobayes.use_mean`), so whatever code
  reads ``self.weight`` gets a Bayesian weight. State-dict keys read ``conv.weight_posterior.mu`` exactly as for a
  swapped layer.

Which layers, with which options, is :meth:`autobayes.BayesConfig.resolve_layer`'s decision; the report records
its reason for every layer left deterministic.

A tensor shared by several modules (:mod:`autobayes.fx.ties`) is decided first, as one: either one posterior
registered on every owner (attribute route for each, never a swap that would copy it), or deterministic in all.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from torch import nn

from ..config import BayesConfig, register_layer_names
from ..errors import ConfigError
from ..nn import ATTRIBUTE_LAYERS, BayesLayer, BayesParameter, get_default_mappings
from .derive import base_class, set_class
from .report import ConversionReport, LayerRecord, TieRecord
from .ties import decide, find_ties, share_posterior

__all__ = [
    "FUNCTIONAL_WEIGHTS",
    "FUNCTIONAL_WEIGHT_CLASSES",
    "functional_weights",
    "layer_config",
    "mapped_base",
    "select_layer",
    "patch_attributes",
    "replace_module",
    "convert_modules",
]

#: Modules that read raw parameters functionally in their own forward, and which of them are weights.
FUNCTIONAL_WEIGHTS: Dict[type, Tuple[str, ...]] = {
    nn.MultiheadAttention: ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"),
}
#: The same for classes of other libraries, named by ``(module, qualname)`` so that recognising them imports
#: nothing: transformers' ``Conv1D`` (GPT-2's matrices; weight ``(in, out)``, used as ``torch.addmm(b, x, w)``).
FUNCTIONAL_WEIGHT_CLASSES: Dict[Tuple[str, str], Tuple[str, ...]] = {
    ("transformers.pytorch_utils", "Conv1D"): ("weight", "bias"),
}
register_layer_names(lambda: [t.__name__ for t in FUNCTIONAL_WEIGHTS]
                     + [qualname for _, qualname in FUNCTIONAL_WEIGHT_CLASSES])


def functional_weights(module: nn.Module) -> Optional[Tuple[str, ...]]:
    """The weights ``module``'s own forward reads functionally, from the two tables above (``None``: not listed).

    Example:
        >>> functional_weights(nn.MultiheadAttention(8, 2))[0]
        'in_proj_weight'
    """
    base = base_class(module)
    if base in FUNCTIONAL_WEIGHTS:
        return FUNCTIONAL_WEIGHTS[base]
    return FUNCTIONAL_WEIGHT_CLASSES.get((base.__module__, base.__qualname__))


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


def mapped_base(module: nn.Module) -> Optional[type]:
    """The deterministic layer type ``module`` is an instance of (``nn.Conv2d`` for ``Conv2dSame``), if any.

    Example:
        >>> mapped_base(nn.Linear(2, 2))
        <class 'torch.nn.modules.linear.Linear'>
    """
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

    Tied tensors are decided first (:mod:`autobayes.fx.ties`; listed in ``report.ties``).
    """
    functional = dict(functional or {})
    mappings = get_default_mappings()

    def weights_of(name: str, module: nn.Module) -> Tuple[Tuple[str, ...], Optional[type]]:
        """The parameters of ``module`` autobayes converts, and the layer type they count as."""
        mapped = mapped_base(module)
        if mapped is not None:
            return ("weight", "bias"), mapped
        names = tuple(functional.get(name, ())) or functional_weights(module) or ()
        if names:
            return names, nn.Linear
        if isinstance(module._parameters.get("weight"), nn.Parameter):  # affine norms (opt-in): ATTRIBUTE_LAYERS
            for t, attrs in ATTRIBUTE_LAYERS.items():
                if isinstance(module, t):
                    return attrs, t
        return (), None

    def candidate(name: str, module: nn.Module, attr: str) -> Optional[type]:
        names, as_type = weights_of(name, module)
        return as_type if attr in names else None

    tied: Dict[int, Dict[str, str]] = {}  # id(owner) -> {attr: "shared" | "deterministic"}
    counted: Dict[int, Set[str]] = {}  # id(owner) -> tied attrs whose elements its record counts
    tie_notes: Dict[int, List[str]] = {}
    for tie in find_ties(model):
        cfg, primary, reason = decide(tie, config, candidate, lambda n, m, t: select_layer(config, n, m, t))
        decision = "deterministic" if cfg is None else "shared"
        report.ties.append(TieRecord(tie.names, decision, tie.param.numel(), reason))
        if cfg is not None:
            share_posterior(tie, cfg)
        for name, module, attr in tie.owners:
            tied.setdefault(id(module), {})[attr] = decision
            others = [n for n in tie.names if n != (f"{name}.{attr}" if name else attr)]
            tie_notes.setdefault(id(module), []).append(f"{attr} tied to {', '.join(others)} ({decision})")
            if name == primary and cfg is not None:
                counted.setdefault(id(module), set()).add(attr)
        for name, module, attr in tie.owners:
            if cfg is not None and candidate(name, module, attr) is None and weights_of(name, module)[1] is None:
                # an owner autobayes would not convert otherwise (an embedding): record its shared attribute
                report.records.append(LayerRecord(name, base_class(module).__name__, "bayesian", how="attribute",
                                                  params=[attr], reason="; ".join(tie_notes[id(module)])))

    plans: List[Tuple[str, nn.Module, str, Optional[type]]] = []
    skip_below: List[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in skip_below):
            continue
        if isinstance(module, (BayesLayer, BayesParameter)):
            skip_below.append(name)
            continue
        base = base_class(module)
        as_type = weights_of(name, module)[1]
        if as_type is None:
            continue
        swap = base in mappings and name and inside_leaf(name) is None and id(module) not in tied
        plans.append((name, module, "layer" if swap else "attribute", as_type))

    new_modules: Dict[str, nn.Module] = {}
    for name, module, how, as_type in plans:
        tname = base_class(module).__name__
        leaf = inside_leaf(name) if name else None
        notes = ([f"inside leaf module {leaf!r}"] if leaf else []) + tie_notes.get(id(module), [])
        note = "; ".join(notes)
        ties_here = tied.get(id(module), {})
        shared = [n for n, d in ties_here.items() if d == "shared" and n in weights_of(name, module)[0]]
        if how == "layer":  # nn.LSTM / GRU / RNN: every weight of theirs
            wanted = tuple(getattr(module, "_flat_weights_names", ("weight", "bias")))
            names = [n for n in wanted if module._parameters.get(n) is not None]
        else:
            wanted = weights_of(name, module)[0]
            names = [n for n in wanted if isinstance(module._parameters.get(n), nn.Parameter) and n not in ties_here]
        n_params = sum(module._parameters[n].numel() for n in names)
        if names and wanted[0] in names and module._parameters[wanted[0]].numel() == 0 and not shared:
            report.records.append(LayerRecord(name, tname, "skipped", params=names, n_params=n_params,
                                              reason=f"its weight has zero elements (shape "
                                                     f"{tuple(module._parameters[wanted[0]].shape)}): nothing to "
                                                     f"make Bayesian, the layer stays as it is"))
            continue
        n_shared = sum(module._modules[n + "_posterior"].mu.numel() for n in shared if n in counted.get(id(module), ()))
        if ties_here.get(wanted[0]) == "deterministic":
            report.records.append(LayerRecord(name, tname, "skipped", params=names + [wanted[0]], n_params=n_params,
                                              reason=note))
            continue
        named_weights = mapped_base(module) is None and base_class(module) not in ATTRIBUTE_LAYERS
        if not shared and wanted[0] not in names and not (named_weights and names):
            reason = "its weight is not a plain parameter (lazy, parametrized or weight-normed layer)"
            report.records.append(LayerRecord(name, tname, "skipped", params=names, n_params=n_params, reason=reason))
            continue
        cfg, reason = select_layer(config, name, module, as_type)
        if cfg is None and not shared:
            report.records.append(LayerRecord(name, tname, "skipped", params=names, n_params=n_params, reason=reason))
            continue
        if cfg is None:  # only its tied tensor is Bayesian (selected through another owner)
            names, n_params = [], 0
        if how == "layer":
            try:
                new = mappings[base_class(module)].from_deterministic(module, cfg)
            except ConfigError as err:
                raise ConfigError(f"layer {name!r}: {err}") from err
            replace_module(model, module, new)
            new_modules[name] = new
        else:
            if names:
                patch_attributes(module, names, cfg)
            new_modules[name] = module
        total = n_params + n_shared
        owner = new_modules[name]
        posteriors = [owner._modules[n + "_posterior"] for n in names if n + "_posterior" in owner._modules]
        if how == "layer":
            posteriors = [m for m in owner.modules() if isinstance(m, BayesParameter)]
        posteriors += [owner._modules[n + "_posterior"] for n in shared if n in counted.get(id(module), ())]
        n_var = sum(p.numel() for post in posteriors for p in post.parameters(recurse=False))
        report.records.append(LayerRecord(name, tname, "bayesian", how=how, params=shared + names, n_params=total,
                                          n_bayes_params=n_var, reason=note))
    return new_modules
