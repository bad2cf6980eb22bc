"""The choice between the conversion routes of :func:`autobayes.bayesify` after torch.fx: the capture route
(``mode="export"``, :mod:`autobayes.fx.capture_root`) when example inputs exist, else swap mode
(:func:`build_swap`); and the one warning an ``auto`` conversion gives when fx could not trace the model (why,
and which route converted it).
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Optional, Tuple

import torch

from torch import nn

from ..config import BayesConfig
from ..errors import ConfigError, UntraceableModelError
from ..hf.inputs import example_inputs as hf_example_inputs
from ..hf.inputs import is_hf_model
from ..nn import BayesLayer, BayesParameter
from .capture_root import CaptureFailure, analyse, build_export
from .convert import convert_modules
from .report import ConversionReport
from .swap import make_swap_root, record_functional_weights
from .tracer import TraceFailure, leaf_ancestors

__all__ = ["try_export", "warn_fallback", "build_swap", "input_spec", "inputs_from_spec", "INPUT_SPEC"]


def try_export(model: nn.Module, net: nn.Module, cfg: BayesConfig, report: ConversionReport,
                inputs: Optional[tuple], mode: str) -> Optional[str]:
    """The capture route; sets ``report.mode = "export"`` when it converted ``net``, else returns why not
    (``mode="export"`` raises instead). A failure after the modules were converted leaves them converted."""
    if inputs is None and is_hf_model(model):
        inputs = ((), hf_example_inputs(net))
        report.notes.append(f"example inputs for the capture: autobayes.hf.example_inputs(model) "
                            f"({', '.join(inputs[1])})")
    if inputs is None:
        reason = f"the capture route (mode='export') needs example inputs: {_inputs_hint(model)}"
        if mode == "export":
            raise ConfigError(f"mode='export' captures the forward on example inputs, and none were given. "
                              f"Pass them: bayesify(model, mode='export', example_inputs=x) (a tensor, a tuple of "
                              f"positional inputs or a dict of keyword inputs)")
        report.notes.append(f"export route not taken: {reason}")
        return reason
    args, kwargs = inputs
    try:
        analysis = analyse(net, args, kwargs)
    except CaptureFailure as failure:
        if mode == "export":
            raise UntraceableModelError(f"{failure}. Fix: bayesify(model, mode='swap'), or change the inputs "
                                        f"(see the torch.export documentation on non-strict export)") from failure.error
        report.notes.append(f"export route not taken: {failure}")
        return str(failure)
    try:
        build_export(net, cfg, report, analysis, args, kwargs)
    except CaptureFailure as failure:
        if mode == "export":
            raise UntraceableModelError(f"{failure}. Fix: bayesify(model, mode='swap')") from failure.error
        report.notes.append(f"export route not taken: {failure}")
        return str(failure)
    report.mode = "export"
    spec = input_spec(tuple(args), dict(kwargs))
    if spec is not None:  # a checkpoint stores it, so that loading captures the forward again
        net.__dict__[INPUT_SPEC] = spec
    return None


def _inputs_hint(model: nn.Module) -> str:
    """How to give ``model`` example inputs: for a wrapper of a ``transformers`` model (a PEFT model), the ones
    :func:`autobayes.hf.example_inputs` builds from the wrapped model's config; else an image-shaped tensor."""
    get_base = getattr(model, "get_base_model", None)
    base = get_base() if callable(get_base) else None
    if base is not None and is_hf_model(base):
        try:
            keys = ", ".join(hf_example_inputs(base))
        except Exception:  # noqa: BLE001 - only the hint's wording depends on it
            keys = "its inputs"
        return (f"bayesify(model, example_inputs=autobayes.hf.example_inputs(model.get_base_model())) ({keys}, "
                f"built from the {type(base).__name__} config)")
    return "bayesify(model, example_inputs=torch.randn(2, 3, 32, 32))"


def warn_fallback(failure: TraceFailure, route: str, export_failure: Optional[str]) -> None:
    """The one warning of an ``auto`` conversion that fx could not trace and that fell back to swap mode: why, and
    the fixes. A model the capture route converted gets no warning -- it has a rewritten graph like an fx-mode one
    (every transformers 5 model takes that route) -- and its report's notes say why fx was not taken."""
    if route == "export":
        return
    how = "layers swapped in place, KL collected per forward"
    graph_fixes = [f for f in failure.fixes() if "mode='swap'" not in f]
    hint = (f" To use the fx graph route instead: {'; '.join(graph_fixes)}" if graph_fixes
            else f" Pass mode={route!r} to convert this way without the warning.")
    skipped = f" (mode='export' was not taken: {export_failure})" if route == "swap" and export_failure else ""
    warnings.warn(f"{failure.summary()}. autobayes falls back to mode={route!r} ({how}){skipped}.{hint}",
                  stacklevel=3)


def build_swap(net: nn.Module, cfg: BayesConfig, report: ConversionReport, inputs: Optional[tuple] = None) -> None:
    """Swap mode: convert ``net``'s modules in place (unless the capture route converted them already) and give it
    the swap-mode root. ``inputs`` (``(args, kwargs)``, or ``None``: a transformers model's are built from its
    config) are run once to find the weights the forward uses functionally
    (:func:`~autobayes.fx.swap.record_functional_weights`)."""
    if report.mode == "export" or any(isinstance(m, (BayesLayer, BayesParameter)) for m in net.modules()):
        # the capture route converted the modules already and failed to capture the converted model
        report.mode = "swap"
        make_swap_root(net)
        report.notes.append("swap mode: the KL counts the Bayesian layers each forward calls (forward pre-hooks)")
        return
    report.mode = "swap"
    # modules of torch.nn with children (nn.TransformerEncoderLayer, ...) may read their layers' weights
    # themselves: convert those layers as posterior attributes, not by swapping.
    inside = leaf_ancestors(net, ())
    convert_modules(net, cfg, report, inside_leaf=inside.get, functional=record_functional_weights(net, inputs))
    make_swap_root(net)
    report.notes.append("swap mode: the KL counts the Bayesian layers each forward calls (forward pre-hooks)")


#: On an export-route root: a JSON description of the example inputs it was captured on (see :func:`input_spec`).
INPUT_SPEC = "_autobayes_input_spec"


def input_spec(args: tuple, kwargs: dict) -> Optional[dict]:
    """A JSON-able description of example inputs -- each tensor's shape and dtype, other leaves as they are --
    that a checkpoint stores so that loading can capture the forward again (:func:`inputs_from_spec`); ``None``
    when a leaf is neither a tensor nor a JSON value.

    Example:
        >>> input_spec((torch.zeros(2, 3),), {"mask": None})
        {'args': [{'shape': [2, 3], 'dtype': 'float32'}], 'kwargs': {'mask': None}}
    """
    def describe(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise TypeError(type(value).__name__)

    try:
        return {"args": [describe(a) for a in args], "kwargs": {k: describe(v) for k, v in kwargs.items()}}
    except TypeError:
        return None


def inputs_from_spec(spec: Mapping[str, Any]) -> Tuple[tuple, dict]:
    """Example inputs matching :func:`input_spec`'s description: floating tensors from a fixed seed, integer and
    bool tensors of zeros (valid token ids and masks)."""
    generator = torch.Generator().manual_seed(0)

    def build(value: Any) -> Any:
        if not (isinstance(value, dict) and set(value) == {"shape", "dtype"}):
            return value
        dtype = getattr(torch, value["dtype"])
        if dtype.is_floating_point or dtype.is_complex:
            return torch.randn(value["shape"], generator=generator).to(dtype)
        return torch.zeros(value["shape"], dtype=dtype)

    return tuple(build(a) for a in spec.get("args", [])), {k: build(v) for k, v in spec.get("kwargs", {}).items()}
