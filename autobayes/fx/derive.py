"""The classes autobayes derives from a model's own, and the root mixins of both conversion routes.

A converted module keeps its class's methods and attributes: its class becomes a derived class,
``Bayesian<Name>(<mixins>, _Derived, <Name>)``, that adds

* **posterior attributes**: ``module.weight`` returns a sample of ``module.weight_posterior`` (the mean under
  :func:`autobayes.use_mean`), so code that reads ``self.weight`` gets a Bayesian weight;
* for a converted model's root, a **root mixin**: ``"fx"`` runs the rewritten forward of the current mode,
  ``"swap"`` runs the original forward and adds the KL of the layers it called, ``"export"``
  (:class:`autobayes.fx.capture_root.ExportRoot`, registered in :data:`ROOTS` by that module) runs the captured
  graph of the current mode and input structure. All return :class:`~autobayes.fx.runtime.BayesOutput`, and run
  the forward inside :func:`~autobayes.nn.parameter.shared_draws` (one draw per posterior per forward). A
  ``transformers`` model that can generate also gets :class:`autobayes.hf.generate.GenerateRoot` (``generate``
  with one posterior draw per call), a ``transformers.PreTrainedModel`` a ``save_pretrained`` writing posterior
  means and an autobayes checkpoint (:mod:`autobayes.hf.pretrained`), and every root the guard that stops a plain
  ``transformers.Trainer`` at construction (:mod:`autobayes.hf.trainer_guard`). The root's ``forward`` shows the
  model's own signature (``inspect.signature(bnn.forward)`` and ``inspect.signature(bnn)``), which
  ``transformers.Trainer``'s column pruning, accelerate, PEFT and pipelines read.

Derived classes are cached and never named at module level: an instance pickles and deep-copies as
``new_derived(base, root, attrs)`` plus its state, so unpickling rebuilds the class from its base.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import nn

from ..config import BayesConfig
from ..nn.parameter import shared_draws
from ..kl.fused import sum_kl
from .runtime import (BASE_CLASS, FORWARD_CODE, FORWARD_FNS, POSTERIOR_ATTRS, ROOT_MIXIN, SHARDED_BLOCKS, USED,
                      BayesOutput, block_kls, total_kl)

__all__ = ["base_class", "derive_class", "set_class", "new_derived", "strip_state", "compile_forwards", "ROOTS",
           "ROOT_MIXINS"]


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
    """Mixin of every class autobayes derives; pickles and deep-copies through the base class. (It adds no other
    name: a derived class must not shadow its base's methods.)"""

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (new_derived, _derivation(type(self)), self.__getstate__())

    def __deepcopy__(self, memo: Dict[int, Any]) -> Any:
        obj = new_derived(*_derivation(type(self)))
        memo[id(self)] = obj
        obj.__setstate__(copy.deepcopy(self.__getstate__(), memo))
        return obj


# ---------------------------------------------------------------------------------------------------------------
# root mixins
# ---------------------------------------------------------------------------------------------------------------
class _FXRoot:
    """Root mixin of a model converted by graph rewriting: forward runs the rewritten graph of the current mode
    (train / eval graphs can differ) and returns :class:`BayesOutput`."""

    def forward(self, *args: Any, **kwargs: Any) -> BayesOutput:
        fn = self.__dict__[FORWARD_FNS]["train" if self.training else "eval"]
        with shared_draws():  # reads of one posterior inside leaf modules (a tied weight) share one draw
            output, kl = fn(self, *args, **kwargs)
        return BayesOutput(output, kl)

    @property
    def code(self) -> str:
        """The Python source of the rewritten forward (current mode)."""
        return self.__dict__[FORWARD_CODE]["train" if self.training else "eval"]

    def __getstate__(self) -> Dict[str, Any]:
        return strip_state(super().__getstate__())

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        compile_forwards(self)


class _SwapRoot:
    """Root mixin of a model converted in swap mode: the original forward, plus the KL of the Bayesian layers
    it called (marked by forward pre-hooks, see :func:`autobayes.fx.swap.make_swap_root`), each counted once.
    Blocks sharded by :func:`autobayes.distributed.shard` add the KL of their own units themselves (computed in
    their forward, while their parameters are gathered) and clear those units' marks."""

    def forward(self, *args: Any, **kwargs: Any) -> BayesOutput:
        units = [m for m in self.modules() if USED in m.__dict__]
        for m in units:
            m.__dict__[USED] = False
        with shared_draws():  # every read of a posterior in this forward is one draw
            if self.__dict__.get(SHARDED_BLOCKS):  # blocks hand in their KLs (autobayes.distributed.shard)
                with block_kls() as blocks:
                    output = super().forward(*args, **kwargs)
            else:  # no second context here: torch.compile(fullgraph=True) of a tied model fails on it
                blocks, output = [], super().forward(*args, **kwargs)
        kl = total_kl(*[m for m in units if m.__dict__[USED]])
        return BayesOutput(output, sum_kl(kl, *blocks) if blocks else kl)

    def __getstate__(self) -> Dict[str, Any]:
        return strip_state(super().__getstate__())


#: The root mixin of each conversion route ("export" is added by autobayes.fx.capture_root, which needs this module).
ROOTS: Dict[str, type] = {"fx": _FXRoot, "swap": _SwapRoot}
_DERIVED: Dict[Tuple[type, Optional[str], Tuple[str, ...]], type] = {}


# ---------------------------------------------------------------------------------------------------------------
# deriving
# ---------------------------------------------------------------------------------------------------------------
def base_class(module: nn.Module) -> type:
    """The class a (possibly derived) module was created with."""
    return getattr(type(module), BASE_CLASS, type(module))


def derive_class(base: type, root: Optional[str] = None, attrs: Sequence[str] = ()) -> type:
    """The class of ``base`` with posterior attributes ``attrs`` and, for a converted model, the root mixin
    ``root`` (``"fx"``, ``"swap"`` or ``"export"``). Cached; ``__module__`` is kept (torch.fx's leaf rule looks at it)."""
    key = (base, root, tuple(sorted(attrs)))
    cls = _DERIVED.get(key)
    if cls is None:
        bases: Tuple[type, ...] = (_Derived, base) if root is None else (ROOTS[root], *_hf_mixins(base), _Derived, base)
        namespace: Dict[str, Any] = {name: _PosteriorAttribute(name) for name in key[2]}
        if root is not None:  # the root's forward takes (*args, **kwargs) but shows the model's own signature
            namespace.update(forward=_signed_forward(ROOTS[root].forward, base), __signature__=_RootSignature())
        namespace.update({BASE_CLASS: base, ROOT_MIXIN: root, POSTERIOR_ATTRS: key[2], "__module__": base.__module__})
        cls = type(base)("Bayesian" + base.__name__, bases, namespace)  # not "Bayes...": those are autobayes.nn
        cls.__qualname__ = "Bayesian" + base.__qualname__
        _DERIVED[key] = cls
    return cls


#: ``(applies to base class?, root mixin)`` pairs registered by other modules: :mod:`autobayes.hf.pretrained`
#: adds ``save_pretrained`` to converted ``transformers.PreTrainedModel`` classes this way (it imports this module).
ROOT_MIXINS: List[Tuple[Callable[[type], bool], type]] = []


def _hf_mixins(base: type) -> Tuple[type, ...]:
    """The root mixins for ``base``: ``generate`` for a ``transformers`` model that can generate
    (:mod:`autobayes.hf.generate`), the registered :data:`ROOT_MIXINS` that apply, and on every root the guard that
    stops a plain ``transformers.Trainer`` at construction (:mod:`autobayes.hf.trainer_guard`)."""
    from ..hf.generate import GenerateRoot, can_generate
    from ..hf.trainer_guard import TrainerGuard

    registered = tuple(mixin for applies, mixin in ROOT_MIXINS if applies(base))
    return ((GenerateRoot,) if can_generate(base) else ()) + registered + (TrainerGuard,)


def _signed_forward(root_forward: Any, base: type) -> Any:
    """``root_forward`` (``(self, *args, **kwargs)``) showing the signature and docstring of ``base.forward``:
    what ``transformers.Trainer``'s column pruning, accelerate, PEFT and pipelines read with
    ``inspect.signature(model.forward)``."""
    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return root_forward(self, *args, **kwargs)

    try:
        forward.__signature__ = inspect.signature(base.forward)  # type: ignore[attr-defined]
    except (TypeError, ValueError):  # a builtin or C forward: keep (*args, **kwargs)
        pass
    forward.__doc__ = root_forward.__doc__ or base.forward.__doc__
    forward.__qualname__ = f"Bayesian{base.__qualname__}.forward"
    return forward


class _RootSignature:
    """``inspect.signature(bnn)`` of a converted root: its forward's, the model's own arguments (a class-level
    lookup gives ``None``, so ``inspect.signature(type(bnn))`` still shows the constructor's)."""

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return None if obj is None else inspect.signature(obj.forward)


def _derivation(cls: type) -> Tuple[type, Optional[str], Tuple[str, ...]]:
    return getattr(cls, BASE_CLASS), getattr(cls, ROOT_MIXIN), getattr(cls, POSTERIOR_ATTRS)


def new_derived(base: type, root: Optional[str], attrs: Tuple[str, ...]) -> Any:
    """An empty instance of a derived class (what unpickling and deep-copying start from)."""
    cls = derive_class(base, root, attrs)
    return cls.__new__(cls)


def set_class(module: nn.Module, *, root: Optional[str] = None, attrs: Sequence[str] = ()) -> None:
    """Give ``module`` its derived class (merging with what it already derives)."""
    cls = type(module)
    all_attrs = set(getattr(cls, POSTERIOR_ATTRS, ())) | set(attrs)
    root = root if root is not None else getattr(cls, ROOT_MIXIN, None)
    module.__class__ = derive_class(base_class(module), root, tuple(all_attrs))


def strip_state(state: Dict[str, Any]) -> Dict[str, Any]:
    """The pickled state of a converted root: no compiled functions, no unpicklable ``filter_fn``."""
    state = dict(state)
    state.pop(FORWARD_FNS, None)
    cfg = state.get("bayes_config")
    if isinstance(cfg, BayesConfig) and cfg.filter_fn is not None:
        state["bayes_config"] = dataclasses.replace(cfg, filter_fn=None)
    return state


def compile_forwards(model: nn.Module) -> None:
    """Compile the rewritten forwards of an fx-mode root from their source (one function per distinct source)."""
    from torch.fx.graph_module import _forward_from_src

    code = model.__dict__[FORWARD_CODE]
    fns: Dict[str, Any] = {}
    for mode, src in code.items():
        fns[mode] = fns.get(next((m for m in fns if code[m] == src), None)) or _forward_from_src(_unwrapped(src), {})
    model.__dict__[FORWARD_FNS] = fns


def _unwrapped(src: str) -> str:
    """``src`` without the ``torch.fx._symbolic_trace.wrap("...")`` statements torch.fx emits for autowrapped
    functions: they only matter to a later re-trace of the code, and executed here they add the function's
    dotted name to torch.fx's global table of functions to patch, which breaks every later trace in the process
    (``KeyError: 'torch.nn.utils.rnn.pack_padded_sequence'``)."""
    return "\n".join(line for line in src.splitlines() if not line.startswith("torch.fx._symbolic_trace.wrap("))
