"""Which parameters a network trains: recorded by :func:`autobayes.save` and the resume state, restored on loading.

:func:`autobayes.bayesify` decides what is frozen when it converts (``adapter="lora"`` freezes everything but the
adapters), and a user may change it afterwards, e.g. unfreeze a classifier head next to the adapters. A
checkpoint rebuilds the network with ``bayesify`` again, so without a record the loaded network (and a run
resumed from it) would train the parameters ``bayesify`` chose, not those the saved network trained. The record
is the list of frozen parameter names (``requires_grad=False``), usually empty.
"""

from __future__ import annotations

from typing import Iterable, List

from torch import nn

__all__ = ["frozen_parameters", "restore_frozen"]


def frozen_parameters(module: nn.Module) -> List[str]:
    """The names (as ``module.named_parameters()`` gives them) of the parameters with ``requires_grad=False``.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> _ = net[0].requires_grad_(False)
        >>> frozen_parameters(net)
        ['0.weight', '0.bias']
    """
    return [name for name, p in module.named_parameters() if not p.requires_grad]


def restore_frozen(module: nn.Module, frozen: Iterable[str]) -> None:
    """Set ``requires_grad`` of every parameter of ``module``: ``False`` for the names in ``frozen`` (a
    :func:`frozen_parameters` record), ``True`` for all others.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
        >>> restore_frozen(net, ["1.weight"])
        >>> frozen_parameters(net)
        ['1.weight']
    """
    names = set(frozen)
    for name, p in module.named_parameters():
        p.requires_grad_(name not in names)
