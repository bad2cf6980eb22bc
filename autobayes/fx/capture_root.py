"""The root of a model converted by the capture route (``mode="export"``), and the route's build step.

:func:`build_export` captures the deterministic model (proving it capturable, and finding the parameters its
forward feeds to weight ops), converts the modules in place (:func:`autobayes.fx.convert.convert_modules`, with
those parameters as ``functional=``), captures the converted model and gives its root the ``"export"`` root
mixin (:class:`ExportRoot`, registered in :data:`autobayes.fx.derive.ROOTS`).

The root's forward flattens its inputs (pytree), runs the captured graph of ``(train/eval, input structure)``
-- capturing it at the first call with that structure, so a loaded, unpickled or deep-copied model recaptures
lazily -- unflattens the outputs with the captured output spec (a ``ModelOutput`` stays one) and returns
``BayesOutput(output, kl)``. An input structure torch.export cannot capture runs the model's own forward
instead (the converted module tree is runnable as it is), with the KL of the Bayesian layers it called (as in
swap mode), after a one-time warning; so does, without a warning, a call given a ``transformers`` cache object
(``past_key_values`` in ``generate``'s decoding steps), which the forward updates in place.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Dict, List, Sequence

import torch
from torch import nn
from torch.utils import _pytree as pytree

from ..config import BayesConfig
from ..nn.parameter import shared_draws
from .capture import Captured, export_forward, flatten_inputs, functional_weights, specialised_note, structure_key
from .capture_graph import CAPTURING, CONSTANT_PREFIX, REGION_PREFIX, STATIC, capture_converted
from .capture_sizes import undeclared_sizes
from .convert import convert_modules, mapped_base
from .derive import ROOTS, base_class, set_class, strip_state
from .report import ConversionReport
from .runtime import USED, BayesOutput, kl_units, total_kl
from .swap import hook_kl_units
from .tracer import leaf_ancestors

__all__ = ["ExportRoot", "build_export", "CAPTURED", "CaptureFailure"]

#: On an export-mode root: ``{structure key: [Captured, ...] or "reason it could not be captured"}`` (not pickled).
CAPTURED = "_autobayes_captured"
#: On an export-mode root: whether the KL units carry the forward pre-hooks of the eager fallback.
_HOOKED = "_autobayes_hooked"
#: At most this many captures per model: a forward given ever new non-tensor values (a float that changes at every
#: call) runs eagerly beyond it instead of being captured again and again.
MAX_CAPTURES = 16


class CaptureFailure(Exception):
    """torch.export could not capture a model; ``stage`` says which capture (``"model"`` / ``"converted"``)."""

    def __init__(self, stage: str, error: BaseException) -> None:
        first = (str(error).strip().splitlines() or [""])[0]
        super().__init__(f"torch.export could not capture the {stage}: {type(error).__name__}: {first[:300]}")
        self.stage = stage
        self.error = error


def _eager(root: nn.Module, args: Sequence[Any], kwargs: Dict[str, Any]) -> BayesOutput:
    """The model's own forward over the converted modules, with the KL of the units it called."""
    if root.__dict__.get(_HOOKED):
        units = list(kl_units(root).values())
    else:
        units = hook_kl_units(root)
        root.__dict__[_HOOKED] = True
    for m in units:
        m.__dict__[USED] = False
    output = base_class(root).forward(root, *args, **kwargs)
    return BayesOutput(output, total_kl(*[m for m in units if m.__dict__.get(USED)]))


@torch.compiler.disable
def _capture(root: nn.Module, args: Sequence[Any], kwargs: Dict[str, Any], key: Any) -> Any:
    """Capture ``root`` for a new input structure (outside torch.compile's tracing); ``None`` when it fails."""
    if len(captured_entries(root)) >= MAX_CAPTURES:
        root.__dict__.setdefault(CAPTURED, {})[key] = "too many captures"
        warnings.warn(
            f"{type(root).__name__} has been captured for {MAX_CAPTURES} input structures (does the forward get "
            f"non-tensor arguments whose values change, such as a float? each value is a new structure); new "
            f"structures run the model's own forward (the KL counts the Bayesian layers it calls, as in "
            f"mode='swap'). Pass such values as tensors, or convert with bayesify(model, mode='swap')",
            stacklevel=3,
        )
        return None
    try:
        captured, _ = capture_converted(root, args, kwargs)
    except Exception as err:  # noqa: BLE001 - any capture failure falls back to the eager forward
        reason = str(CaptureFailure("converted model for these inputs", err))
        root.__dict__.setdefault(CAPTURED, {})[key] = reason
        warnings.warn(
            f"{reason}. {type(root).__name__} runs its own forward for inputs of this structure (the KL counts "
            f"the Bayesian layers it calls, as in mode='swap'); other structures keep their captured graphs",
            stacklevel=3,
        )
        return None
    table = root.__dict__.setdefault(CAPTURED, {})  # fetched after the capture: torch.export restores attributes
    entries = table.get(key)
    table[key] = (entries if isinstance(entries, list) else []) + [captured]
    return captured


def _has_cache(args: Sequence[Any], kwargs: Dict[str, Any]) -> bool:
    """Whether a ``transformers`` cache object is among the inputs (by transformers' own rule: a class named
    ``*Cache``): the forward updates it in place, which a captured graph would not repeat."""
    return any(type(v).__name__.endswith("Cache") for v in (*args, *kwargs.values()))


def run_captured(root: nn.Module, args: Sequence[Any], kwargs: Dict[str, Any]) -> BayesOutput:
    """The forward of an export-mode root (see the module docstring). A call given a cache object (the decoding
    steps of ``generate``) runs the eager forward, without a warning."""
    if _has_cache(args, kwargs):
        return _eager(root, args, kwargs)
    leaves, spec = flatten_inputs(args, kwargs)
    key = structure_key(root, leaves, spec)
    entries = root.__dict__.setdefault(CAPTURED, {}).get(key)
    if isinstance(entries, str):
        return _eager(root, args, kwargs)
    entry = next((e for e in entries if e.accepts(leaves)), None) if entries else None
    if entry is None:
        entry = _capture(root, args, kwargs, key)
        if entry is None:
            return _eager(root, args, kwargs)
    try:
        flat, kl = entry.fn(root, *leaves)
    except RuntimeError as err:
        if root.__dict__.get(STATIC) or not entry.lower:
            raise
        return _undeclared_at_run(root, args, kwargs, err)
    return BayesOutput(pytree.tree_unflatten(list(flat), entry.out_spec), kl)


def _undeclared_at_run(root: nn.Module, args: Sequence[Any], kwargs: Dict[str, Any], err: Exception) -> BayesOutput:
    """A dynamic graph failed at sizes it declared dynamic. When the model's own forward runs on these inputs, the
    forward fixes a size torch.export did not declare (the conversion's check, :mod:`autobayes.fx.capture_sizes`,
    tried other sizes): the result is the eager one, and the model is captured with static shapes from now on
    (each new size at its first call). Otherwise the inputs are wrong, and the model's own error is raised."""
    result = _eager(root, args, kwargs)  # raises the model's own error for inputs it refuses
    root.__dict__[STATIC] = True
    root.__dict__[CAPTURED] = {}
    warnings.warn(
        f"the captured graph of {type(root).__name__} failed at input sizes it declared dynamic "
        f"({type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}), where the model's own forward "
        f"runs: the forward fixes a size torch.export did not declare. This call ran the model's own forward; "
        f"from now on it is captured with static shapes, each new input size at its first call",
        stacklevel=4,
    )
    return result


class ExportRoot:
    """Root mixin of a model converted by the capture route: runs the captured graph of the current mode and
    input structure and returns :class:`~autobayes.fx.runtime.BayesOutput` (see :mod:`autobayes.fx.capture_root`)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.__dict__.get(CAPTURING):
            return super().forward(*args, **kwargs)
        with shared_draws():  # the eager fallback's reads of one posterior (a tied weight) share one draw too
            return run_captured(self, args, kwargs)

    @property
    def code(self) -> str:
        """The Python source of the captured forwards of the current mode (one per input structure)."""
        table = self.__dict__.get(CAPTURED, {})
        return "\n\n".join(e.source for key, entries in table.items() if key[0] == self.training
                           and isinstance(entries, list) for e in entries)

    def __getstate__(self) -> Dict[str, Any]:
        state = strip_state(super().__getstate__())
        state.pop(CAPTURED, None)
        for key in [k for k in state if k.startswith(REGION_PREFIX)]:  # bodies of captured regions: recaptured
            del state[key]
        state[CAPTURING] = False
        buffers = state.get("_buffers")
        if buffers is not None:
            state["_buffers"] = {k: v for k, v in buffers.items() if not k.startswith(CONSTANT_PREFIX)}
            state["_non_persistent_buffers_set"] = {
                k for k in state.get("_non_persistent_buffers_set", set()) if not k.startswith(CONSTANT_PREFIX)}
        return state


ROOTS["export"] = ExportRoot


# ---------------------------------------------------------------------------------------------------------------
# the build step of bayesify(mode="export")
# ---------------------------------------------------------------------------------------------------------------
def analyse(model: nn.Module, args: Sequence[Any], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """Capture the deterministic ``model``; returns ``{"functional": ..., "notes": [...], "seconds": s}``.

    Raises:
        CaptureFailure: torch.export cannot capture it.
    """
    start = time.perf_counter()
    try:
        program, notes = export_forward(model, args, kwargs, dynamic=False)  # the data flow is all it needs
    except Exception as err:  # noqa: BLE001 - reported by the caller (fallback or error)
        raise CaptureFailure("model", err) from err
    graph = program.module().graph
    return {"functional": functional_weights(model, graph, lambda m: mapped_base(m) is not None), "notes": notes,
            "seconds": time.perf_counter() - start}


def build_export(net: nn.Module, cfg: BayesConfig, report: ConversionReport, analysis: Dict[str, Any],
                 args: Sequence[Any], kwargs: Dict[str, Any]) -> None:
    """Convert ``net`` in place from the ``analysis`` of :func:`analyse` and capture it (current mode).

    Raises:
        CaptureFailure: the converted model cannot be captured; ``net`` is converted already (the caller can
            still give it the swap-mode root).
    """
    report.notes.extend(analysis["notes"])
    inside = leaf_ancestors(net, ())
    functional = analysis["functional"]
    convert_modules(net, cfg, report, inside_leaf=inside.get, functional=functional)
    for record in report.converted:
        if record.name in functional and record.how == "attribute":
            record.how = "functional"
            record.reason = record.reason or "weights its forward feeds to a weight op (found in the capture)"
    set_class(net, root="export")
    start = time.perf_counter()
    leaves, spec = flatten_inputs(args, kwargs)
    try:
        captured, notes = capture_converted(net, args, kwargs)
        undeclared = undeclared_sizes(net, captured, leaves, spec)
        if undeclared:
            net.__dict__[STATIC] = True
            captured, notes = capture_converted(net, args, kwargs)
            notes.append(f"the forward fixes input sizes that torch.export left dynamic (at twice the example's "
                         f"sizes the dynamic graph failed: {undeclared}): captured with static shapes, each new "
                         f"input size at its first call")
    except Exception as err:  # noqa: BLE001 - reported by the caller
        raise CaptureFailure("converted model", err) from err
    net.__dict__[CAPTURED] = {structure_key(net, leaves, spec): [captured]}
    for record in report.converted:
        record.used = any(u == record.name or u.startswith(record.name + ".") if record.name else True
                          for u in captured.units)
    report.notes.extend(notes)
    paths = pytree.tree_flatten_with_path((tuple(args), dict(kwargs)))[0]
    note = specialised_note(captured.fixed, [pytree.keystr(path) for path, _ in paths], sorted(captured.lower))
    if note:
        report.notes.append(note)
    constants = [n for n, b in net.named_buffers(recurse=False) if n.startswith(CONSTANT_PREFIX) and b.numel()]
    if constants and net.training:
        report.notes.append(
            f"the train-mode capture holds {len(constants)} constant tensor(s) the forward computed while it was "
            f"captured: a value drawn with numpy or Python's random module (a SpecAugment mask, say) is the same "
            f"at every call. If the model draws such values, use mode='swap'"
        )
    report.notes.append(
        f"export mode: captured with torch.export (model {analysis['seconds']:.1f} s, converted model "
        f"{time.perf_counter() - start:.1f} s, {'train' if net.training else 'eval'} mode); the other mode and "
        f"other input structures are captured at their first call"
    )


def captured_entries(net: nn.Module) -> List[Captured]:
    """Every captured forward of an export-mode root (for tests and inspection)."""
    return [e for entries in net.__dict__.get(CAPTURED, {}).values() if isinstance(entries, list) for e in entries]
