"""The options of a training run: :class:`TrainSettings`, checked once, before anything is built.

:func:`autobayes.train` takes them as keyword arguments (its signature is the documented one) and builds a
:class:`TrainSettings`; the loop reads its fields instead of thirty positional arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch

from ..checks import check_int, check_positive
from ..errors import ConfigError, UnknownNameError
from ..registry import did_you_mean

__all__ = ["TrainSettings", "OPTIMIZERS", "AMP_MODES", "LR_SCHEDULES", "parse_device"]

#: Optimisers by name.
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
#: Mixed-precision modes of ``train(amp=...)``.
AMP_MODES = ("none", "bf16", "fp16")
#: Learning-rate schedules of ``train(lr_schedule=...)``.
LR_SCHEDULES = ("none", "cosine")


@dataclass
class TrainSettings:
    """Every keyword argument of :func:`autobayes.train` but the model and the data, with the same defaults
    and meaning (see there). Checked on construction, in the order ``train`` always checked them.

    ``device`` becomes a :class:`torch.device` and ``out_dir`` a :class:`~pathlib.Path` (or ``None``);
    ``bayes_options`` holds the ``**bayes_options`` of ``train`` (the ``bayesify`` options).

    Raises:
        ConfigError: a count that is not an integer in range, a learning rate that is not a finite positive
            number, an unusable device, ``resume`` without ``out_dir`` or together with ``overwrite``.
        UnknownNameError: an unknown ``amp`` or ``lr_schedule`` (with the closest name).

    Example:
        >>> settings = TrainSettings(epochs=5, lr=1e-3, out_dir="runs/digits")
        >>> settings.out_dir, settings.device
        (PosixPath('runs/digits'), device(type='cpu'))
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    lr_schedule: str = "none"
    beta: Union[str, Callable[..., float]] = "none"
    beta_kwargs: Optional[Mapping[str, Any]] = None
    n_test: int = 20
    device: Union[str, torch.device] = "cpu"
    gpus: int = 1
    seed: int = 0
    out_dir: Union[str, "os.PathLike[str]", None] = None
    resume: bool = False
    overwrite: bool = False
    model_kwargs: Optional[Mapping[str, Any]] = None
    data_root: Optional[str] = None
    val_fraction: float = 0.2
    augment: bool = False
    image_size: Optional[int] = None
    download: bool = False
    variance: Union[float, str] = "learned"
    num_workers: int = 0
    progress: bool = True
    config: Any = None
    nproc: int = 1
    amp: str = "none"
    torch_compile: Union[bool, str] = False
    fsdp: bool = False
    activation_checkpointing: bool = False
    bayes_options: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", 1)
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.n_test, "n_test", 1)
        check_int(self.gpus, "gpus", 1)
        check_int(self.nproc, "nproc", 1)
        if self.amp not in AMP_MODES:
            raise UnknownNameError(f"unknown amp {self.amp!r}; choose one of {list(AMP_MODES)}."
                                   f"{did_you_mean(str(self.amp), AMP_MODES)}")
        check_positive(self.lr, "lr")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UnknownNameError(f"unknown lr_schedule {self.lr_schedule!r}; choose one of {list(LR_SCHEDULES)}."
                                   f"{did_you_mean(str(self.lr_schedule), LR_SCHEDULES)}")
        self.device = parse_device(self.device)
        self.out_dir = Path(self.out_dir) if self.out_dir is not None else None
        if self.resume and self.out_dir is None:
            raise ConfigError("resume=True needs out_dir (the folder holding last.resume.pt of the earlier run)")
        if self.resume and self.overwrite:
            raise ConfigError("resume=True continues the run in out_dir and overwrite=True replaces it; pass one "
                              "(--resume or --force)")


def parse_device(device: Union[str, torch.device]) -> torch.device:
    """``device`` as a :class:`torch.device`, refusing a malformed name and CUDA where there is none.

    Example:
        >>> parse_device("cpu")
        device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError(f"invalid device {device!r}; e.g. 'cpu', 'cuda', 'cuda:1'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use device='cpu'")
    return dev
