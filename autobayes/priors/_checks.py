"""Validation shared by the prior families: unknown keyword arguments, positive and bounded numbers."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch
from torch import Tensor

from ..errors import ConfigError
from ..registry import did_you_mean

__all__ = ["check_kwargs", "positive_buffer", "fmt"]


def check_kwargs(prior: str, kwargs: Mapping[str, Any], valid: Iterable[str]) -> None:
    """Raise a :class:`ConfigError` naming the valid ``prior_kwargs`` of ``prior`` for any other key."""
    valid = tuple(valid)
    for key in kwargs:
        if key not in valid:
            choices = f"its options are {sorted(valid)}" if valid else "it takes none"
            raise ConfigError(
                f"prior {prior!r} has no option {key!r} in prior_kwargs; {choices}.{did_you_mean(key, valid)}"
            )


def positive_buffer(value: Any, what: str, dtype: torch.dtype) -> Tensor:
    """``value`` as a detached tensor of ``dtype``, every element finite and > 0."""
    t = torch.as_tensor(value, dtype=dtype).detach().clone()
    if not bool(torch.all(torch.isfinite(t) & (t > 0))):
        raise ConfigError(f"{what} must be finite and > 0, got {value!r}")
    return t


def fmt(t: Tensor) -> str:
    """A short description of a buffer for ``extra_repr``."""
    return f"tensor{tuple(t.shape)}" if t.dim() else f"{float(t):g}"
