"""Random state and resuming: seeding a run, and ``last.resume.pt`` (optimiser, criterion, learning-rate schedule,
epoch, random state of torch / CUDA / numpy / Python, history, which parameters are frozen).

The file holds tensors and plain values only (the numpy and Python random states and the history as JSON
strings), so it is read back with ``torch.load(..., weights_only=True)``. Its layout is that of the first
release plus ``frozen_parameters`` (optional on reading); ``tests/test_compat.py`` resumes a file written then.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn

from ..checks import check_int
from ..errors import CheckpointError
from ..io import atomic_output
from ..io.trainable import frozen_parameters, restore_frozen
from .logs import json_row

__all__ = ["RESUME_FILE", "seed_everything", "epoch_seed", "save_resume", "load_resume"]

#: The resume state's file name in the run folder.
RESUME_FILE = "last.resume.pt"


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators with ``seed`` (an integer >= 0)."""
    check_int(seed, "seed", 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffling: a resumed run shuffles as an uninterrupted one."""
    return (seed * 1_000_003 + epoch) % 2**63


def save_resume(path: Path, bnn: nn.Module, opt: torch.optim.Optimizer, criterion: nn.Module,
                sched: Optional[Any], epoch: int, history: List[Dict[str, Any]], best_epoch: int,
                best_nll: float) -> None:
    """Write the resume state after ``epoch`` epochs to ``path``, atomically."""
    state = {
        "epoch": epoch,
        "model": bnn.state_dict(),
        "optimizer": opt.state_dict(),
        "criterion": criterion.state_dict(),
        "lr_scheduler": None if sched is None else sched.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": json.dumps(_numpy_state()),
        "python_rng": json.dumps(_python_state()),
        "history": json.dumps([json_row(r) for r in history]),
        "best_epoch": best_epoch,
        "best_nll": best_nll,
        "frozen_parameters": json.dumps(frozen_parameters(bnn)),  # the set of parameters the run trains
    }
    with atomic_output(path, overwrite=True) as tmp:
        torch.save(state, tmp)


def load_resume(out_path: Path, bnn: nn.Module, opt: torch.optim.Optimizer, criterion: nn.Module,
                sched: Optional[Any]) -> Dict[str, Any]:
    """Load ``out_path/last.resume.pt`` into the model, optimiser, criterion and schedule and restore the random
    state; returns ``{"epoch", "history", "best_epoch", "best_nll"}``.

    Raises:
        CheckpointError: no resume file in ``out_path``, or one written by a different run (architecture,
            data, options).
    """
    path = out_path / RESUME_FILE
    if not path.is_file():
        raise CheckpointError(f"resume: no {RESUME_FILE} in {str(out_path)!r}; start without --resume, or point "
                              f"--out at the folder of the run to continue")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        bnn.load_state_dict(state["model"])
        if "frozen_parameters" in state:  # absent from files of the first release: the model's own choice stands
            restore_frozen(bnn, json.loads(state["frozen_parameters"]))
        opt.load_state_dict(state["optimizer"])
        criterion.load_state_dict(state["criterion"])
        if sched is not None and state["lr_scheduler"] is not None:
            sched.load_state_dict(state["lr_scheduler"])
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"resume: {str(path)!r} does not match this run ({err}); resume with the same "
                              f"architecture, data and options as the run that wrote it"
                              f"{_options_hint(out_path, bnn)}") from err
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    _set_numpy_state(json.loads(state["numpy_rng"]))
    _set_python_state(json.loads(state["python_rng"]))
    history = json.loads(state["history"])
    return {"epoch": int(state["epoch"]), "history": history, "best_epoch": int(state["best_epoch"]),
            "best_nll": float(state["best_nll"])}


def _numpy_state() -> List[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _options_hint(out_path: Path, bnn: nn.Module) -> str:
    """The Bayesian options in which the run's ``last.safetensors`` differs from this run's (a run started before
    a default changed, e.g. the posterior before 0.3), as a hint; empty when there is nothing to compare."""
    from ..io import read_checkpoint_info

    current = getattr(bnn, "bayes_config", None)
    try:
        recorded = read_checkpoint_info(out_path / "last.safetensors").spec["bayes_config"]
    except Exception:  # noqa: BLE001 - only a hint: no readable checkpoint, no hint
        return ""
    if current is None:
        return ""
    now = current.to_dict()
    differ = [f"{key}={value!r} (this run: {now[key]!r})" for key, value in recorded.items()
              if key in now and key != "filter_fn" and value != now[key]]
    return f"; its last.safetensors records {', '.join(differ)}" if differ else ""


def _set_numpy_state(s: List[Any]) -> None:
    np.random.set_state((s[0], np.asarray(s[1], dtype=np.uint32), s[2], s[3], s[4]))


def _python_state() -> List[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_python_state(s: List[Any]) -> None:
    random.setstate((s[0], tuple(s[1]), s[2]))
