"""The optimisation step: the optimiser and KL-weight schedule by name, backward and step with mixed precision."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

import torch
from torch import Tensor, nn

from .. import distributed
from ..errors import UnknownNameError
from ..registry import did_you_mean
from ..schedules import get_beta_schedule
from .settings import OPTIMIZERS

__all__ = ["make_optimizer", "beta_schedule", "Stepper"]


def make_optimizer(name: str, params: Sequence[Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`; SGD with momentum 0.9) over ``params``.

    Example:
        >>> make_optimizer("adam", nn.Linear(2, 1).parameters(), lr=1e-3, weight_decay=0.0)  # doctest: +SKIP
    """
    key = str(name).lower()
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if key == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    if key == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=weight_decay)
    raise UnknownNameError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}.{did_you_mean(key, OPTIMIZERS)}")


def beta_schedule(beta: Any, kwargs: Dict[str, Any], total_steps: int) -> Callable[..., float]:
    """The KL-weight schedule of :func:`autobayes.schedules.get_beta_schedule`, with the lengths ``train``
    defaults to: a warm-up over the first half of ``total_steps`` (``"linear"`` / ``"warmup"``), one cycle
    over all of them (``"cyclical"``). ``kwargs`` (the user's ``beta_kwargs``) take precedence.

    Example:
        >>> beta_schedule("warmup", {}, total_steps=100)  # doctest: +SKIP
    """
    if isinstance(beta, str):
        key = beta.lower()
        if key in ("linear", "warmup"):
            kwargs.setdefault("warmup_steps", max(1, total_steps // 2))
        elif key == "cyclical":
            kwargs.setdefault("total_steps", max(1, total_steps))
    return get_beta_schedule(beta, **kwargs)


class Stepper:
    """Backward and optimiser step with mixed precision (autocast, a GradScaler for fp16) and, across processes,
    the gradient average of the parameters DDP does not hold (the criterion's)."""

    def __init__(self, device: torch.device, amp: str, ctx: "distributed.DistContext", criterion: nn.Module) -> None:
        self.device, self.amp, self.ctx = device, amp, ctx
        self.extra = [p for p in criterion.parameters() if p.requires_grad]
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def autocast(self):
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype, enabled=self.amp != "none")

    def __call__(self, loss: Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.ctx.average_gradients(self.extra)
        self.scaler.step(opt)
        self.scaler.update()
