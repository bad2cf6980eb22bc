"""The swap-mode root, for models no graph route can capture.

The layers are converted in place (:func:`autobayes.fx.convert.convert_modules`); every KL unit
(:func:`autobayes.fx.runtime.kl_units`) gets a forward pre-hook that marks it as called, and the root's class
gets the ``"swap"`` root mixin (:mod:`autobayes.fx.derive`), whose forward runs the original forward and adds the
KL of the units it called, each counted once.

Weights a forward uses functionally -- a raw parameter fed to ``F.linear`` / ``matmul`` / ``addmm`` / ``einsum``
/ ``F.conv*`` by a module of no known layer type -- are found by a recording run (:func:`record_functional_weights`):
the deterministic forward runs once on example inputs under a ``TorchFunctionMode`` that notes which parameters
reach a weight argument of those operations (the table :data:`autobayes.fx.rewrite.WEIGHT_OPS` of the fx route),
directly or through input-independent ops (``weight.t()``). They become posterior attributes, so every read is a
posterior sample.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, List, Optional, Set, Tuple

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from ..hf.inputs import example_inputs, is_hf_model
from ..nn import BayesLayer, BayesParameter
from .convert import mapped_base
from .derive import new_derived as _rebuild  # noqa: F401  (pickles written by 0.1.0 name autobayes.fx.swap._rebuild)
from .derive import set_class
from .rewrite import WEIGHT_OPS
from .runtime import USED, kl_units
from .runtime import total_kl  # noqa: F401  (the forward code pickled by 0.1.0 imports it from here)

__all__ = ["make_swap_root", "hook_kl_units", "record_functional_weights", "swap_example_inputs"]

_WEIGHT_METHODS = tuple(getattr(torch.Tensor, n) for n in
                        ("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "mv", "addmm", "baddbmm", "addmv"))


def _mark_used(module: nn.Module, args: Any) -> None:
    # the forward pre-hook of every KL unit; pickled with the model by its qualified name: keep it here
    module.__dict__[USED] = True


def make_swap_root(model: nn.Module) -> None:
    """Hook every KL unit of ``model`` and give the root the swap-mode forward.

    Example:
        >>> bnn = autobayes.bayesify(model, mode="swap")  # calls it; bnn(x) returns BayesOutput(output, kl)
    """
    hook_kl_units(model)
    set_class(model, root="swap")


def hook_kl_units(model: nn.Module) -> List[nn.Module]:
    """Give every KL unit of ``model`` the forward pre-hook that marks it as called (``USED``); returns the units.
    The swap-mode root and the capture route's eager fallback collect the KL of the units a forward called."""
    units = list(kl_units(model).values())
    for m in units:
        m.__dict__[USED] = False
        m.register_forward_pre_hook(_mark_used)
    return units


class _WeightRecorder(TorchFunctionMode):
    """Notes the parameters (``id``) that reach a weight argument of a weight op, directly or derived."""

    def __init__(self, params: Set[int]) -> None:
        super().__init__()
        self.params = params
        self.derived: Dict[int, int] = {}  # id(tensor computed from a parameter alone) -> id(parameter)
        self.keep: List[Tensor] = []  # keeps those tensors alive, so that their ids are not reused
        self.found: Set[int] = set()

    def _source(self, x: Any) -> Optional[int]:
        if not isinstance(x, Tensor):
            return None
        return id(x) if id(x) in self.params else self.derived.get(id(x))

    def __torch_function__(self, func: Any, types: Any, args: Tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in WEIGHT_OPS or func in _WEIGHT_METHODS:
            _, positions, names = WEIGHT_OPS.get(func, (None, None, ()))
            if positions is None:
                weights = pytree.tree_leaves((args, kwargs))
            else:
                weights = [args[i] for i in positions if i < len(args)] + [kwargs[k] for k in names if k in kwargs]
            self.found.update(s for s in map(self._source, weights) if s is not None)
            return out
        tensors = [a for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, Tensor)]
        sources = [self._source(t) for t in tensors]
        if tensors and all(s is not None for s in sources):  # input-independent: a function of parameters only
            for o in pytree.tree_leaves(out):
                if isinstance(o, Tensor):
                    self.derived[id(o)] = sources[0]
                    self.keep.append(o)
        return out


def record_functional_weights(model: nn.Module, inputs: Optional[Tuple[tuple, Dict[str, Any]]]) -> Dict[str, Tuple[str, ...]]:
    """``{module qualname: (parameter names)}``: the raw parameters of modules of no known layer type that the
    forward of ``model`` feeds to a weight op, found by running it once on ``inputs`` (``(args, kwargs)``; eval
    mode, no gradient, the random state restored). Without ``inputs``, a Hugging Face model runs on inputs built
    from its config (:func:`swap_example_inputs`); otherwise the result is ``{}``. A forward that fails warns and
    gives ``{}`` (the known layer types are still converted).

    Example:
        >>> class Gated(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.w = nn.Parameter(torch.randn(4, 3))
        ...     def forward(self, x):
        ...         return x @ self.w
        >>> record_functional_weights(Gated(), ((torch.randn(2, 4),), {}))
        {'': ('w',)}
    """
    inputs = swap_example_inputs(model, inputs)
    if inputs is None:
        return {}
    owners: Dict[int, List[Tuple[str, nn.Module, str]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, (BayesLayer, BayesParameter)):
            continue
        for attr, p in module._parameters.items():
            if p is not None:
                owners.setdefault(id(p), []).append((name, module, attr))
    recorder = _WeightRecorder(set(owners))
    args, kwargs = inputs
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]), recorder:
            model(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - the recording is an analysis; the layer swap still applies
        warnings.warn(
            f"autobayes could not run {type(model).__name__} on the example inputs to find the weights its forward "
            f"uses functionally ({type(err).__name__}: {err}); only known layer types become Bayesian. Pass "
            f"bayesify(model, example_inputs=...) that the model accepts",
            stacklevel=3,
        )
        return {}
    finally:
        model.train(was_training)
    found: Dict[str, List[str]] = {}
    for pid, places in owners.items():  # module order, parameter order: the same result at every run
        if pid in recorder.found:
            for name, module, attr in places:
                if mapped_base(module) is None and attr not in found.get(name, []):
                    found.setdefault(name, []).append(attr)
    return {name: tuple(attrs) for name, attrs in found.items()}


def swap_example_inputs(model: nn.Module, inputs: Optional[Tuple[tuple, Dict[str, Any]]]) -> Optional[Tuple[tuple, Dict[str, Any]]]:
    """The ``(args, kwargs)`` of the recording run: the caller's example inputs (``inputs``), else for a Hugging
    Face model ``autobayes.hf.example_inputs(model)`` (keyword inputs built from its config), else ``None``."""
    if inputs is not None:
        return inputs
    if not is_hf_model(model):
        return None
    try:
        built = example_inputs(model)
    except Exception as err:  # noqa: BLE001 - the recording run is an analysis: the known layer types still convert
        warnings.warn(
            f"autobayes could not build example inputs for {type(model).__name__} ({type(err).__name__}: {err}); "
            f"weights its forward uses functionally are not searched for. Pass bayesify(model, example_inputs=...)",
            stacklevel=3,
        )
        return None
    return ((), dict(built)) if isinstance(built, dict) else (tuple(built) if isinstance(built, (tuple, list)) else (built,), {})
