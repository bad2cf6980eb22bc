"""The torch.fx tracer of :func:`autobayes.bayesify`: which modules stay opaque, and what to say when tracing fails.

Leaf modules (one ``call_module`` node, never traced into):

* every layer of :func:`autobayes.nn.get_default_mappings` of the *exact* type (``nn.Linear``, ``nn.Conv2d``, ...),
  and the Bayesian layers / parameters themselves; subclasses with their own forward (timm's ``StdConv2d``) are
  traced through, so their functional weight use is visible;
* the modules of timm's FX registries (``timm.layers._fx``: what timm's own feature extraction treats as leaves --
  blocks with shape-dependent control flow) and the ``leaf_modules`` you pass;
* torch.fx's default: modules defined in ``torch.nn`` (except ``nn.Sequential``).

Functions of timm's notrace registry and the ``autowrap_functions`` you pass are recorded as single nodes.

Optional forward arguments that default to ``None`` or a bool (``forward(x, mask=None, is_causal=False)``) are
traced as their defaults (:func:`traced_defaults`), unless the caller fixes them (``concrete_args=``) or passes
them in ``example_inputs``: traced as a placeholder, ``if mask is not None`` would silently take the wrong branch.
The converted forward then refuses another value with an error naming the argument and the fixes
(:func:`require_traced_value`).
"""

from __future__ import annotations

import dataclasses

import inspect
import math
import operator
import os
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import fx, nn

try:  # the check torch.fx inserts for an argument fixed to None (replaced by require_traced_value, with the fixes)
    from torch.fx._symbolic_trace import _assert_is_none
except ImportError:  # pragma: no cover - other torch versions: fx's own assertion message stays
    _assert_is_none = None

from ..errors import UntraceableModelError
from ..nn import BayesLayer, BayesParameter, get_default_mappings
from .derive import base_class

__all__ = [
    "BayesTracer", "TraceFailure", "timm_registries", "is_leaf", "leaf_ancestors", "trace_modes", "traced_defaults",
    "require_traced_value",
]


def timm_registries() -> Tuple[Tuple[type, ...], Tuple[Callable, ...]]:
    """timm's FX leaf modules and autowrap functions (empty when timm is not installed)."""
    try:
        import timm.models  # noqa: F401  (importing the models fills the registries)
        from timm.layers import _fx
    except ImportError:  # pragma: no cover - timm is a dependency, but keep the tracer usable without it
        return (), ()
    leaves = tuple(m for m in _fx.get_notrace_modules() if isinstance(m, type))
    fns = tuple(f for f in _fx.get_notrace_functions() if callable(f))
    return leaves, fns


def is_leaf(module: nn.Module, leaf_types: Tuple[type, ...]) -> bool:
    """The leaf rule of :class:`BayesTracer` (see the module docstring)."""
    if isinstance(module, (BayesLayer, BayesParameter)):
        return True
    base = base_class(module)
    if base in get_default_mappings():
        return True
    if leaf_types and isinstance(module, leaf_types):
        return True
    return (base.__module__.startswith("torch.nn") or base.__module__.startswith("torch.ao.nn")) and not isinstance(
        module, nn.Sequential
    )


def leaf_ancestors(model: nn.Module, leaf_types: Tuple[type, ...]) -> Dict[str, str]:
    """``{name: leaf}`` for every module strictly inside an opaque leaf module ``leaf`` of ``model``."""
    out: Dict[str, str] = {}

    def visit(module: nn.Module, prefix: str, leaf: Optional[str]) -> None:
        for name, child in module._modules.items():
            if child is None:
                continue
            full = f"{prefix}.{name}" if prefix else name
            if leaf is not None:
                out.setdefault(full, leaf)
                visit(child, full, leaf)
            else:
                container = isinstance(child, (nn.ModuleList, nn.ModuleDict))  # never called, so never a leaf
                visit(child, full, full if not container and is_leaf(child, leaf_types) else None)

    visit(model, "", None)
    return out


class TraceFailure(Exception):
    """Tracing failed; ``path`` / ``module_type`` say in which module, ``where`` the source line.

    ``concrete_args`` is the ``concrete_args={...}`` to suggest (from :func:`concrete_args_hint`), or ``None``
    when fixing forward arguments cannot help.
    """

    def __init__(self, error: BaseException, path: Optional[str], module_type: Optional[type], mode: str,
                 concrete_args: Optional[str] = None) -> None:
        self.error = error
        self.path = path
        self.module_type = module_type
        self.mode = mode
        self.concrete_args = concrete_args
        self.where = _user_frame(error)
        super().__init__(self.summary())

    def summary(self) -> str:
        at = f"module {self.path!r} ({self.module_type.__name__})" if self.path else "the model's own forward"
        where = f" at {self.where}" if self.where else ""
        first = str(self.error).strip().splitlines()[0] if str(self.error).strip() else type(self.error).__name__
        return f"torch.fx cannot trace {at} in {self.mode} mode{where}: {type(self.error).__name__}: {first}"

    def fixes(self, model_name: str = "model") -> List[str]:
        fixes = []
        if self.path and self.module_type is not None:
            cls = self.module_type
            fixes.append(
                f"bnn = autobayes.bayesify({model_name}, leaf_modules=[{cls.__module__}.{cls.__qualname__}])"
                f"  # keep {cls.__name__} opaque; its Linear/Conv layers still become Bayesian"
            )
        if self.concrete_args:
            fixes.append(
                f"bnn = autobayes.bayesify({model_name}, {self.concrete_args})"
                f"  # fix the forward arguments the control flow depends on"
            )
        fixes.append(f"bnn = autobayes.bayesify({model_name}, mode='swap')  # no tracing: swap layers in place")
        return fixes

    def to_error(self, model_name: str = "model") -> UntraceableModelError:
        fixes = "\n".join("    " + f for f in self.fixes(model_name))
        return UntraceableModelError(
            f"{self.summary()}\nFixes:\n{fixes}\n"
            f"See what would be converted with autobayes.inspect_model({model_name}) (or `autobayes inspect`)."
        )


def concrete_args_hint(model: nn.Module) -> Optional[str]:
    """The ``concrete_args={...}`` to suggest for ``model``'s forward, with its own argument names.

    The first positional argument is the input (fixing it would fix the data), and arguments without a default
    are further inputs; the others are shown with their defaults when these are plain values (``None``, a bool,
    number or string): ``concrete_args={'mask': None, 'return_features': False}``. A forward taking ``**kwargs``
    (or one whose signature cannot be read) gets the generic form; ``None`` when no argument can be fixed.
    """
    generic = "concrete_args={'<argument name>': <value>}"
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return generic
    P = inspect.Parameter
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    data = positional[0].name if positional else None
    fixed = {p.name: p.default for p in params
             if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) and p.name != data and p.default is not P.empty
             and (p.default is None or isinstance(p.default, (bool, int, float, str)))}
    if fixed:
        return "concrete_args={" + ", ".join(f"{k!r}: {v!r}" for k, v in fixed.items()) + "}"
    return generic if any(p.kind is P.VAR_KEYWORD for p in params) else None


def _user_frame(error: BaseException) -> str:
    """``file:line: code`` of the innermost frame outside torch.fx / torch.nn.Module machinery and autobayes."""
    skip = (os.sep + os.path.join("torch", "fx") + os.sep, os.path.join("torch", "nn", "modules", "module.py"),
            os.sep + "autobayes" + os.sep, os.path.join("torch", "_tensor.py"), os.path.join("torch", "overrides.py"))
    frames = traceback.extract_tb(error.__traceback__)
    for frame in reversed(frames):
        if not any(s in frame.filename for s in skip):
            code = f": {frame.line.strip()}" if frame.line else ""
            return f"{frame.filename}:{frame.lineno}{code}"
    return ""


class BayesTracer(fx.Tracer):
    """``torch.fx.Tracer`` with autobayes' leaf rule and timm's registries; records where tracing failed.

    Args:
        leaf_modules: extra module types to keep opaque.
        autowrap_functions: extra functions to record as single nodes.
        use_timm: honour timm's leaf-module / autowrap-function registries.

    Example:
        >>> graph = BayesTracer().trace(torchvision.models.resnet18())  # doctest: +SKIP
    """

    def __init__(
        self,
        leaf_modules: Sequence[type] = (),
        autowrap_functions: Sequence[Callable] = (),
        use_timm: bool = True,
    ) -> None:
        timm_leaves, timm_fns = timm_registries() if use_timm else ((), ())
        super().__init__(autowrap_modules=(math,), autowrap_functions=tuple(autowrap_functions) + timm_fns)
        self.leaf_types: Tuple[type, ...] = tuple(leaf_modules) + timm_leaves
        self.failure: Optional[Tuple[str, type]] = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_leaf(m, self.leaf_types)

    def create_arg(self, a: Any) -> Any:
        """As torch.fx's, except that a dataclass dict (a ``transformers`` ``ModelOutput``) becomes a call of its own
        class: torch.fx would record it as a plain ``dict``, and the converted model would return one."""
        if isinstance(a, dict) and dataclasses.is_dataclass(a) and not isinstance(a, type):
            return self.create_node("call_function", type(a), (), {k: self.create_arg(v) for k, v in a.items()})
        return super().create_arg(a)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failure is None:  # the innermost module is the first to see the error
                try:
                    path = self.path_of_module(m)
                except NameError:
                    path = "<module created during forward>"
                self.failure = (path, type(m))
            raise


def _purge_proxies(model: nn.Module) -> None:
    """Drop fx proxies a module cached in itself while being traced (attention-bias caches in eval mode)."""
    for m in model.modules():
        for key, value in list(m.__dict__.items()):
            if isinstance(value, fx.Proxy):
                m.__dict__[key] = None
            elif isinstance(value, dict) and key not in ("_modules", "_parameters", "_buffers"):
                for k in [k for k, v in value.items() if isinstance(v, fx.Proxy)]:
                    del value[k]


def trace_modes(
    model: nn.Module,
    make_tracer: Callable[[], BayesTracer],
    concrete_args: Optional[Dict[str, Any]] = None,
    example_inputs: Optional[Tuple[tuple, Dict[str, Any]]] = None,
) -> Tuple[Dict[str, fx.Graph], List[str]]:
    """Trace ``model`` in eval and in train mode (graphs can differ: auxiliary heads, stochastic depth).

    Forward arguments that default to ``None`` or a bool are traced as their defaults unless ``concrete_args``
    fixes them or ``example_inputs`` (``(args, kwargs)``) gives them (:func:`traced_defaults`).

    Returns ``({"train": graph, "eval": graph}, notes)``. When only one mode traces, its graph serves both
    (noted); when the model's current mode does not trace, :class:`TraceFailure` is raised.
    """
    was_training = model.training
    graphs: Dict[str, fx.Graph] = {}
    failures: Dict[str, TraceFailure] = {}
    hint = concrete_args_hint(model)
    fixed = traced_defaults(model, concrete_args or {}, example_inputs)
    if fixed:
        concrete_args = {**fixed, **(concrete_args or {})}
    try:
        for mode in ("eval", "train"):  # train last: train() clears caches some models fill in eval mode
            model.train(mode == "train")
            tracer = make_tracer()
            try:
                graphs[mode] = tracer.trace(model, concrete_args=concrete_args)
            except Exception as err:  # noqa: BLE001 - any tracing error is reported with its location
                path, mtype = tracer.failure or (None, None)
                failures[mode] = TraceFailure(err, path, mtype, mode, hint)
            finally:
                _purge_proxies(model)
    finally:
        model.train(was_training)
    current = "train" if was_training else "eval"
    if current in failures:
        raise failures[current]
    notes = []
    for mode, failure in failures.items():
        graphs[mode] = graphs[current]
        notes.append(f"{failure.summary()}; the {current}-mode graph is used in {mode} mode too")
    for graph in {id(g): g for g in graphs.values()}.values():
        _keep_argument_names(graph, concrete_args or {})
        _explain_fixed_arguments(graph, type(model).__name__)
    if fixed:
        notes.append(f"forward argument(s) {', '.join(f'{k}={v!r}' for k, v in fixed.items())} traced as their "
                     f"defaults; pass concrete_args= or mode='swap' to give them other values")
    return graphs, notes


def traced_defaults(model: nn.Module, concrete_args: Dict[str, Any],
                    example_inputs: Optional[Tuple[tuple, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """``{name: default}``: the optional forward arguments of ``model`` to trace as their defaults.

    Those that default to ``None`` or to a bool (a flag: ``is_causal=False``), except the first positional argument
    (the input), those in ``concrete_args`` and those ``example_inputs`` (``(args, kwargs)``) gives. Traced as a
    placeholder instead, ``if mask is not None: ...`` takes the branch for a given mask even when none is passed
    (timm's Hiera then failed at its first forward with ``'NoneType' object has no attribute 'view'``), and
    ``if mask is not None or is_causal:`` cannot be traced at all (timm's ViT, once ``mask`` is fixed). Other
    defaults (numbers, strings) stay inputs: ``x * scale`` keeps the value passed at each call.

    Example:
        >>> class Masked(nn.Module):
        ...     def forward(self, x, mask=None, is_causal=False, scale=1.0):
        ...         return x if mask is None else x * mask
        >>> traced_defaults(Masked(), {})
        {'mask': None, 'is_causal': False}
    """
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    P = inspect.Parameter
    positional = [p.name for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    args, kwargs = example_inputs or ((), {})
    given = set(positional[: max(len(args), 1)]) | set(kwargs)
    return {p.name: p.default for p in params
            if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) and (p.default is None or isinstance(p.default, bool))
            and p.name not in given and p.name not in concrete_args}


def require_traced_value(ok: Any, message: str) -> None:
    """The check the converted forward runs on an argument traced as a fixed value (``ok``: it is ``None``, or
    equals the traced bool): raises with ``message`` otherwise. Pickled models name it: keep it here."""
    if not ok:
        raise UntraceableModelError(message)


def _keep_argument_names(graph: fx.Graph, concrete_args: Dict[str, Any]) -> None:
    """torch.fx names the placeholder of a fixed argument ``mask_1``: name it ``mask`` again, so the converted
    forward takes ``mask=...`` as a keyword (and refuses another value with :func:`require_traced_value`'s
    message, not a ``TypeError``)."""
    targets = {n.target for n in graph.nodes if n.op == "placeholder"}
    for node in graph.nodes:
        if node.op != "placeholder" or not isinstance(node.target, str):
            continue
        name = node.target[: -len("_1")] if node.target.endswith("_1") else None
        if name in concrete_args and name not in targets and f"{name}_2" not in targets:
            node.target = name


def _explain_fixed_arguments(graph: fx.Graph, model_name: str) -> None:
    """torch.fx checks an argument fixed while tracing with a bare assertion (``_assert_is_none`` for ``None``,
    ``torch._assert(arg == value)`` otherwise): use :func:`require_traced_value` with a message that names the
    argument and gives the fixes."""
    import torch

    for node in list(graph.nodes):
        if node.op != "call_function" or len(node.args) != 2 or not isinstance(node.args[1], str):
            continue
        name, sep, rest = node.args[1].partition(" has been specialized to have value ")
        if not sep or not rest.endswith(" but got another value"):
            continue
        value = rest[: -len(" but got another value")]
        if _assert_is_none is not None and node.target is _assert_is_none:
            with graph.inserting_before(node):
                ok = graph.call_function(operator.is_, (node.args[0], None))
        elif node.target is torch._assert:
            ok = node.args[0]
        else:
            continue
        node.target = require_traced_value
        node.args = (ok, (
            f"{model_name} was converted with its forward argument {name!r} traced as {value} (its default), so "
            f"the converted model cannot take another value for it. Fixes: "
            f"autobayes.bayesify(model, concrete_args={{{name!r}: torch.fx.PH}})  # trace {name} as an input "
            f"(then always pass it); or autobayes.bayesify(model, example_inputs=(x, {name}))  # the same, "
            f"checked; or autobayes.bayesify(model, mode='swap')  # no tracing: any argument"
        ))
