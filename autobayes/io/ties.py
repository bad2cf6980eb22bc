"""Tied tensors of a checkpoint: the ``"tied"`` entry of its header, checked, and ties restored on load.

A network may register one tensor under several keys: a posterior module shared by an output head and an input
embedding (``lm_head.weight_posterior`` is ``transformer.wte.weight_posterior``), or a deterministic head tied to
the embedding. :func:`autobayes.save` stores such a tensor once and records ``{key: first key}``
(:func:`autobayes.io.formats.tied_tensors`); :func:`retie` makes sure the rebuilt network shares them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from torch import Tensor, nn

from ..errors import CheckpointError

__all__ = ["tied_entry", "retie"]


def tied_entry(path: Path, spec: Mapping[str, Any], tensors: Mapping[str, Tensor]) -> Dict[str, str]:
    """The checkpoint's ``{key: stored key}`` ties (``{}`` for a checkpoint written before ties were recorded),
    each naming a tensor the file holds.

    Raises:
        CheckpointError: a malformed entry, or a tie to a tensor the file does not hold.
    """
    tied = spec.get("tied") or {}
    if not isinstance(tied, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tied.items()):
        raise CheckpointError(f"checkpoint {str(path)!r} has a corrupt autobayes header ('tied' is not a "
                              f"{{key: key}} mapping)")
    missing = sorted(v for v in tied.values() if v not in tensors)
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt: its tied keys point at tensors it does not hold "
                              f"({', '.join(missing[:5])})")
    return dict(tied)


def _same(a: Optional[Tensor], b: Optional[Tensor]) -> bool:
    if a is None or b is None:
        return False
    return a is b or (a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.shape == b.shape
                      and a.stride() == b.stride() and a.storage_offset() == b.storage_offset())


def _owner(modules: Mapping[str, nn.Module], parts: List[str]) -> Optional[nn.Module]:
    return modules.get(".".join(parts))


def _retie_one(model: nn.Module, key: str, first: str, tied: Mapping[str, str]) -> None:
    """Share ``first``'s tensor with ``key``: the outermost module whose every tensor is tied to the same-named
    tensor of ``first``'s counterpart module is registered under both owners; else the tensor alone is."""
    modules = dict(model.named_modules())
    state = model.state_dict(keep_vars=True)
    a, b = key.split("."), first.split(".")
    common = 0  # trailing components both keys share (the tensor's name, the posterior's name, ...)
    while common < min(len(a), len(b)) - 1 and a[-1 - common] == b[-1 - common]:
        common += 1
    for j in range(common, 0, -1):  # the module a[:-j] becomes the module b[:-j], outermost first
        mine, theirs = ".".join(a[:-j]), ".".join(b[:-j])
        parent = _owner(modules, a[:-j - 1])
        if not mine or parent is None or type(modules.get(mine)) is not type(modules.get(theirs)):
            continue
        keys = [k for k in state if k.startswith(mine + ".")]
        if all(tied.get(k) == theirs + k[len(mine):] or _same(state[k], state.get(theirs + k[len(mine):]))
               for k in keys):
            setattr(parent, a[-j - 1], modules[theirs])
            return
    owner = _owner(modules, a[:-1])
    name = a[-1]
    if key not in state or first not in state or state[key].shape != state[first].shape:
        return  # not the same kind of tensor: left for retie's check to report
    if owner is not None and name in owner._parameters:
        owner._parameters[name] = state[first]
    elif owner is not None and name in owner._buffers:
        owner._buffers[name] = state[first]


def retie(model: nn.Module, tied: Mapping[str, str]) -> None:
    """Make every key of ``tied`` share the tensor of the key it maps to (nothing to do when the rebuilt network
    ties them already, as a converted network whose conversion shares them does).

    Raises:
        CheckpointError: a tie that could not be restored (the rebuilt network differs from the saved one).

    Example:
        >>> retie(bnn, {"lm_head.weight_posterior.mu": "transformer.wte.weight_posterior.mu"})  # doctest: +SKIP
    """
    for key, first in tied.items():
        state = model.state_dict(keep_vars=True)
        if not _same(state.get(key), state.get(first)):
            _retie_one(model, key, first, tied)
    state = model.state_dict(keep_vars=True)
    broken = [f"{k} -> {v}" for k, v in tied.items() if not _same(state.get(k), state.get(v))]
    if broken:
        raise CheckpointError(f"the rebuilt network does not share the tensors the checkpoint ties, and they could "
                              f"not be re-tied: {', '.join(broken[:5])}")
