"""What kind of file a checkpoint is, and its raw tensors: format sniffing and safetensors access.

Nothing here builds a network or unpickles anything: :func:`sniff` reads the first bytes, the safetensors
readers return raw tensors and the header's string metadata.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, Mapping, Tuple

from torch import Tensor

from ..errors import CheckpointError

__all__ = ["METADATA_KEY", "sniff", "first_line", "read_safetensors", "read_safetensors_metadata",
           "tensors_for_saving", "tied_tensors"]

#: safetensors header-metadata key holding an autobayes checkpoint's JSON document.
METADATA_KEY = "autobayes"


def sniff(path: Path) -> str:
    """``"safetensors"``, ``"torch-zip"``, ``"torch-pickle"``, ``"truncated"`` or ``"unknown"``, from the first bytes.

    Example:
        >>> sniff(Path("model.safetensors"))  # doctest: +SKIP
        'safetensors'
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # an 8-byte header length, then the JSON header; checked first
        (n,) = struct.unpack("<Q", head[:8])  # because that length's bytes may look like another magic number
        return "safetensors" if n <= size - 8 else "truncated"
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-pickle"
    return "unknown"


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for error messages."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_safetensors(path: Path, device: str = "cpu") -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    """``(tensors, header metadata)`` of a safetensors file; a bad file raises :class:`CheckpointError`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # SafetensorError has no stable import path; everything here means a bad file
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({first_line(err)})") from err
    return tensors, metadata


def read_safetensors_metadata(path: Path) -> Dict[str, str]:
    """The header metadata of a safetensors file, without reading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except Exception as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({first_line(err)})") from err


def tied_tensors(state: Mapping[str, Tensor]) -> Dict[str, str]:
    """``{key: first key}`` for every key of ``state`` whose tensor is the very tensor of an earlier key (the same
    memory, shape, strides and offset: one tensor registered under two names, e.g. a posterior shared by an
    output head and an input embedding). Views of part of another tensor are not ties.

    Example:
        >>> w = torch.zeros(2)
        >>> tied_tensors({"a.weight": w, "b.weight": w, "c.weight": torch.zeros(2)})
        {'b.weight': 'a.weight'}
    """
    first: Dict[tuple, str] = {}
    tied: Dict[str, str] = {}
    for key, t in state.items():
        if t.device.type == "meta":
            continue
        ident = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if ident in first:
            tied[key] = first[ident]
        else:
            first[ident] = key
    return tied


def tensors_for_saving(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Detached, contiguous CPU tensors, none sharing memory with another (safetensors refuses aliasing)."""
    seen = set()
    out = {}
    for key, value in state.items():
        t = value.detach().to("cpu").contiguous()
        storage = (t.untyped_storage().data_ptr(), t.device.type)
        if storage in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()  # tied / aliased / view-of-larger-storage tensors get their own copy
        seen.add((t.untyped_storage().data_ptr(), t.device.type))
        out[key] = t
    return out
