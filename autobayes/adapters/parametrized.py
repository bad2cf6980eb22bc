"""LoRA on weights a forward reads itself: :class:`LoRADelta`, a weight parametrization ``W + (alpha / r) * B @ A``.

Wrapping a layer's *output* (:class:`~autobayes.adapters.LoRALinear`) is right only when its whole forward is the
affine map ``x @ W.T + b``. A module that reads its weight functionally -- ``nn.MultiheadAttention``'s
``in_proj_weight``, a ``Linear`` read by its ``torch.nn`` parent (``out_proj``, ``TransformerEncoderLayer.linear1``),
a ``Linear`` subclass with its own forward, a user module calling ``F.linear(x, self.weight)`` -- gets its update
on the weight instead: ``torch.nn.utils.parametrize.register_parametrization(module, "weight", LoRADelta(...))``
makes every read of ``module.weight`` return ``W + scaling * B @ A`` (``W`` frozen, stored at
``module.parametrizations.weight.original``), whatever the forward does with it.

``LoRADelta`` is listed in :data:`autobayes.fx.convert.FUNCTIONAL_WEIGHTS` with its matrices ``lora_A`` /
``lora_B``: the conversion turns them into posterior attributes (a read returns a sample, the mean under
:func:`autobayes.use_mean`), on every route, as for any weight a module reads functionally.
"""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..fx.convert import FUNCTIONAL_WEIGHTS
from .lora import check_rank

__all__ = ["LoRADelta", "add_lora_parametrizations", "merge_lora_parametrizations"]


class LoRADelta(nn.Module):
    """A weight parametrization adding a low-rank update: ``forward(W) = W + scaling * lora_B @ lora_A``.

    Args:
        weight: the 2-d weight ``(out, in)`` it will adapt (read for its shape, device and dtype; never copied).
        rank: ``r`` (an integer >= 1); ``lora_A`` is ``(r, in)``, ``lora_B`` is ``(out, r)``.
        alpha: the update is scaled by ``alpha / rank``.

    ``lora_A`` starts as ``nn.Linear``'s initialisation (Kaiming uniform, as in PEFT), ``lora_B`` at zero: the
    adapted weight starts equal to ``W``.

    Example:
        >>> mha = nn.MultiheadAttention(8, 2)
        >>> w = mha.in_proj_weight.detach().clone()
        >>> _ = parametrize.register_parametrization(mha, "in_proj_weight", LoRADelta(mha.in_proj_weight, 2, 4))
        >>> torch.equal(mha.in_proj_weight, w)  # B = 0: the pretrained weight
        True
    """

    def __init__(self, weight: Tensor, rank: int, alpha: float) -> None:
        super().__init__()
        rank = check_rank(rank)
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = self.alpha / rank
        factory = {"device": weight.device, "dtype": weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, weight.shape[1], **factory))
        self.lora_B = nn.Parameter(torch.zeros(weight.shape[0], rank, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.scaling * (self.lora_B @ self.lora_A)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}, scaling={self.scaling:g}"


FUNCTIONAL_WEIGHTS[LoRADelta] = ("lora_A", "lora_B")  # its matrices are weights read functionally


def add_lora_parametrizations(model: nn.Module, weights: Sequence[Tuple[str, nn.Module, Tuple[str, ...]]],
                              rank: int, alpha: float) -> List[Tuple[str, str, str]]:
    """Register a :class:`LoRADelta` on each ``(name, module, attrs)`` of ``weights`` (in place; a module shared
    under several names once); returns ``(qualified name of the LoRADelta, module name, weight name)`` each."""
    added: List[Tuple[str, str, str]] = []
    done = set()
    for name, module, attrs in weights:
        for attr in attrs:
            if (id(module), attr) not in done:
                parametrize.register_parametrization(module, attr, LoRADelta(getattr(module, attr), rank, alpha))
                done.add((id(module), attr))
            added.append((f"{name}.parametrizations.{attr}.0", name, f"{name}.{attr}"))
    return added


def merge_lora_parametrizations(model: nn.Module) -> None:
    """Fold every :class:`LoRADelta` of ``model`` into its weight (in place): the parametrization is removed and
    the weight keeps its adapted value (its matrices must be plain parameters, e.g. the posterior means).

    A deep copy of a parametrized module shares torch's generated ``Parametrized...`` class with the original,
    and removing a parametrization deletes the weight's property from that class: each module gets a class of
    its own first, so that the model it was copied from keeps its parametrizations.
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        cls = type(module)
        body = {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")}
        module.__class__ = type(cls.__name__, cls.__bases__, body)
        for attr in [a for a, stack in module.parametrizations.items() if any(isinstance(p, LoRADelta) for p in stack)]:
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
