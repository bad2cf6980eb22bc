"""autobayes' own low-rank adapters: :class:`LoRALinear` and the choice of the layers that get one.

A LoRA layer (Hu et al., 2021) keeps a pretrained ``nn.Linear`` frozen and learns a low-rank update of it:
``y = base(x) + (alpha / r) * B(A(x))`` with ``A: in -> r`` and ``B: r -> out``, ``B`` initialised to zero (so
the wrapped model starts exactly where the pretrained one was). ``A`` and ``B`` are plain ``nn.Linear`` layers:
:func:`autobayes.bayesify` then turns them, and only them, into ``BayesLinear`` layers, so the state dict, the
KL, the report and :func:`autobayes.use_mean` follow as for any Bayesian layer.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..config import BayesConfig
from ..errors import ConfigError

__all__ = ["LoRALinear", "add_lora", "lora_candidates", "check_rank"]


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (``base_layer``) plus a low-rank update ``scaling * lora_B(lora_A(x))``.

    Args:
        base: the pretrained layer; its parameters are frozen (``requires_grad=False``), never copied.
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
        if not isinstance(base, nn.Linear):
            raise ConfigError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        rank = check_rank(rank)
        self.base_layer = base.requires_grad_(False)
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, **factory)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, **factory)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> Tensor:
        """The frozen base weight (without the update; see :func:`autobayes.merge_adapters` for the sum)."""
        return self.base_layer.weight

    @property
    def bias(self) -> Optional[Tensor]:
        return self.base_layer.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.base_layer(x) + self.lora_B(self.lora_A(x)) * self.scaling

    def merged(self, a: Tensor, b: Tensor) -> nn.Linear:
        """The base layer with ``scaling * b @ a`` added to its weight (a new ``nn.Linear``; ``a`` / ``b`` are the
        adapter matrices to fold, e.g. the posterior means)."""
        base = self.base_layer
        out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                        device=base.weight.device, dtype=base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(base.weight + self.scaling * (b.to(base.weight.dtype) @ a.to(base.weight.dtype)))
            if base.bias is not None:
                out.bias.copy_(base.bias)
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


def lora_candidates(model: nn.Module, config: BayesConfig, inside_torch: dict
                    ) -> Tuple[List[Tuple[str, nn.Linear]], List[Tuple[str, str, str]]]:
    """The ``nn.Linear`` layers of ``model`` that get an adapter, and ``(name, type, reason)`` of the others.

    ``config``'s ``layer_types`` / ``include`` / ``exclude`` / ``filter_fn`` / ``overrides`` select them by their
    own names (:meth:`BayesConfig.resolve_layer`). ``inside_torch`` maps a module name to the ``torch.nn``
    module holding it (``nn.MultiheadAttention``'s ``out_proj``): such a parent reads its layers' weights
    itself, so a wrapper there would be bypassed and the layer gets none.

    Raises:
        ConfigError: ``layer_types`` names a type other than ``nn.Linear``, or ``include`` names a layer that
            is not an ``nn.Linear`` (LoRA adapters go on linear layers only).
    """
    if config.layer_types is not None:
        others = [getattr(t, "__name__", t) for t in config.layer_types
                  if not (isinstance(t, type) and issubclass(nn.Linear, t)) and t != "Linear"]
        if others:
            raise ConfigError(f"adapter='lora' adds adapters to nn.Linear layers only; layer_types={others} names "
                              f"other types. Use layer_types=['Linear'] (or leave it out) and select layers with "
                              f"include=[...]")
    chosen: List[Tuple[str, nn.Linear]] = []
    others: List[Tuple[str, str, str]] = []
    for name, module in model.named_modules():
        exact = name in (config.include or ())
        if not isinstance(module, nn.Linear):
            if exact and _has_weights(module):
                raise ConfigError(
                    f"include names {name!r}, a {type(module).__name__}: adapter='lora' adds adapters to nn.Linear "
                    f"layers only. Name its linear layers instead (see print(autobayes.inspect_model(model))), or "
                    f"make it Bayesian without adapters: bayesify(model, include=[{name!r}])")
            continue
        if name == "":
            raise ConfigError("the model itself is an nn.Linear: wrap it in a module (nn.Sequential(layer)) to give "
                              "it an adapter")
        parent = inside_torch.get(name)
        if parent is not None:
            others.append((name, type(module).__name__, f"no adapter: inside {parent!r}, a torch.nn module that "
                                                        f"reads this layer's weights itself"))
            continue
        resolved, reason = config.resolve_layer(name, module)
        if resolved is None:
            others.append((name, type(module).__name__, f"no adapter ({reason}): frozen, deterministic"))
        else:
            chosen.append((name, module))
    return chosen, others


def add_lora(model: nn.Module, layers: List[Tuple[str, nn.Linear]], rank: int, alpha: float) -> List[str]:
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
