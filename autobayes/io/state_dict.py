"""Deterministic checkpoints: reading them safely, and checking a state dict against a model.

:func:`load_state_dict_file` reads what training scripts write (a safetensors file, or a ``torch.save`` file
holding a state dict, possibly nested under ``'state_dict'`` and prefixed by a wrapper) with
``torch.load(weights_only=True)``: nothing is ever unpickled. :func:`check_state_dict` lists what differs
between a model and a state dict; :func:`load_checked` loads one strictly, with that list as the error.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import Tensor, nn

from ..errors import CheckpointError
from .files import PathLike, require_file
from .formats import first_line, read_safetensors, sniff

__all__ = ["STATE_DICT_KEYS", "WRAPPER_PREFIXES", "StateDictMismatch", "check_state_dict", "load_checked",
           "load_state_dict_file"]

#: Top-level keys under which training scripts commonly nest a state dict (searched in this order).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema", "net", "network")
#: Prefixes added by wrappers: ``nn.DataParallel`` / DDP (``module.``) and ``torch.compile`` (``_orig_mod.``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class StateDictMismatch:
    """What differs between a model's state dict and a checkpoint's (see :func:`check_state_dict`)."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatches: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shape_mismatches)

    def describe(self, limit: int = 10) -> str:
        """A readable summary, at most ``limit`` names per category."""

        def _names(names: List[str]) -> str:
            shown = ", ".join(names[:limit])
            return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {_names(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {_names(self.unexpected)}")
        if self.shape_mismatches:
            shown = [f"{k} (checkpoint {list(c)}, model {list(m)})" for k, c, m in self.shape_mismatches]
            parts.append(f"shape mismatches ({len(shown)}): {_names(shown)}")
        return "; ".join(parts)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> StateDictMismatch:
    """Compare ``state_dict`` with ``model.state_dict()``: missing keys, unexpected keys, shape mismatches.

    Example:
        >>> check_state_dict(nn.Linear(2, 3), {"weight": torch.zeros(3, 2)}).missing
        ['bias']
    """
    own = model.state_dict()
    result = StateDictMismatch(
        missing=[k for k in own if k not in state_dict],
        unexpected=[k for k in state_dict if k not in own],
    )
    for key, value in state_dict.items():
        if key in own and isinstance(value, Tensor) and tuple(value.shape) != tuple(own[key].shape):
            result.shape_mismatches.append((key, tuple(value.shape), tuple(own[key].shape)))
    return result


def load_checked(model: nn.Module, state_dict: Mapping[str, Tensor], source: str, hint: str = "") -> None:
    """Load ``state_dict`` into ``model`` strictly, or raise a :class:`CheckpointError` listing every missing
    and unexpected key and every shape mismatch (:func:`check_state_dict`) before touching the model. A model
    sharded by FSDP2 takes the full tensors on every rank, each rank keeping its shard.

    Args:
        model: the network to load into.
        state_dict: the tensors, e.g. from :func:`load_state_dict_file`.
        source: what the tensors came from, the start of the message (``"checkpoint 'resnet.pt'"``).
        hint: appended to the message: what to check (``" (check --arch and --num-classes)"``).

    Example:
        >>> net = nn.Linear(2, 3)
        >>> load_checked(net, {"weight": torch.zeros(3, 2), "bias": torch.zeros(3)}, "checkpoint 'lin.pt'")
        >>> load_checked(net, {"weight": torch.zeros(3, 2)}, "checkpoint 'lin.pt'")
        Traceback (most recent call last):
        ...
        autobayes.errors.CheckpointError: checkpoint 'lin.pt' does not match the architecture: missing keys (1): bias
    """
    from ..sharding import is_sharded, load_full_state_dict

    mismatch = check_state_dict(model, state_dict)
    if mismatch:
        raise CheckpointError(f"{source} does not match the architecture: {mismatch.describe()}{hint}")
    if is_sharded(model):  # FSDP2: each rank keeps its shard of the full tensors
        load_full_state_dict(model, state_dict)
    else:
        model.load_state_dict(state_dict, strict=True)


def load_state_dict_file(path: PathLike) -> Dict[str, Tensor]:
    """Read a deterministic checkpoint into a flat state dict, without ever unpickling code.

    Accepted: a safetensors file; a ``torch.save`` file holding a state dict, or a dict holding one under
    ``'state_dict'`` / ``'model_state_dict'`` / ``'model'`` (and a few other common keys). Wrapper prefixes
    (``module.`` from ``nn.DataParallel`` / DDP, ``_orig_mod.`` from ``torch.compile``) are stripped.
    ``torch.save`` files are read with ``weights_only=True``: a file holding pickled objects (a whole
    ``nn.Module``, an optimizer of custom classes, ...) is refused.

    Raises:
        CheckpointError: missing, corrupt, truncated or pickled-object file, or no state dict inside.

    Example:
        >>> torch.save({"state_dict": net.state_dict(), "epoch": 3}, "ckpt.pt")  # doctest: +SKIP
        >>> net.load_state_dict(load_state_dict_file("ckpt.pt"))  # doctest: +SKIP
    """
    path = require_file(path, "checkpoint")
    kind = sniff(path)
    if kind == "truncated":
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt (its safetensors header is cut short)")
    if kind == "safetensors":
        data: Any = read_safetensors(path)[0]
    elif kind in ("torch-zip", "torch-pickle"):
        data = _torch_load_weights_only(path)
    else:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is neither a safetensors file nor a torch.save file "
            f"(wrong format, or corrupt)"
        )
    return _unwrap_state_dict(data, path)


def _torch_load_weights_only(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()
        detail = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it holds pickled Python objects, which could run code "
            f"({detail}); only tensors and plain containers are accepted. Re-save it with "
            f"`torch.save(model.state_dict(), path)` or as safetensors"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, struct.error) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({type(err).__name__}: {first_line(err)})") from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _unwrap_state_dict(data: Any, path: Path) -> Dict[str, Tensor]:
    candidate = data
    if not _is_state_dict(candidate) and isinstance(data, Mapping):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(data.get(key)):
                candidate = data[key]
                break
    if not _is_state_dict(candidate):
        if isinstance(data, Mapping):
            keys = ", ".join(repr(k) for k in list(data)[:10])
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds no state dict: its top-level keys are [{keys}], none of "
                f"{list(STATE_DICT_KEYS)} holds a name -> tensor mapping"
            )
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(data).__name__}, not a state dict")
    state = dict(candidate)
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state
