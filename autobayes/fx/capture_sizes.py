"""Whether a captured graph serves the input sizes it declares dynamic (the capture route, ``mode="export"``).

``torch.export`` records the dimensions a forward forces to one value as specialised, and
:class:`~autobayes.fx.capture.Captured` recaptures for another size. Some forwards fix a size without telling it
(Funnel's and Jamba's attention reshape to the example's sequence length through a path torch.export does not
guard): the graph keeps its input dimension symbolic and crashes deep inside at another length (``shape
'[2, 8, 2, 16]' is invalid``). :func:`undeclared_sizes` finds that at conversion time by running the captured
graph once on the example inputs doubled along every dynamic dimension (the model's own forward on the same
inputs says which sizes it accepts); such a model is captured with static shapes (:data:`STATIC`), each new size
at its first call, and the report says so.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .capture import Captured
from .capture_graph import STATIC, capturing
from .derive import base_class

__all__ = ["STATIC", "undeclared_sizes"]

def _doubled(leaves: Sequence[Any], dims: Sequence[tuple]) -> List[Any]:
    """``leaves`` with each ``(leaf index, dim)`` of ``dims`` doubled by repeating the tensor (token ids stay in
    the vocabulary, masks stay masks)."""
    grown = list(leaves)
    for i, d in dims:
        grown[i] = torch.cat([grown[i], grown[i]], dim=d)
    return grown


def _shapes(tree: Any) -> List[tuple]:
    return [tuple(t.shape) for t in pytree.tree_leaves(tree) if isinstance(t, torch.Tensor)]


def undeclared_sizes(root: nn.Module, captured: Captured, leaves: Sequence[Any], spec: Any) -> Optional[str]:
    """Why ``captured`` (a graph of the converted ``root``, captured on the flat inputs ``leaves`` with pytree
    ``spec``) does not serve twice the example's size along its dynamic dimensions, or ``None`` when it does (or
    when the model's own forward refuses those sizes too: nothing to compare).

    Both run under posterior means, without gradient, the random state restored.
    """
    dims = sorted(captured.lower)
    if not dims:
        return None
    grown = _doubled(leaves, dims)
    args, kwargs = pytree.tree_unflatten(grown, spec)
    with torch.no_grad(), torch.random.fork_rng(devices=[]), capturing(root):
        try:
            want = base_class(root).forward(root, *args, **kwargs)
        except Exception:  # noqa: BLE001 - the model refuses these sizes itself: the graph cannot be judged on them
            return None
        try:
            flat, _ = captured.fn(root, *grown)
        except Exception as err:  # noqa: BLE001 - the graph fixed a size: reported, and captured statically
            return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
    got, expected = _shapes(list(flat)), _shapes(want)
    if got != expected:
        return f"its outputs have shapes {got} where the model's have {expected}"
    return None
