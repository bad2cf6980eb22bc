"""The run folder: which files make a run, refusing (or clearing) a folder that holds one, the checkpoints.

``best.safetensors`` (lowest validation NLL) and ``last.safetensors`` are written in the self-describing format
of :func:`autobayes.save`, atomically; the resume state ``last.resume.pt`` is :mod:`.resume`'s.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Dict, Optional

from torch import nn

from ..errors import CheckpointError
from ..io import OutputExistsError, atomic_output, save
from ..io.arch import arch_spec
from .resume import RESUME_FILE

__all__ = ["RUN_FILES", "prepare_run_folder", "checkpoint_arch", "save_checkpoint"]

#: The files of a run in ``out_dir``: a folder holding any of them needs ``resume=True`` or ``overwrite=True``.
RUN_FILES = ("log.csv", "best.safetensors", "last.safetensors", RESUME_FILE)


def prepare_run_folder(out_path: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder that holds an earlier run (:data:`RUN_FILES`) unless ``resume`` or ``overwrite``; with
    ``overwrite``, delete that run's files, so that the new run never mixes with the old one.

    Example:
        >>> prepare_run_folder(Path("runs/digits"), resume=False, overwrite=True)  # doctest: +SKIP
    """
    if out_path.exists() and not out_path.is_dir():
        raise OutputExistsError(f"out_dir {str(out_path)!r} is a file, not a folder; choose another --out (out_dir)")
    found = [name for name in RUN_FILES if (out_path / name).exists()]
    if not found or resume:
        return
    if not overwrite:
        raise OutputExistsError(
            f"{str(out_path)!r} already holds a training run ({', '.join(found)}); pass --force (overwrite=True) to "
            f"replace it, --resume (resume=True) to continue it, or choose another --out (out_dir)"
        )
    for name in found:
        (out_path / name).unlink()


def checkpoint_arch(bnn: nn.Module) -> Optional[Dict[str, Any]]:
    """The architecture spec the run's checkpoints record, worked out once per run (recognising a timm /
    torchvision network builds candidates: up to seconds, too slow to repeat at every epoch's save). ``None``,
    with a warning pointing at the caller of :func:`autobayes.train` (train -> loop.run -> here), for a network
    that cannot describe its architecture (not built by :func:`autobayes.models.build_model` nor recognised):
    its checkpoints then hold its tensors alone."""
    try:
        return arch_spec(bnn, None)
    except CheckpointError as err:
        if getattr(bnn, "autobayes_arch", None) is not None:
            raise
        warnings.warn(f"{err}; the run's checkpoints keep the state dict only (load them into the same model with "
                      f"load_state_dict)", stacklevel=4)
        return None


def save_checkpoint(bnn: nn.Module, path: Path, metadata: Dict[str, Any], arch: Optional[Dict[str, Any]],
                    state: Optional[Dict[str, Any]] = None) -> None:
    """:func:`autobayes.save` with ``metadata`` and the spec :func:`checkpoint_arch` gave; with none, the
    network's tensors alone (safetensors, the metadata under ``"autobayes_train"``), written atomically.
    ``state``: the tensors to write instead of ``bnn.state_dict()`` (gathered from a sharded model)."""
    if arch is not None:
        save(bnn, path, metadata=metadata, arch=arch, state_dict=state)
        return
    from safetensors.torch import save_file

    with atomic_output(path, overwrite=True) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in (state or bnn.state_dict()).items()}, str(tmp),
                  metadata={"autobayes_train": json.dumps(metadata)})
