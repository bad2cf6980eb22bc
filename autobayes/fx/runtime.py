"""What a converted model runs at every forward, whichever route converted it: :class:`BayesOutput`, the KL of the
modules that carry one (:func:`kl_units`, :func:`kl_of`, :func:`total_kl`), and the names of the flags autobayes
keeps on modules.

Example:
    >>> bnn = autobayes.bayesify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    >>> list(kl_units(bnn))
    ['0', '2']
    >>> torch.allclose(total_kl(*kl_units(bnn).values()), bnn(torch.randn(3, 4)).kl)
    True
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional

import torch
from torch import Tensor, nn

from ..kl.fused import at_least_float32, fused_kl, sum_kl
from ..nn import BayesLayer, BayesParameter

__all__ = [
    "BayesOutput",
    "kl_units",
    "kl_of",
    "total_kl",
    "sum_kl",
    "kl_disabled",
    "block_kls",
    "add_block_kl",
    "collecting_block_kls",
    "KL_DISABLED",
    "SHARDED_BLOCKS",
    "USED",
    "FORWARD_CODE",
    "FORWARD_FNS",
    "BASE_CLASS",
    "ROOT_MIXIN",
    "POSTERIOR_ATTRS",
]

# ---------------------------------------------------------------------------------------------------------------
# The keys autobayes sets in a module's ``__dict__`` (plain entries: no state-dict key, no nn.Module lookup), and the
# class attributes of the classes it derives (fx/derive.py). Pickles written by 0.1.0 hold these strings: never
# rename them.
# ---------------------------------------------------------------------------------------------------------------
#: On a KL unit: its KL is 0 and is not computed (set by :func:`autobayes.kl_disabled`).
KL_DISABLED = "_autobayes_kl_disabled"
#: On a KL unit of a swap-mode model: whether the current forward called it (forward pre-hooks set it).
USED = "_autobayes_used"
#: On an fx-mode root: ``{"train": source, "eval": source}`` of the rewritten forwards (pickled).
FORWARD_CODE = "_autobayes_code"
#: On an fx-mode root: the forwards compiled from :data:`FORWARD_CODE` (not pickled; rebuilt on load).
FORWARD_FNS = "_autobayes_fns"
#: Class attribute of a derived class: the class it derives from.
BASE_CLASS = "_autobayes_base"
#: Class attribute of a derived class: ``"fx"`` / ``"swap"`` for a converted root, else ``None``.
ROOT_MIXIN = "_autobayes_root"
#: Class attribute of a derived class: the names of its posterior attributes (``("weight",)``).
POSTERIOR_ATTRS = "_autobayes_attrs"


class BayesOutput(NamedTuple):
    """What a Bayesian model's forward returns.

    Attributes:
        output: the deterministic model's output, same structure (tensor, tuple, dict, ...).
        kl: 0-dim tensor, ``sum_l KL(q_l || p_l)`` over the Bayesian layers the forward used (each counted once).
    """

    output: Any
    kl: Tensor


def kl_units(model: nn.Module) -> Dict[str, nn.Module]:
    """``{qualified name: module}`` of the modules of ``model`` that carry a KL, in module order, each once.

    A KL unit is a Bayesian layer (its weight and bias posteriors count through it), or a
    :class:`~autobayes.nn.BayesParameter` that belongs to no Bayesian layer (a posterior attribute such as
    ``attn.in_proj_weight_posterior``, or a weight read functionally). The model's KL is the sum over the units
    its forward used (:func:`total_kl`); every place that needs "the Bayesian layers" asks this function.

    Example:
        >>> bnn = autobayes.bayesify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
        >>> list(kl_units(bnn))
        ['0', '2']
    """
    held = {id(p) for m in model.modules() if isinstance(m, BayesLayer) for p in m.posteriors()}
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, BayesLayer) or (isinstance(m, BayesParameter) and id(m) not in held)
    }


def kl_of(module: nn.Module) -> Tensor:
    """KL of one Bayesian layer or parameter; 0 (not computed) under :func:`autobayes.kl_disabled`.

    Always float32 (or the parameters' own wider dtype): under ``torch.autocast`` the KL is computed with autocast
    switched off, so mixed-precision training never sums millions of KL terms in bf16 / fp16.

    Example:
        >>> layer = autobayes.BayesLinear(4, 2)
        >>> kl_of(layer).dtype
        torch.float32
    """
    mu = module.mu if isinstance(module, BayesParameter) else module.weight_posterior.mu
    if module.__dict__.get(KL_DISABLED, False):
        return mu.new_zeros((), dtype=torch.promote_types(mu.dtype, torch.float32))
    return _kl_in_float32(mu.device.type, module.kl)


def total_kl(*units: nn.Module) -> Tensor:
    """``sum_kl(*map(kl_of, units))``, computed by :func:`autobayes.kl.fused_kl`: the tensors whose KL has one
    per-element form are concatenated and evaluated at once, so the cost in operations does not grow with the
    number of layers. Units under :func:`autobayes.kl_disabled` add 0; the result is float32 (or wider) with
    autocast switched off, as for :func:`kl_of`. The rewritten forward of an fx-mode model ends with a call of it.

    Example:
        >>> layers = [autobayes.BayesLinear(4, 2), autobayes.BayesLinear(2, 1)]
        >>> torch.allclose(total_kl(*layers), kl_of(layers[0]) + kl_of(layers[1]))
        True
    """
    params: List[BayesParameter] = []
    for unit in units:
        if not unit.__dict__.get(KL_DISABLED, False):
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


@contextlib.contextmanager
def kl_disabled(bnn: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the KL is neither computed nor added: ``kl`` is returned as 0 (cheap evaluation).

    Example:
        >>> with torch.no_grad(), autobayes.kl_disabled(bnn):
        ...     probs = torch.stack([bnn(x).output.softmax(-1) for _ in range(10)]).mean(0)
    """
    modules = [m for m in bnn.modules() if isinstance(m, (BayesLayer, BayesParameter))]
    previous = [m.__dict__.get(KL_DISABLED, False) for m in modules]
    try:
        for m in modules:
            m.__dict__[KL_DISABLED] = True
        yield bnn
    finally:
        for m, value in zip(modules, previous):
            m.__dict__[KL_DISABLED] = value


#: Instance-dict key set on a root whose blocks compute and hand in their own KLs (:func:`block_kls`).
SHARDED_BLOCKS = "_autobayes_sharded_blocks"


class _BlockKLs(threading.local):
    def __init__(self) -> None:
        self.kls: Optional[List[Tensor]] = None  # the KLs the blocks of the current forward computed


_BLOCKS = _BlockKLs()


@contextlib.contextmanager
def block_kls() -> Iterator[List[Tensor]]:
    """Inside the block, :func:`add_block_kl` collects the KL each sharded block computed in its own forward
    (:mod:`autobayes.sharding`); the swap-mode root adds them to the KL of the units it read itself. Nested
    blocks share the outermost list. Per thread.

    Example:
        >>> with block_kls() as kls:
        ...     add_block_kl(torch.tensor(1.0))
        >>> kls
        [tensor(1.)]
    """
    if _BLOCKS.kls is not None:
        yield _BLOCKS.kls
        return
    _BLOCKS.kls = []
    try:
        yield _BLOCKS.kls
    finally:
        _BLOCKS.kls = None


def collecting_block_kls() -> bool:
    """Whether a :func:`block_kls` is open: not for a block called on its own, nor for one recomputed by activation
    checkpointing in the backward pass."""
    return _BLOCKS.kls is not None


def add_block_kl(kl: Tensor) -> None:
    """Hand a block's KL to the enclosing :func:`block_kls` (see :func:`collecting_block_kls`)."""
    _BLOCKS.kls.append(kl)
