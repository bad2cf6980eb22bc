"""The capture route of :func:`autobayes.bayesify` (``mode="export"``): capturing a forward with ``torch.export``.

For models torch.fx's symbolic tracing cannot handle (Hugging Face ``transformers`` models, forwards with Python
control flow on shapes, ...), ``torch.export.export(model, args, kwargs, strict=False)`` runs the forward on fake
tensors and records every aten operation it performs. This module holds what both uses of such a capture share:

* :func:`export_forward`: the capture itself, with every dimension of every tensor input dynamic
  (``Dim.AUTO``) except those a model fixes anyway (an image's channels, height and width:
  :data:`STATIC_AFTER_BATCH`), so the graph serves every batch size and sequence length; a dimension the forward
  forces to one value (a Whisper encoder's input length) is *specialised*, and :class:`Captured` records it so
  that an input of another size is captured anew instead of running a graph built for the wrong shape (a size
  fixed without torch.export declaring it: :mod:`autobayes.fx.capture_sizes`);
* :func:`functional_weights`: the analysis of the deterministic model's capture: which parameters reach a weight
  argument of an aten linear / addmm / mm / bmm / matmul / baddbmm / einsum / convolution, directly or through
  input-independent ops (``t``, ``transpose``, ``permute``, ``view``, ...). Those of modules of no known layer
  type (``transformers``' ``Conv1D``, a raw ``nn.Parameter`` fed to ``matmul``) are handed to
  :func:`autobayes.fx.convert.convert_modules` as ``functional=``;
* :func:`structure_key`: what a graph is cached by (train/eval, the pytree structure of the inputs -- including
  which optional arguments were passed and which are ``None`` -- their non-tensor values, tensor ranks, dtypes
  and devices).

The rewriting of the converted model's capture is :mod:`autobayes.fx.capture_graph`; the root that runs it,
:mod:`autobayes.fx.capture_root`.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
from torch import fx, nn
from torch.utils import _pytree as pytree

from .rewrite import input_dependent

__all__ = ["Captured", "export_forward", "functional_weights", "structure_key", "flatten_inputs", "WEIGHT_ATEN"]

_aten = torch.ops.aten
#: aten ops that consume weights -> positions of their weight arguments (``None``: every tensor argument).
WEIGHT_ATEN: Dict[Any, Optional[Tuple[int, ...]]] = {
    _aten.linear: (1, 2),
    _aten.addmm: None,
    _aten.mm: None,
    _aten.bmm: None,
    _aten.matmul: None,
    _aten.baddbmm: None,
    _aten.addmv: None,
    _aten.mv: None,
    _aten.einsum: None,
    _aten.bilinear: (2, 3),
    _aten.convolution: (1, 2),
    _aten.conv1d: (1, 2),
    _aten.conv2d: (1, 2),
    _aten.conv3d: (1, 2),
    _aten.conv_transpose1d: (1, 2),
    _aten.conv_transpose2d: (1, 2),
    _aten.conv_transpose3d: (1, 2),
}


@dataclass
class Captured:
    """One captured forward of a converted model, for one input structure.

    Attributes:
        fn: the compiled rewritten forward, ``fn(root, *flat_inputs) -> (flat_outputs, kl)``.
        out_spec: the pytree spec of the model's output (a ``ModelOutput`` stays a ``ModelOutput``).
        source: the Python source of ``fn`` (what :attr:`code` shows).
        fixed: ``{(input leaf index, dim): size}`` of the dimensions the capture specialised.
        lower: ``{(input leaf index, dim): minimum size}`` of the dynamic dimensions (usually 2: torch.export
            specialises sizes 0 and 1).
        units: qualified names of the KL units the graph uses (its KL sums theirs).
    """

    fn: Callable
    out_spec: Any
    source: str
    fixed: Dict[Tuple[int, int], int] = field(default_factory=dict)
    lower: Dict[Tuple[int, int], int] = field(default_factory=dict)
    units: Tuple[str, ...] = ()

    def accepts(self, leaves: Sequence[Any]) -> bool:
        """Whether the flat inputs ``leaves`` have the sizes this graph was captured for."""
        for (i, d), size in self.fixed.items():
            if leaves[i].shape[d] != size:
                return False
        for (i, d), low in self.lower.items():
            if leaves[i].shape[d] < low:
                return False
        return True


def flatten_inputs(args: Sequence[Any], kwargs: Dict[str, Any]) -> Tuple[List[Any], Any]:
    """The flat leaves and pytree spec of a call's ``(args, kwargs)``."""
    return pytree.tree_flatten((tuple(args), dict(kwargs)))


def structure_key(model: nn.Module, leaves: Sequence[Any], spec: Any) -> Tuple[Any, ...]:
    """What a captured graph is valid for: train/eval, the model's device, the autocast state (a capture under
    autocast records its casts), the inputs' pytree structure (so which optional arguments were passed), their
    non-tensor values, and each tensor's rank, dtype and device."""
    param = next(model.parameters(), None)
    device = None if param is None else param.device
    autocast = None
    if device is not None and torch.is_autocast_enabled(device.type):
        autocast = (device.type, torch.get_autocast_dtype(device.type))
    meta = tuple(
        ("T", t.dim(), t.dtype, str(t.device)) if isinstance(t, torch.Tensor) else ("V", repr(t)) for t in leaves
    )
    return (model.training, str(device), autocast, str(spec), meta)


def _register_caches(model: nn.Module) -> None:
    """Let torch.export see through ``transformers``' cache objects (a causal LM returns a ``DynamicCache``, an
    encoder-decoder an ``EncoderDecoderCache``, by default): ``transformers`` registers their pytrees itself
    when asked; nothing happens when it is not imported."""
    if "transformers" not in sys.modules:
        return
    try:
        from transformers.exporters.exporter_dynamo import register_cache_pytrees_for_model
    except Exception:  # noqa: BLE001 - an older transformers: only DynamicCache has a registration
        register_cache_pytrees_for_model = None
    try:
        if register_cache_pytrees_for_model is not None:
            register_cache_pytrees_for_model(model)
        else:
            from transformers.integrations.executorch import register_dynamic_cache_export_support

            register_dynamic_cache_export_support()
    except Exception:  # noqa: BLE001 - registered already in another way, or not available: the cache stays opaque
        pass


#: Inputs of a ``transformers`` model whose dimensions after the batch the model fixes anyway (a vision model's
#: image side and channels): captured static. With every dimension symbolic, the shape guards of windowed
#: attention (Swin) made one capture take minutes; another image size is captured anew at its first call.
STATIC_AFTER_BATCH = ("pixel_values", "pixel_mask")


def _dynamic_shapes(model: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``Dim.AUTO`` on every dimension (of size 2 or more) of every tensor input, keyed by the forward's argument
    names; only the batch dimension of the inputs of :data:`STATIC_AFTER_BATCH`."""
    from torch.export import Dim

    def dims(x: Any, first_only: bool = False) -> Any:  # sizes 0 and 1 are specialised anyway: left static
        if not isinstance(x, torch.Tensor):
            return None
        return {i: Dim.AUTO for i in range(1 if first_only else x.dim()) if x.shape[i] > 1}

    def spec(name: str, value: Any) -> Any:
        return pytree.tree_map(lambda x: dims(x, name in STATIC_AFTER_BATCH), value)

    signature = inspect.signature(model.forward)
    bound = signature.bind(*args, **kwargs).arguments
    var_keyword = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)
    # a converted root's forward is (*args, **kwargs): its keyword inputs keep their own names
    return {name: {k: spec(k, v) for k, v in value.items()} if name == var_keyword else spec(name, value)
            for name, value in bound.items()}


def export_forward(model: nn.Module, args: Sequence[Any], kwargs: Dict[str, Any], *,
                   dynamic: bool = True) -> Tuple[Any, List[str]]:
    """``torch.export.export(model, args, kwargs, strict=False)`` with every tensor dimension dynamic; returns the
    exported program and notes (a capture that needed static shapes).

    ``dynamic=False`` captures with static shapes: about three times faster (no symbolic shape reasoning), enough
    for an analysis of the data flow.

    Raises:
        Exception: whatever torch.export raises for a forward it cannot capture (the caller reports it).
    """
    from torch.export import export

    _register_caches(model)
    args, kwargs = tuple(args), dict(kwargs)
    notes: List[str] = []
    with torch.random.fork_rng(devices=[]):
        if not dynamic:
            return export(model, args, kwargs, strict=False), notes
        try:
            program = export(model, args, kwargs, strict=False, dynamic_shapes=_dynamic_shapes(model, args, kwargs))
        except Exception as err:  # noqa: BLE001 - retried with static shapes, then raised
            program = export(model, args, kwargs, strict=False)
            notes.append(f"captured with static shapes (dynamic ones failed: {type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200]}); other input sizes are captured anew")
    return program, notes


def shape_constraints(program: Any, graph: fx.Graph) -> Tuple[Dict[Tuple[int, int], int], Dict[Tuple[int, int], int]]:
    """``(fixed, lower)`` of the placeholders of an unlifted ``graph`` (see :class:`Captured`)."""
    ranges = {str(sym): r for sym, r in program.range_constraints.items()}
    fixed: Dict[Tuple[int, int], int] = {}
    lower: Dict[Tuple[int, int], int] = {}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for i, node in enumerate(placeholders):
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            continue
        for d, size in enumerate(val.shape):
            if isinstance(size, int):
                fixed[(i, d)] = size
            else:
                r = ranges.get(str(size.node.expr))
                low = getattr(r, "lower", 2) if r is not None else 2
                try:
                    lower[(i, d)] = int(low)
                except (TypeError, ValueError):
                    lower[(i, d)] = 2
    return fixed, lower


def specialised_note(fixed: Dict[Tuple[int, int], int], names: Sequence[str],
                     dynamic: Sequence[Tuple[int, int]] = ()) -> Optional[str]:
    """A note naming the input dimensions a capture specialised and those it kept dynamic (``None`` when there
    is nothing to say)."""
    def name(i: int) -> str:
        return names[i] if i < len(names) else str(i)

    parts = []
    if fixed:
        fixed_dims = ", ".join(f"{name(i)}[dim {d}] = {size}" for (i, d), size in sorted(fixed.items()))
        parts.append(f"the capture specialised these input dimensions (the forward fixes them, they were 0 / 1 in "
                     f"the example, or an image side): {fixed_dims}; inputs of other sizes are captured anew")
    if dynamic:
        parts.append(f"dynamic input dimensions (one graph for every size): "
                     f"{', '.join(f'{name(i)}[dim {d}]' for i, d in sorted(dynamic))}")
    return "; ".join(parts) or None


# ---------------------------------------------------------------------------------------------------------------
# analysis of the deterministic capture
# ---------------------------------------------------------------------------------------------------------------
def weight_arguments(node: fx.Node) -> List[Any]:
    """The arguments of ``node`` in weight position, when it is a weight op of :data:`WEIGHT_ATEN`."""
    if node.op != "call_function":
        return []
    packet = getattr(node.target, "overloadpacket", None)
    if packet not in WEIGHT_ATEN:
        return []
    positions = WEIGHT_ATEN[packet]
    if positions is None:
        flat = pytree.tree_leaves((node.args, node.kwargs))
        return [a for a in flat if isinstance(a, fx.Node)]
    return [node.args[i] for i in positions if i < len(node.args)] + [
        v for k, v in node.kwargs.items() if k in ("weight", "bias")
    ]


def _source_get_attr(value: Any, dep: Set[fx.Node], depth: int = 16) -> Optional[fx.Node]:
    """Follow ``value``'s first-argument chain of input-independent ops back to a ``get_attr`` node."""
    node = value
    while isinstance(node, fx.Node) and depth > 0 and node not in dep:
        if node.op == "get_attr":
            return node
        if node.op != "call_function" or not node.args:
            return None
        node = node.args[0]
        depth -= 1
    return None


def weight_sources(graph: fx.Graph) -> Dict[str, fx.Node]:
    """``{get_attr target: node}`` of the tensors that reach a weight argument of a weight op."""
    dep = input_dependent(graph)
    found: Dict[str, fx.Node] = {}
    for node in graph.nodes:
        for arg in weight_arguments(node):
            src = _source_get_attr(arg, dep)
            if src is not None:
                found.setdefault(src.target, src)
    return found


def functional_weights(model: nn.Module, graph: fx.Graph, is_layer: Callable[[nn.Module], bool]) -> Dict[str, Tuple[str, ...]]:
    """``{module qualname: parameter names}`` for :func:`autobayes.fx.convert.convert_modules`' ``functional=``:
    the parameters the captured ``graph`` feeds to weight ops, owned by modules that are not layers of a known type
    (``is_layer``; those are converted anyway). A tensor shared with such a layer is left to the layer (the
    layer conversion decides how a tie is kept)."""
    aliases: Dict[int, List[Tuple[str, str, nn.Module]]] = {}
    for owner_path, owner in model.named_modules(remove_duplicate=False):
        for attr, p in owner._parameters.items():
            if isinstance(p, nn.Parameter):
                aliases.setdefault(id(p), []).append((owner_path, attr, owner))
    functional: Dict[str, List[str]] = {}
    for target in weight_sources(graph):
        owner_path, _, attr = target.rpartition(".")
        try:
            owner = model.get_submodule(owner_path)
        except AttributeError:
            continue
        param = owner._parameters.get(attr)
        if not isinstance(param, nn.Parameter):
            continue
        users = aliases.get(id(param), [])
        if any(is_layer(m) for _, _, m in users):
            continue
        for path, name, _ in users:
            names = functional.setdefault(path, [])
            if name not in names:
                names.append(name)
    return {path: tuple(names) for path, names in functional.items()}
