"""Module-level conversion, shared by both routes of :func:`autobayes.bayesify`, and the swap-mode fallback.

Two ways turn a deterministic layer into a Bayesian one, in place in the module tree (so every other module
keeps its qualified name and state-dict keys):

* **layer**: an ``nn.Linear`` / ``nn.ConvNd`` of the *exact* type is replaced by its twin from
  :func:`autobayes.nn.get_default_mappings` (``BayesLinear``, ``BayesConv2d``, ...), at every name it is registered
  under.
* **attribute**: a module that keeps its own forward -- a Linear/Conv subclass with its own forward (timm's
  ``Conv2dSame``, ``StdConv2d``), a layer hidden inside an opaque leaf module, ``nn.MultiheadAttention``'s
  ``in_proj_weight`` -- loses the raw parameter ``weight`` and gains a child ``weight_posterior``
  (a :class:`~autobayes.nn.BayesParameter`); its class becomes a derived class whose ``weight`` attribute returns a
  posterior sample (the mean under :func:`autobayes.use_mean`), so whatever code reads ``self.weight`` gets a
  Bayesian weight. State-dict keys read ``conv.weight_posterior.mu`` exactly as for a swapped layer.

The swap-mode fallback (for a model torch.fx cannot trace) converts layers this way and collects the KL of the
layers a forward called, at run time (forward pre-hooks mark them).

This module also holds the small runtime every converted model uses: :class:`BayesOutput`, :func:`total_kl`
(with :func:`kl_of` and :func:`sum_kl`, its per-layer parts) and the derived-class machinery (picklable: the
class is rebuilt from its base on load).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..config import BayesConfig
from ..nn import BayesLayer, BayesParameter, get_default_mappings
from ..kl.fused import at_least_float32, fused_kl, sum_kl
from .report import ConversionReport, LayerRecord

__all__ = [
    "BayesOutput",
    "total_kl",
    "kl_of",
    "sum_kl",
    "derive_class",
    "base_class",
    "select_layer",
    "convert_modules",
    "make_swap_root",
    "is_kl_unit",
]


class BayesOutput(NamedTuple):
    """What a Bayesian model's forward returns.

    Attributes:
        output: the deterministic model's output, same structure (tensor, tuple, dict, ...).
        kl: 0-dim tensor, ``sum_l KL(q_l || p_l)`` over the Bayesian layers the forward used (each counted once).
    """

    output: Any
    kl: Tensor


# ---------------------------------------------------------------------------------------------------------------
# KL runtime
# ---------------------------------------------------------------------------------------------------------------
def kl_of(module: nn.Module) -> Tensor:
    """KL of one Bayesian layer or parameter; 0 (not computed) under :func:`autobayes.kl_disabled`.

    Always float32 (or the parameters' own wider dtype): under ``torch.autocast`` the KL is computed with autocast
    switched off, so mixed-precision training never sums millions of KL terms in bf16 / fp16.
    """
    mu = module.mu if isinstance(module, BayesParameter) else module.weight_posterior.mu
    if module.__dict__.get("_autobayes_kl_disabled", False):
        return mu.new_zeros((), dtype=torch.promote_types(mu.dtype, torch.float32))
    return _kl_in_float32(mu.device.type, module.kl)


def total_kl(*units: nn.Module) -> Tensor:
    """``sum_kl(*map(kl_of, units))``, computed by :func:`autobayes.kl.fused_kl`: the tensors whose KL has one
    per-element form are concatenated and evaluated at once, so the cost in operations does not grow with the
    number of layers. Units under :func:`autobayes.kl_disabled` add 0; the result is float32 (or wider) with
    autocast switched off, as for :func:`kl_of`.
    """
    params: List[BayesParameter] = []
    for unit in units:
        if not unit.__dict__.get("_autobayes_kl_disabled", False):
            params.extend(unit.posteriors() if isinstance(unit, BayesLayer) else [unit])
    if not params:
        return sum_kl(*[kl_of(u) for u in units])  # zeros of the units' device and dtype
    return _kl_in_float32(params[0].mu.device.type, lambda: fused_kl(params))


def _kl_in_float32(device_type: str, compute: Callable[[], Tensor]) -> Tensor:
    """``compute()`` with autocast switched off on ``device_type``, in at least float32."""
    if torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return at_least_float32(compute())
    return at_least_float32(compute())


def is_kl_unit(module: nn.Module, parent: Optional[nn.Module]) -> bool:
    """A Bayesian layer, or a :class:`BayesParameter` that is not part of one."""
    if isinstance(module, BayesLayer):
        return True
    return isinstance(module, BayesParameter) and not isinstance(parent, BayesLayer)


# ---------------------------------------------------------------------------------------------------------------
# derived classes (posterior attributes, Bayesian roots), picklable
# ---------------------------------------------------------------------------------------------------------------
class _PosteriorAttribute:
    """Data descriptor: ``module.<name>`` returns ``module.<name>_posterior()`` (a sample, or the mean)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.child = name + "_posterior"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return obj._modules[self.child]()

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(
            f"{type(obj).__name__}.{self.name} is Bayesian (autobayes): it is drawn from {self.child}; "
            f"set {self.child}.mu instead"
        )


class _Derived:
    """Mixin of every class autobayes derives; pickles and deep-copies through the base class."""

    _autobayes_base: type
    _autobayes_root: Optional[str] = None
    _autobayes_attrs: Tuple[str, ...] = ()

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (_rebuild, (self._autobayes_base, self._autobayes_root, self._autobayes_attrs), self.__getstate__())

    def __deepcopy__(self, memo: Dict[int, Any]) -> Any:
        obj = _rebuild(self._autobayes_base, self._autobayes_root, self._autobayes_attrs)
        memo[id(self)] = obj
        obj.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return obj


_ROOT_MIXINS: Dict[str, type] = {}  # "fx" / "swap" -> mixin, filled by rewrite.py and below
_DERIVED: Dict[Tuple[type, Optional[str], Tuple[str, ...]], type] = {}


def base_class(module: nn.Module) -> type:
    """The class a (possibly derived) module was created with."""
    return getattr(type(module), "_autobayes_base", type(module))


def derive_class(base: type, root: Optional[str] = None, attrs: Sequence[str] = ()) -> type:
    """The class of ``base`` with posterior attributes ``attrs`` and, for a converted model, the root mixin
    ``root`` (``"fx"`` or ``"swap"``). Cached; ``__module__`` is kept (torch.fx's leaf rule looks at it)."""
    key = (base, root, tuple(sorted(attrs)))
    cls = _DERIVED.get(key)
    if cls is None:
        bases: Tuple[type, ...] = (_Derived, base) if root is None else (_ROOT_MIXINS[root], _Derived, base)
        namespace: Dict[str, Any] = {name: _PosteriorAttribute(name) for name in key[2]}
        namespace.update(_autobayes_base=base, _autobayes_root=root, _autobayes_attrs=key[2], __module__=base.__module__)
        cls = type(base)("Bayesian" + base.__name__, bases, namespace)  # not "Bayes...": those are autobayes.nn
        cls.__qualname__ = "Bayesian" + base.__qualname__
        _DERIVED[key] = cls
    return cls


def _rebuild(base: type, root: Optional[str], attrs: Tuple[str, ...]) -> Any:
    if root is not None and root not in _ROOT_MIXINS:
        from . import rewrite  # noqa: F401  (registers the "fx" root mixin)
    cls = derive_class(base, root, attrs)
    return cls.__new__(cls)


def set_class(module: nn.Module, *, root: Optional[str] = None, attrs: Sequence[str] = ()) -> None:
    """Give ``module`` its derived class (merging with what it already derives)."""
    cls = type(module)
    all_attrs = set(getattr(cls, "_autobayes_attrs", ())) | set(attrs)
    root = root if root is not None else getattr(cls, "_autobayes_root", None)
    module.__class__ = derive_class(base_class(module), root, tuple(all_attrs))


# ---------------------------------------------------------------------------------------------------------------
# which layers, with which config
# ---------------------------------------------------------------------------------------------------------------
def layer_config(config: BayesConfig) -> BayesConfig:
    """The config handed to a layer: the selection fields (and an unpicklable ``filter_fn``) dropped."""
    return dataclasses.replace(config, layer_types=None, include=None, exclude=(), filter_fn=None, overrides={})


def select_layer(config: BayesConfig, name: str, module: nn.Module, as_type: type) -> Tuple[Optional[BayesConfig], str]:
    """``(layer config, "")`` when the layer ``name`` becomes Bayesian, else ``(None, reason)``.

    ``as_type`` is the layer type it counts as for ``layer_types`` (``nn.Linear`` for a weight fed to
    ``F.linear`` / ``matmul``; the module's own type otherwise). Precedence as in :class:`BayesConfig`.
    """
    if config.layer_types is not None and not any(
        isinstance(module, t) or issubclass(as_type, t) for t in config.layer_types if isinstance(t, type)
    ):
        return None, f"type not in layer_types={[getattr(t, '__name__', t) for t in config.layer_types]}"
    if config.include is not None and not any(_match(name, p) for p in config.include):
        return None, f"not matched by include={list(config.include)}"
    for p in config.exclude:
        if _match(name, p):
            return None, f"matched by exclude pattern {p!r}"
    if config.filter_fn is not None and not config.filter_fn(module, name):
        return None, "filter_fn returned False"
    for p, value in config.overrides.items():
        if value is None and _match(name, p):
            return None, f"overrides[{p!r}] is None"
    resolved = config.for_layer(name)
    if resolved is None:  # defensive: same rules as above
        return None, "excluded by the configuration"
    return layer_config(resolved), ""


def _match(name: str, pattern: str) -> bool:
    import fnmatch

    return name == pattern or fnmatch.fnmatchcase(name, pattern)


# ---------------------------------------------------------------------------------------------------------------
# module conversion
# ---------------------------------------------------------------------------------------------------------------
#: Modules that read raw parameters functionally in their own forward, and which of them are weights.
FUNCTIONAL_WEIGHTS: Dict[type, Tuple[str, ...]] = {
    nn.MultiheadAttention: ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias"),
}


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
) -> Dict[str, nn.Module]:
    """Convert the layers of ``model`` in place (see the module docstring); returns ``{name: new module}``.

    ``inside_leaf(name)`` returns the qualified name of the opaque leaf module containing ``name`` (or ``None``):
    exact-type layers there get posterior attributes instead of being swapped, since the leaf may read
    ``layer.weight`` itself.
    """
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
        elif base in FUNCTIONAL_WEIGHTS:
            plans.append((name, module, "attribute", nn.Linear))

    new_modules: Dict[str, nn.Module] = {}
    for name, module, how, as_type in plans:
        tname = base_class(module).__name__
        leaf = inside_leaf(name) if name else None
        note = f"inside leaf module {leaf!r}" if leaf else ""
        if how == "layer":
            names = [n for n in ("weight", "bias") if module._parameters.get(n) is not None]
        else:
            wanted = FUNCTIONAL_WEIGHTS.get(base_class(module), ("weight", "bias"))
            names = [n for n in wanted if isinstance(module._parameters.get(n), nn.Parameter)]
        n_params = sum(module._parameters[n].numel() for n in names)
        if "weight" not in names and not (base_class(module) in FUNCTIONAL_WEIGHTS and names):
            reason = "its weight is not a plain parameter (lazy, parametrized or weight-normed layer)"
            report.records.append(LayerRecord(name, tname, "skipped", params=names, n_params=n_params, reason=reason))
            continue
        cfg, reason = select_layer(config, name, module, as_type)
        if cfg is None:
            report.records.append(LayerRecord(name, tname, "skipped", params=names, n_params=n_params, reason=reason))
            continue
        if how == "layer":
            new = mappings[base_class(module)].from_deterministic(module, cfg)
            replace_module(model, module, new)
            new_modules[name] = new
        else:
            patch_attributes(module, names, cfg)
            new_modules[name] = module
        report.records.append(
            LayerRecord(name, tname, "bayesian", how=how, params=names, n_params=n_params, n_bayes_params=2 * n_params, reason=note)
        )
    return new_modules


# ---------------------------------------------------------------------------------------------------------------
# swap-mode fallback: the KL of the layers a forward called
# ---------------------------------------------------------------------------------------------------------------
def _mark_used(module: nn.Module, args: Any) -> None:
    module.__dict__["_autobayes_used"] = True


class _SwapRoot:
    """Root mixin of a model converted in swap mode: the original forward, plus the KL of the Bayesian layers
    it called (marked by forward pre-hooks), each counted once."""

    def forward(self, *args: Any, **kwargs: Any) -> BayesOutput:
        units = [m for m in self.modules() if "_autobayes_used" in m.__dict__]
        for m in units:
            m.__dict__["_autobayes_used"] = False
        output = super().forward(*args, **kwargs)
        return BayesOutput(output, total_kl(*[m for m in units if m.__dict__["_autobayes_used"]]))

    def __getstate__(self) -> Dict[str, Any]:
        return strip_state(super().__getstate__())


_ROOT_MIXINS["swap"] = _SwapRoot


def strip_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """The pickled state of a converted root: no compiled functions, no unpicklable ``filter_fn``."""
    state = dict(state)
    state.pop("_autobayes_fns", None)
    cfg = state.get("bayes_config")
    if isinstance(cfg, BayesConfig) and cfg.filter_fn is not None:
        state["bayes_config"] = dataclasses.replace(cfg, filter_fn=None)
    return state


def make_swap_root(model: nn.Module) -> None:
    """Hook every KL unit of ``model`` and give the root the swap-mode forward."""
    parents = {id(c): m for m in model.modules() for c in m.children()}
    for m in model.modules():
        if is_kl_unit(m, parents.get(id(m))):
            m.__dict__["_autobayes_used"] = False
            m.register_forward_pre_hook(_mark_used)
    set_class(model, root="swap")


def iter_units(model: nn.Module) -> Iterable[Tuple[str, nn.Module]]:
    """``(name, module)`` of every KL unit of ``model`` (Bayesian layers and stand-alone BayesParameters)."""
    parents: Dict[int, nn.Module] = {}
    for m in model.modules():
        for c in m.children():
            parents.setdefault(id(c), m)
    for name, m in model.named_modules():
        if is_kl_unit(m, parents.get(id(m))):
            yield name, m
