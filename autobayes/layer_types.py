"""The layer types ``BayesConfig.layer_types`` may name: the tables that :mod:`autobayes.nn.mappings` (types)
and :mod:`autobayes.fx.convert` (class names of modules read functionally) register here, read live, and the
checks :class:`autobayes.BayesConfig` makes with them. Imports no layers.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Dict, List, Mapping, Optional, Union

from .errors import ConfigError, UnknownNameError
from .registry import did_you_mean

__all__ = ["register_layer_table", "register_layer_names", "supported_layer_types", "default_layer_types",
           "check_layer_type", "functional_names", "opt_in_type", "type_matches"]

_LAYER_TABLES: List[Mapping[type, Any]] = []
_OPT_IN: List[Collection[type]] = []
_LAYER_NAMES: List[Callable[[], Collection[str]]] = []


def register_layer_table(table: Mapping[type, Any], *, opt_in: Collection[type] = ()) -> None:
    """Let ``layer_types`` name the deterministic types that are keys of ``table`` (read live, so types added to
    it later count too). :mod:`autobayes.nn.mappings` registers :data:`autobayes.nn.DEFAULT_MAPPINGS`.

    The types of ``opt_in`` (also read live) are converted only when ``layer_types`` names them: with
    ``layer_types=None`` (the default) they stay deterministic (embeddings, normalisation layers).

    Example:
        >>> register_layer_table({MyLayer: BayesMyLayer})  # doctest: +SKIP
        >>> BayesConfig(layer_types=["MyLayer"]).layer_types  # doctest: +SKIP
        (<class 'MyLayer'>,)
    """
    if not any(t is table for t in _LAYER_TABLES):
        _LAYER_TABLES.append(table)
    if opt_in is not None and len(opt_in) and not any(t is opt_in for t in _OPT_IN):
        _OPT_IN.append(opt_in)


def register_layer_names(names: Callable[[], Collection[str]]) -> None:
    """Let ``layer_types`` name, as strings, module classes whose weights are converted without a layer table
    entry (their forward reads the weights functionally); ``names()`` is called live. :mod:`autobayes.fx.convert`
    registers its tables' class names this way, so that recognising transformers' ``Conv1D`` imports nothing.

    Example:
        >>> register_layer_names(lambda: ["MyAttention"])  # doctest: +SKIP
    """
    if names not in _LAYER_NAMES:
        _LAYER_NAMES.append(names)


def supported_layer_types() -> Dict[str, type]:
    """``{name: type}`` of the deterministic layer types that can become Bayesian (what ``layer_types`` accepts).

    Example:
        >>> supported_layer_types()["Conv2d"]
        <class 'torch.nn.modules.conv.Conv2d'>
    """
    return {cls.__name__: cls for table in _LAYER_TABLES for cls in table}


def default_layer_types() -> Dict[str, type]:
    """``{name: type}`` of the layer types ``layer_types=None`` converts: the supported ones less the opt-in ones
    (``Embedding``, ``EmbeddingBag``, the normalisation layers), which ``layer_types`` must name.

    Example:
        >>> "Linear" in default_layer_types(), "Embedding" in default_layer_types()
        (True, False)
    """
    opt_in = {cls for types in _OPT_IN for cls in types}
    return {name: cls for name, cls in supported_layer_types().items() if cls not in opt_in}


def check_layer_type(t: Any) -> Union[type, str]:
    """A ``layer_types`` entry checked: a supported type (or subclass), the type a name stands for, or the name of
    a class registered by :func:`register_layer_names`; anything else is an error listing the valid names.

    Example:
        >>> check_layer_type("Conv2d")
        <class 'torch.nn.modules.conv.Conv2d'>
    """
    supported = supported_layer_types()
    if isinstance(t, type):
        if not any(issubclass(t, cls) for cls in supported.values()):
            raise ConfigError(f"layer_types: {t.__name__} is not a supported layer type; supported: {sorted(supported)}")
        return t
    if isinstance(t, str) and t in supported:
        return supported[t]
    named = functional_names()
    if t in named:  # a class of another library (transformers' Conv1D), matched by its name: nothing imported
        return t
    names = sorted(supported) + sorted(named)
    raise UnknownNameError(f"layer_types: unknown layer type {t!r}; supported: {names}.{did_you_mean(str(t), names)}")


def functional_names() -> List[str]:
    """Names of the modules whose weights autobayes converts as posterior attributes (their forward reads them
    functionally: ``MultiheadAttention``, transformers' ``Conv1D``), which ``layer_types`` accepts too; registered
    by :mod:`autobayes.fx.convert` (:func:`register_layer_names`)."""
    return [name for names in _LAYER_NAMES for name in names()]


def opt_in_type(module: Any, as_type: Optional[type]) -> Optional[str]:
    """The name of the opt-in layer type ``module`` counts as, unless it also counts as a default type."""
    defaults = default_layer_types().values()
    if any(type_matches(module, as_type, t) for t in defaults):
        return None
    opt_in = [t for types in _OPT_IN for t in types if type_matches(module, as_type, t)]
    return opt_in[0].__name__ if opt_in else None


def type_matches(module: Any, as_type: Optional[type], t: Union[type, str]) -> bool:
    """Whether ``module`` (or a module converted as ``as_type``) is of the ``layer_types`` entry ``t`` (a type, or
    a class name registered by :func:`register_layer_names`)."""
    if not isinstance(t, type):
        return module is not None and type(module).__name__ == t
    return isinstance(module, t) or (as_type is not None and issubclass(as_type, t))
