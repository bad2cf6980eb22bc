"""autobayes' own low-rank adapters: :class:`LoRALinear` and the choice of the layers that get one.

A LoRA layer (Hu et al., 2021) keeps a pretrained linear layer frozen and learns a low-rank update of it:
``y = base(x) + (alpha / r) * B(A(x))`` with ``A: in -> r`` and ``B: r -> out``, ``B`` initialised to zero (so
the wrapped model starts exactly where the pretrained one was). ``A`` and ``B`` are plain ``nn.Linear`` layers:
:func:`autobayes.bayesify` then turns them, and only them, into ``BayesLinear`` layers, so the state dict, the
KL, the report and :func:`autobayes.use_mean` follow as for any Bayesian layer.

The linear layers are ``nn.Linear`` (and its subclasses) and the modules of other libraries whose forward is an
affine map of their input through a weight they read functionally, listed in :data:`LINEAR_CLASSES`:
transformers' ``Conv1D`` (GPT-2's matrices, weight stored transposed as ``(in, out)``), which swap mode and the
capture route already convert as a weight fed to ``torch.addmm`` (:data:`autobayes.fx.convert.FUNCTIONAL_WEIGHT_CLASSES`).
A layer whose forward is not that affine map, or whose weight another module reads (``nn.MultiheadAttention``'s
``out_proj``), gets the update on its weight instead (:mod:`autobayes.adapters.parametrized`).
"""

from __future__ import annotations

import copy
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..config import BayesConfig
from ..errors import ConfigError
from ..fx.convert import FUNCTIONAL_WEIGHT_CLASSES, functional_weights
from ..fx.derive import base_class

__all__ = ["LoRALinear", "LINEAR_CLASSES", "linear_shape", "add_lora", "lora_candidates", "check_rank"]

#: Modules of other libraries (by ``(module, qualname)``, imported by nothing here) that are affine maps of their
#: input ``x @ weight + bias`` with ``weight`` stored ``(in, out)``: LoRA adapts them like an ``nn.Linear``.
LINEAR_CLASSES = {key for key in FUNCTIONAL_WEIGHT_CLASSES if key == ("transformers.pytorch_utils", "Conv1D")}


def linear_shape(module: nn.Module) -> Optional[Tuple[int, int, bool]]:
    """``(in_features, out_features, transposed)`` of a layer LoRA can adapt, else ``None``; ``transposed``: the
    weight is stored ``(in, out)`` (transformers' ``Conv1D``).

    Example:
        >>> linear_shape(nn.Linear(16, 4))
        (16, 4, False)
    """
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, False
    base = base_class(module)
    weight = module._parameters.get("weight")
    if (base.__module__, base.__qualname__) in LINEAR_CLASSES and isinstance(weight, Tensor) and weight.dim() == 2:
        return int(weight.shape[0]), int(weight.shape[1]), True
    return None


class LoRALinear(nn.Module):
    """A frozen linear layer (``base_layer``) plus a low-rank update ``scaling * lora_B(lora_A(x))``.

    Args:
        base: the pretrained layer, an ``nn.Linear`` or a module of :data:`LINEAR_CLASSES` (GPT-2's ``Conv1D``);
            its parameters are frozen (``requires_grad=False``), never copied.
        rank: ``r``, the inner dimension of the update (an integer >= 1).
        alpha: the update is scaled by ``alpha / rank`` (LoRA's convention; ``alpha = rank`` gives 1).

    ``lora_A`` starts as ``nn.Linear``'s own initialisation (Kaiming uniform, as in PEFT) and ``lora_B`` at zero.
    ``weight`` / ``bias`` return the base layer's (for code that reads ``layer.weight.dtype``, as PEFT's layers
    do); the forward adds the update.

    Example:
        >>> layer = LoRALinear(nn.Linear(16, 4), rank=2, alpha=4)
        >>> x = torch.randn(3, 16)
        >>> torch.equal(layer(x), layer.base_layer(x))  # B = 0: the pretrained output
        True
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        shape = linear_shape(base)
        if shape is None:
            raise ConfigError(f"LoRALinear wraps an nn.Linear or transformers' Conv1D, got {type(base).__name__}")
        rank = check_rank(rank)
        self.base_layer = base.requires_grad_(False)
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(shape[0], rank, bias=False, **factory)
        self.lora_B = nn.Linear(rank, shape[1], bias=False, **factory)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @property
    def in_features(self) -> int:
        return self.lora_A.in_features

    @property
    def out_features(self) -> int:
        return self.lora_B.out_features

    @property
    def weight(self) -> Tensor:
        """The frozen base weight (without the update; see :func:`autobayes.merge_adapters` for the sum)."""
        return self.base_layer.weight

    @property
    def bias(self) -> Optional[Tensor]:
        return self.base_layer.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling

    def merged(self, a: Tensor, b: Tensor) -> nn.Module:
        """A copy of the base layer (its own type) with ``scaling * b @ a`` added to its weight (transposed for a
        weight stored ``(in, out)``); ``a`` / ``b`` are the adapter matrices to fold, e.g. the posterior means."""
        out = copy.deepcopy(self.base_layer)
        update = self.scaling * (b.to(out.weight.dtype) @ a.to(out.weight.dtype))
        with torch.no_grad():
            out.weight.add_(update.t() if linear_shape(out)[2] else update)
        out.train(self.training)
        return out

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, scaling={self.scaling:g}"


def check_rank(rank: object) -> int:
    """``rank`` as an int, or a :class:`ConfigError` saying what it must be."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ConfigError(f"rank must be a positive integer (the adapters' inner dimension r), got {rank!r}; "
                          f"e.g. bayesify(model, adapter='lora', rank=8)")
    return rank


def lora_candidates(model: nn.Module, config: BayesConfig, inside_torch: dict, found: Optional[dict] = None
                    ) -> Tuple[List[Tuple[str, nn.Module]], List[Tuple[str, nn.Module, Tuple[str, ...]]],
                               List[Tuple[str, str, str]]]:
    """The layers of ``model`` that get an adapter: ``(wrapped, parametrized, others)``.

    ``wrapped``: the linear layers (:func:`linear_shape`) whose forward is the affine map itself, wrapped in a
    :class:`LoRALinear`. ``parametrized``: ``(name, module, weight names)`` of the 2-d weights a forward reads
    itself, adapted by a weight parametrization (:mod:`autobayes.adapters.parametrized`): those of the modules in
    :func:`autobayes.fx.convert.functional_weights`' tables (``nn.MultiheadAttention``'s ``in_proj_weight``),
    of a linear layer inside a ``torch.nn`` module that reads it (``inside_torch``: module name -> that parent;
    ``nn.MultiheadAttention``'s ``out_proj``), of a ``Linear`` subclass with its own forward, and ``found``
    (``{module name: parameter names}`` a recording run saw fed to a weight op). ``others``: ``(name, type,
    reason)`` of the rest.

    ``config``'s ``layer_types`` / ``include`` / ``exclude`` / ``filter_fn`` / ``overrides`` select them by their
    own names (:meth:`BayesConfig.resolve_layer`; a weight read functionally counts as ``nn.Linear``).

    Raises:
        ConfigError: ``layer_types`` names a type other than ``nn.Linear`` (or ``Conv1D``), or ``include`` names a
            layer with no weight LoRA adapts.
    """
    if config.layer_types is not None:
        others = [getattr(t, "__name__", t) for t in config.layer_types
                  if not (isinstance(t, type) and issubclass(nn.Linear, t)) and t not in ("Linear", "Conv1D")
                  and getattr(t, "__qualname__", None) != "Conv1D"]
        if others:
            raise ConfigError(f"adapter='lora' adds adapters to linear layers only (nn.Linear, transformers' "
                              f"Conv1D); layer_types={others} names other types. Use layer_types=['Linear'] (or "
                              f"leave it out) and select layers with include=[...]")
    wrapped: List[Tuple[str, nn.Module]] = []
    parametrized: List[Tuple[str, nn.Module, Tuple[str, ...]]] = []
    others: List[Tuple[str, str, str]] = []
    for name, module in model.named_modules():
        exact = name in (config.include or ())
        wrap = linear_shape(module) is not None and name not in inside_torch and _affine_forward(module)
        weights, skipped = ((), ()) if wrap else _read_weights(name, module, found or {})
        for attr, dim in skipped:
            why = f"no adapter for its {dim}-d weight {attr!r} (a convolution's): LoRA adapts 2-d weights only"
            others.append((name, type(module).__name__, why))
        if not wrap and not weights:
            if exact and _has_weights(module):
                raise ConfigError(
                    f"include names {name!r}, a {type(module).__name__}: adapter='lora' adds adapters to nn.Linear "
                    f"layers only (and transformers' Conv1D, or 2-d weights a forward reads itself). Name its "
                    f"linear layers instead (see print(autobayes.inspect_model(model))), or make it Bayesian "
                    f"without adapters: bayesify(model, include=[{name!r}])")
            continue
        if name == "":
            raise ConfigError("the model itself is a linear layer (or reads its own weight): wrap it in a module "
                              "(nn.Sequential(layer)) to give it an adapter")
        resolved, reason = config.resolve_layer(name, module, as_type=nn.Linear)
        if resolved is None:
            others.append((name, type(module).__name__, f"no adapter ({reason}): frozen, deterministic"))
        elif wrap:
            wrapped.append((name, module))
        else:
            parametrized.append((name, module, weights))
    return wrapped, parametrized, others


def _affine_forward(module: nn.Module) -> bool:
    """Whether ``module``'s forward is its class's affine map (not a ``Linear`` subclass's own forward)."""
    return not isinstance(module, nn.Linear) or base_class(module).forward is nn.Linear.forward


def _read_weights(name: str, module: nn.Module, found: dict) -> Tuple[Tuple[str, ...], Tuple[Tuple[str, int], ...]]:
    """The 2-d weights of ``module`` a forward reads itself, and ``(name, dim)`` of the others (convolutions')."""
    if linear_shape(module) is not None:
        names: Tuple[str, ...] = ("weight",)
    else:
        names = tuple(found.get(name, ())) or functional_weights(module) or ()
    params = {n: module._parameters.get(n) for n in names}
    params = {n: p for n, p in params.items() if isinstance(p, nn.Parameter)}
    return (tuple(n for n, p in params.items() if p.dim() == 2),
            tuple((n, p.dim()) for n, p in params.items() if p.dim() > 2))


def add_lora(model: nn.Module, layers: List[Tuple[str, nn.Module]], rank: int, alpha: float) -> List[str]:
    """Replace each ``(name, layer)`` of ``layers`` in ``model`` by a :class:`LoRALinear` around it, in place,
    at every name the layer is registered under; returns the names of the new adapter matrices."""
    matrices: List[str] = []
    wrapped = {}
    for name, layer in layers:
        if id(layer) not in wrapped:
            wrapped[id(layer)] = LoRALinear(layer, rank, alpha)
        matrices += [f"{name}.lora_A", f"{name}.lora_B"]
    for parent in model.modules():
        for key, child in list(parent._modules.items()):
            if child is not None and id(child) in wrapped and not isinstance(parent, LoRALinear):
                parent._modules[key] = wrapped[id(child)]
    return matrices


def _has_weights(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))
