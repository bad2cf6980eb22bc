"""Checks of number arguments, shared by the configuration, training, the KL schedules, the losses, the metrics
and the command line.

Each check returns the value in its plain Python type (``int`` or ``float``) or raises a
:class:`~autobayes.errors.ConfigError` that names the argument, the rule and the value given, then an optional
hint, e.g. ``"n_mc must be an integer >= 1, got 0; the number of Monte Carlo samples of the KL, e.g. n_mc=100"``.
``name`` is how the message names the argument: a keyword (``"epochs"``), a flag (``"--n-samples"``) or a
qualified phrase (``"beta schedule: warmup_steps"``). ``bool`` is never a number here (``True`` is not an epoch
count); NumPy scalars are (:class:`numbers.Integral` / :class:`numbers.Real`). Tensors are not: convert them
with ``.item()`` first.

This module imports only the standard library and :mod:`autobayes.errors`, so the configuration (a leaf of the
package) can use it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Tuple

from .errors import ConfigError

__all__ = ["check_int", "check_finite", "check_positive", "check_nonnegative", "check_between"]


def _fail(name: str, rule: str, value: Any, hint: str) -> ConfigError:
    return ConfigError(f"{name} must be {rule}, got {value!r}" + (f"; {hint}" if hint else ""))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_int(value: Any, name: str, low: int = 1, *, hint: str = "") -> int:
    """``value`` as an ``int``, if it is an integer ``>= low``.

    Example:
        >>> check_int(3, "epochs")
        3
        >>> check_int(0, "epochs")
        Traceback (most recent call last):
        ...
        autobayes.errors.ConfigError: epochs must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise _fail(name, f"an integer >= {low}", value, hint)
    return int(value)


def check_finite(value: Any, name: str, *, hint: str = "") -> float:
    """``value`` as a ``float``, if it is a finite number.

    Example:
        >>> check_finite(-0.5, "prior_loc")
        -0.5
    """
    if not _is_real(value) or not math.isfinite(value):
        raise _fail(name, "a finite number", value, hint)
    return float(value)


def check_positive(value: Any, name: str, *, hint: str = "") -> float:
    """``value`` as a ``float``, if it is a finite number ``> 0``.

    Example:
        >>> check_positive(0, "prior_scale")
        Traceback (most recent call last):
        ...
        autobayes.errors.ConfigError: prior_scale must be a finite number > 0, got 0
    """
    if not _is_real(value) or not math.isfinite(value) or value <= 0:
        raise _fail(name, "a finite number > 0", value, hint)
    return float(value)


def check_nonnegative(value: Any, name: str, *, hint: str = "") -> float:
    """``value`` as a ``float``, if it is a finite number ``>= 0``.

    Example:
        >>> check_nonnegative(0, "beta")
        0.0
    """
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise _fail(name, "a finite number >= 0", value, hint)
    return float(value)


def check_between(value: Any, name: str, low: float, high: float, *, closed: Tuple[bool, bool] = (False, False),
                  hint: str = "") -> float:
    """``value`` as a ``float``, if it lies between ``low`` and ``high``, each end included where ``closed`` says.

    Example:
        >>> check_between(0.95, "interval", 0, 1)
        0.95
        >>> check_between(1, "ratio", 0, 1, closed=(False, True))
        1.0
        >>> check_between(1.5, "interval", 0, 1, hint="e.g. 0.95")
        Traceback (most recent call last):
        ...
        autobayes.errors.ConfigError: interval must be a number in (0, 1), got 1.5; e.g. 0.95
    """
    above = _is_real(value) and (value >= low if closed[0] else value > low)  # nan is neither
    below = _is_real(value) and (value <= high if closed[1] else value < high)
    if not (above and below):
        span = f"{'[' if closed[0] else '('}{low:g}, {high:g}{']' if closed[1] else ')'}"
        raise _fail(name, f"a number in {span}", value, hint)
    return float(value)
