"""The verbs a user meets first: :func:`bayesify`, :func:`inspect_model`, :func:`use_mean`, :func:`kl_disabled`."""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .adapters import adapter_options, adapter_spec, plan_adapters
from .config import BayesConfig, default_layer_types
from .errors import ConfigError, UntraceableModelError
from .fx.convert import convert_modules
from .fx.report import ConversionReport
from .fx.routes import build_swap, try_export, warn_fallback
from .fx.rewrite import install_fx_root, rewrite_graph
from .fx.runtime import BayesOutput, kl_disabled
from .fx.tracer import BayesTracer, TraceFailure, leaf_ancestors, timm_registries, trace_modes
from .hf.inputs import is_hf_model
from .nn import BayesLayer, BayesParameter
from .registry import did_you_mean

__all__ = ["bayesify", "inspect_model", "use_mean", "kl_disabled", "BayesOutput", "MODES"]

#: Conversion routes of :func:`bayesify`.
MODES = ("auto", "fx", "export", "swap")


def bayesify(
    model: nn.Module,
    config: Optional[Union[BayesConfig, Mapping[str, Any]]] = None,
    *,
    inplace: bool = False,
    mode: str = "auto",
    leaf_modules: Optional[Sequence[type]] = None,
    autowrap_functions: Optional[Sequence[Callable]] = None,
    concrete_args: Optional[Dict[str, Any]] = None,
    example_inputs: Any = None,
    allow_deterministic: bool = False,
    adapter: Optional[str] = None,
    **options: Any,
) -> nn.Module:
    """Turn a deterministic network into a Bayesian one (mean-field variational inference).

    The returned module takes the same inputs as ``model`` and returns ``BayesOutput(output, kl)``: ``output``
    with the deterministic model's structure, ``kl`` a 0-dim tensor, the sum of ``KL(q || p)`` over the Bayesian
    layers the forward used (each counted once, even when called several times). Its trained weights become the
    posterior means, so a pretrained model starts where it was.

    Which layers become Bayesian: every ``nn.Linear`` / ``nn.ConvNd`` / ``nn.ConvTransposeNd`` (subclasses
    included: timm's ``Conv2dSame`` / ``StdConv2d`` keep their own forward, their weight becomes a posterior
    sample), the weights of ``nn.MultiheadAttention`` and transformers' ``Conv1D``, raw parameters the forward feeds
    to ``F.linear`` / ``F.conv*`` / ``matmul`` (a tie is one posterior); restricted by ``layer_types``, ``include``,
    ``exclude``, ``filter_fn``, ``overrides``, ``tied`` (:class:`BayesConfig`). Everything else (norms, buffers) stays
    deterministic; ``bnn.bayes_report`` lists what was converted and what was skipped, and why.

    Routes (``mode``): ``"fx"`` traces the model with torch.fx (in train and in eval mode -- graphs can differ,
    e.g. auxiliary heads) and rewrites the graph to thread the KL; ``"export"`` captures the forward with
    ``torch.export`` (non-strict, dynamic shapes) on ``example_inputs`` -- for a Hugging Face ``transformers``
    model they default to :func:`autobayes.hf.example_inputs` -- and rewrites that graph the same way (train /
    eval and each input structure captured at first use; see :mod:`autobayes.fx.capture_root`); ``"swap"`` swaps
    layers in place and collects the KL of the layers each forward calls; ``"auto"`` tries ``"fx"``, then
    ``"export"`` (when example inputs exist), then ``"swap"``, with one warning saying why and which route
    converted the model (``bnn.bayes_report.mode`` and its notes record it too).

    Args:
        model: any ``nn.Module``; left untouched unless ``inplace=True``.
        config: a :class:`BayesConfig` or a dict of its fields; ``options`` override it.
        inplace: convert ``model`` itself instead of a deep copy.
        mode: ``"auto"``, ``"fx"``, ``"export"`` or ``"swap"``.
        leaf_modules: module types torch.fx should not trace into (their layers still become Bayesian).
            timm's own leaf registry is always honoured.
        autowrap_functions: functions to record as single graph nodes (timm's registry is always honoured).
        concrete_args: forward arguments to fix while tracing (``{"size": 224}``); those defaulting to ``None`` or
            a bool are traced as their defaults unless fixed here (``{"mask": torch.fx.PH}``: an input) or given.
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs: the traced graph is
            checked against the eager model on it, and swap mode runs it once to find weights used functionally.
        allow_deterministic: return the model even when no layer became Bayesian (a filter that matches
            nothing, or a model without supported layers); by default that is an error, since the result would
            be a deterministic network with no posterior.
        adapter: ``"lora"`` (options ``rank=8``, ``alpha=rank``): only low-rank adapters on the selected
            ``nn.Linear`` layers are Bayesian, all else frozen; ``"peft"`` (recognised without it): a PEFT LoRA
            model's adapters. See :mod:`autobayes.adapters` and :func:`autobayes.merge_adapters`.
        **options: :class:`BayesConfig` fields, e.g. ``posterior="gaussian"``, ``n_mc=100``,
            ``prior_scale=0.1``, ``moped_delta=0.1``, ``include=["head"]``.

    Returns:
        The Bayesian model: the same module tree (every untouched module keeps its qualified name and
        state-dict keys; a converted layer ``fc`` holds ``fc.weight_posterior.mu`` / ``.log_var`` / ``.prior.*``),
        with ``bnn.bayes_config`` and ``bnn.bayes_report``. Its class derives from the model's, so the model's
        own methods and attributes remain. ``train()`` / ``eval()`` keep their meaning (BatchNorm, Dropout);
        weights are sampled in both modes (use :func:`use_mean` for posterior-mean predictions).

    Raises:
        UnknownNameError: an unknown option or option value (the message suggests the closest name).
        ConfigError: an invalid option value, or no layer became Bayesian (the message names the filters and
            lists layers that exist; pass ``allow_deterministic=True`` to accept that).
        UntraceableModelError: with ``mode="fx"``, when torch.fx cannot trace the model (the message names the
            module path and the operation and gives the fixes as code); with ``mode="export"``, when torch.export
            cannot capture it.

    Example:
        >>> model = torchvision.models.resnet18(num_classes=10)
        >>> bnn = autobayes.bayesify(model, posterior="gaussian", prior_scale=0.1)
        >>> out, kl = bnn(torch.randn(2, 3, 64, 64))
        >>> loss = F.cross_entropy(out, y) + kl / len(train_set)
        >>> head_only = autobayes.bayesify(model, include=["fc"])
    """
    spec = adapter_spec(adapter, options)  # takes rank / alpha out of options
    if isinstance(model, nn.Module):  # adapters get a mean-field posterior unless one is named
        options = adapter_options(model, spec, config, options)
    cfg = BayesConfig.make(config, **options)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"bayesify expects an nn.Module, got {type(model).__name__}")
    if not isinstance(mode, str) or mode.lower() not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {list(MODES)}.{did_you_mean(str(mode), MODES)}")
    mode = mode.lower()
    if not isinstance(inplace, bool):
        raise ConfigError(f"inplace must be True or False, got {inplace!r}")
    if not isinstance(allow_deterministic, bool):
        raise ConfigError(f"allow_deterministic must be True or False, got {allow_deterministic!r}")
    leaf_types = _types(leaf_modules, "leaf_modules")
    wrapped = _callables(autowrap_functions, "autowrap_functions")
    if concrete_args is not None and not isinstance(concrete_args, Mapping):
        raise ConfigError(f"concrete_args must be a dict {{argument name: value}}, got {type(concrete_args).__name__}")
    inputs = _as_inputs(example_inputs)
    if any(isinstance(m, (BayesLayer, BayesParameter)) for m in model.modules()):
        raise ConfigError(
            f"{type(model).__name__} already holds Bayesian layers (was it bayesified already?); "
            f"convert the deterministic model, or load a state dict with autobayes.io"
        )
    reference = _eager(model, inputs) if inputs is not None else None

    net = model if inplace else copy.deepcopy(model)
    report = ConversionReport(model=type(model).__name__, mode=mode, n_params_total=sum(p.numel() for p in model.parameters()))
    plan = plan_adapters(net, cfg, spec, allow_deterministic, inputs)  # adapters only: a config naming their matrices
    convert_cfg = cfg if plan is None else plan.config

    graphs = None
    fx_failure: Optional[TraceFailure] = None
    if mode in ("auto", "fx"):
        try:
            graphs, notes = trace_modes(net, lambda: BayesTracer(leaf_types, wrapped), dict(concrete_args or {}) or None, inputs)
            report.notes.extend(notes)
        except TraceFailure as failure:
            if mode == "fx":
                raise _fx_error(model, failure) from failure.error
            fx_failure = failure
            report.notes.append(f"fx route not taken: {failure.summary()}")

    if graphs is not None:
        try:
            _build_fx(net, graphs, convert_cfg, report, leaf_types)
        except ConfigError:
            raise  # a layer refused its options (e.g. nn.Embedding(max_norm=...)): the same on either route
        except Exception as err:  # noqa: BLE001 - a rewrite failure is reported like a tracing failure
            message = (
                f"autobayes could not rewrite the traced graph of {type(model).__name__}: {type(err).__name__}: {err}. "
                f"Fixes: bayesify(model, leaf_modules=[TheBlock]) or bayesify(model, mode='swap'); "
                f"see autobayes.inspect_model(model)"
            )
            if mode == "fx" or inplace:
                raise UntraceableModelError(message) from err
            warnings.warn(message + "; falling back to mode='swap'", stacklevel=2)
            return bayesify(model, cfg, mode="swap", example_inputs=example_inputs,
                            allow_deterministic=allow_deterministic, adapter=spec)
    else:
        export_failure = None if mode == "swap" else try_export(model, net, convert_cfg, report, inputs, mode)
        if report.mode != "export":
            build_swap(net, convert_cfg, report, inputs)
        if fx_failure is not None:
            warn_fallback(fx_failure, report.mode, export_failure)
    if plan is not None:
        plan.finish(net, report)

    net.bayes_config = cfg
    net.bayes_report = report
    if not report.converted:
        if not allow_deterministic:
            raise ConfigError(_nothing_converted(model, cfg, report))
        report.notes.append("no layer became Bayesian (allow_deterministic=True): the network is deterministic")
    if reference is not None and not _matches_eager(net, inputs, reference):
        message = (
            f"the converted {type(model).__name__} (mode={report.mode!r}) does not reproduce the eager model on "
            f"example_inputs under autobayes.use_mean: the forward probably branches on an argument or a value "
            f"torch.fx fixed while tracing. Fixes: bayesify(model, concrete_args={{...}}), "
            f"bayesify(model, leaf_modules=[TheBlock]) or bayesify(model, mode='swap')"
        )
        if report.mode in ("fx", "export") and mode == "auto" and not inplace:
            warnings.warn(message + "; falling back to mode='swap'", stacklevel=2)
            return bayesify(model, cfg, mode="swap", example_inputs=example_inputs,
                            allow_deterministic=allow_deterministic, adapter=spec)
        raise UntraceableModelError(message)
    return net


def _fx_error(model: nn.Module, failure: TraceFailure) -> UntraceableModelError:
    """The error of ``mode="fx"`` failing: for a transformers model, whose forward branches on its inputs and
    config, not fixes for torch.fx (none helps) but the capture route."""
    if not is_hf_model(model):
        return failure.to_error()
    first = str(failure.error).strip().splitlines()[0] if str(failure.error).strip() else ""
    return UntraceableModelError(
        f"torch.fx cannot trace {type(model).__name__}, a transformers model: its forward branches on its inputs "
        f"and config ({type(failure.error).__name__}: {first}); use mode='export' (torch.export on example "
        f"inputs) or mode='auto' (`--mode export` / `--mode auto` on the command line)"
    )


def _nothing_converted(model: nn.Module, cfg: BayesConfig, report: ConversionReport) -> str:
    """The error of a conversion that converted nothing: the filters, some layers that exist, the fixes."""
    name = type(model).__name__
    filters = []
    if cfg.layer_types is not None:
        filters.append(f"layer_types={[t if isinstance(t, str) else t.__name__ for t in cfg.layer_types]}")
    for field_name in ("include", "exclude"):
        value = getattr(cfg, field_name)
        if value:
            filters.append(f"{field_name}={list(value)}")
    if cfg.filter_fn is not None:
        filters.append("filter_fn")
    if any(v is None for v in (cfg.overrides or {}).values()):
        filters.append(f"overrides={dict(cfg.overrides)}")
    layers = [f"{r.name or '(the model itself)'} ({r.type})" for r in report.skipped]
    shown = ", ".join(layers[:8]) + (f", ... ({len(layers)} in all)" if len(layers) > 8 else "")
    if filters and layers:
        why = f"{' / '.join(filters)} selected none of its convertible layers: {shown}"
    elif layers:
        why = f"every convertible layer was skipped: {shown}"
    else:
        modules = [n for n, _ in model.named_modules() if n][:8]
        why = (f"it has no layer autobayes converts (nn.Linear, nn.ConvNd, nn.ConvTransposeNd, "
               f"nn.MultiheadAttention, parameters fed to F.linear / F.conv* / matmul); its modules: "
               f"{', '.join(modules) or 'none'}")
    fix = ("Fix the filter (e.g. include=['fc', 'layer4.*']; see the layer names with `autobayes inspect ARCH` or "
           "print(autobayes.inspect_model(model)))" if filters or layers else
           "Convert a model with such layers (see print(autobayes.inspect_model(model)))")
    opt_in = sorted({r.type for r in report.skipped if "is opt-in" in r.reason})
    if opt_in and not filters:
        fix = f"{', '.join(opt_in)} layers are opt-in: convert them with layer_types={opt_in}"
    opted = [r for r in report.skipped if "is opt-in" in r.reason and cfg.included(r.name)]
    if opted:  # e.g. include=['embed'] naming an nn.Embedding: its type must be named in layer_types too
        opt_in = sorted({r.type for r in opted})
        named = ", ".join(r.name for r in opted[:4]) + (", ..." if len(opted) > 4 else "")
        defaults = sorted({r.type for r in report.records if r.type in default_layer_types()})
        fix = (f"{named} {'is' if len(opted) == 1 else 'are'} {' / '.join(opt_in)} (opt-in: never converted unless "
               f"layer_types names the type); add it: layer_types={defaults + opt_in}")
    return (f"no layer of {name} became Bayesian: {why}. The result would be a deterministic network with no "
            f"posterior. {fix}, or pass allow_deterministic=True (--allow-deterministic on the command line) to "
            f"accept a deterministic network")


def _build_fx(net: nn.Module, graphs: Dict[str, Any], cfg: BayesConfig, report: ConversionReport, leaf_types) -> None:
    report.mode = "fx"
    timm_leaves, _ = timm_registries()
    inside = leaf_ancestors(net, tuple(leaf_types) + timm_leaves)
    convert_modules(net, cfg, report, inside_leaf=inside.get)
    units: Dict[str, nn.Module] = {}
    done: Dict[int, Any] = {}
    for graph in graphs.values():
        if id(graph) not in done:
            done[id(graph)] = True
            units.update(rewrite_graph(net, graph, cfg, report))
    install_fx_root(net, graphs)
    for record in report.converted:
        record.used = any(u == record.name or u.startswith(record.name + ".") if record.name else True for u in units)
    n_leaf = sum(1 for r in report.converted if r.reason.startswith("inside leaf"))
    if n_leaf:
        report.notes.append(
            f"{n_leaf} layer(s) inside opaque leaf modules were converted as posterior attributes (their weight "
            f"attribute returns a sample); their KL is counted when the leaf is called"
        )


def inspect_model(model: nn.Module, config: Optional[Union[BayesConfig, Mapping[str, Any]]] = None, **options: Any) -> ConversionReport:
    """What :func:`bayesify` would convert in ``model`` (which is not modified), and what it would skip and why.

    Takes the arguments of :func:`bayesify`. ``print(report)`` shows a table (layer, type, how, parameters
    deterministic vs Bayesian, notes); ``report.to_dict()`` is JSON-ready; ``autobayes inspect`` prints it.

    Example:
        >>> report = autobayes.inspect_model(torchvision.models.resnet18(), include=["fc"])
        >>> [r.name for r in report.converted]
        ['fc']
    """
    asked = options.pop("allow_deterministic", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnn = bayesify(model, config, allow_deterministic=True, **options)  # show a conversion of nothing, too
    report = bnn.bayes_report
    if not report.converted and not asked:
        report.notes = [n for n in report.notes if not n.startswith("no layer became Bayesian")]
        report.notes.append("no layer would become Bayesian: bayesify raises with these options unless "
                            "allow_deterministic=True; compare the filters with the layer names above")
    report.notes.extend(str(w.message) for w in caught if str(w.message) not in " ".join(report.notes))
    return report


# ---------------------------------------------------------------------------------------------------------------
# context managers
# ---------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def use_mean(bnn: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Posterior-mean (deterministic) predictions inside the block; the previous setting is restored on exit.

    Example:
        >>> with autobayes.use_mean(bnn):
        ...     out, kl = bnn(x)  # out equals the deterministic model's output for the posterior means
    """
    params = [m for m in bnn.modules() if isinstance(m, BayesParameter)]
    previous = [p.use_mean for p in params]
    try:
        for p in params:
            p.use_mean = bool(enabled)
        yield bnn
    finally:
        for p, value in zip(params, previous):
            p.use_mean = value


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def _types(value: Any, what: str) -> tuple:
    if value is None:
        return ()
    items = (value,) if isinstance(value, type) else tuple(value)
    for t in items:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise ConfigError(f"{what} must hold nn.Module classes, e.g. {what}=[MyBlock], got {t!r}")
    return items


def _callables(value: Any, what: str) -> tuple:
    if value is None:
        return ()
    items = (value,) if callable(value) else tuple(value)
    for f in items:
        if not callable(f) or not hasattr(f, "__globals__"):
            raise ConfigError(f"{what} must hold plain Python functions, e.g. {what}=[my_helper], got {f!r}")
    return items


def _as_inputs(example_inputs: Any) -> Optional[tuple]:
    if example_inputs is None:
        return None
    if isinstance(example_inputs, torch.Tensor):
        return ((example_inputs,), {})
    if isinstance(example_inputs, Mapping):
        return ((), dict(example_inputs))
    if isinstance(example_inputs, (tuple, list)):
        return (tuple(example_inputs), {})
    raise ConfigError(
        f"example_inputs must be a tensor, a tuple of positional inputs or a dict of keyword inputs, "
        f"got {type(example_inputs).__name__}"
    )


def _eager(model: nn.Module, inputs: tuple) -> Any:
    args, kwargs = inputs
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            return model(*args, **kwargs)
    finally:
        model.train(was_training)


def _matches_eager(bnn: nn.Module, inputs: tuple, reference: Any) -> bool:
    args, kwargs = inputs
    was_training = bnn.training
    try:
        bnn.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]), use_mean(bnn), kl_disabled(bnn):
            out = bnn(*args, **kwargs).output
    except Exception:  # noqa: BLE001 - a graph traced for other arguments may fail outright
        return False
    finally:
        bnn.train(was_training)
    a, spec_a = pytree.tree_flatten(out)
    b, spec_b = pytree.tree_flatten(reference)
    if spec_a != spec_b or len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            return False
        if isinstance(x, torch.Tensor):
            if x.shape != y.shape or not torch.allclose(x.float(), y.float(), rtol=1e-3, atol=1e-4):
                return False
        elif x != y:
            return False
    return True
