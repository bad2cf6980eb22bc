"""KL weight (``beta``) schedules, in the convention of :mod:`autobayes.losses`.

Every schedule is called once per optimiser step as ``schedule(step, epoch, batch_idx, num_batches)``:

* ``step``: global step count since the start of training, 0-based;
* ``epoch``: epoch index, 0-based;
* ``batch_idx``: index of the batch within the epoch, 0-based (``0 <= batch_idx < num_batches``);
* ``num_batches``: ``M``, the number of batches per epoch (``len(train_loader)``),

and returns the ``beta`` of ``loss = mean NLL of the batch + beta * KL / N``. With this loss, ``beta = 1`` at
every step already counts the KL once per epoch: the losses of the ``M = N / B`` batches of an epoch add up to
``M * (NLL of the data set + KL) / N = -ELBO / B``. So a schedule in this convention is "the full ELBO" when the
*mean* of its betas over an epoch is 1.

Relation to the paper repository (JurijsNazarovs/bayesian_nn, ``Utils.get_beta(beta_type, n_batches,
batch_idx)``). Its per-batch loss is ``beta_repo * KL + NLL summed over the batch``; multiplying ours by
``B`` shows ``beta_repo = beta / M``, i.e. ``beta = M * beta_repo``:

======================  =========================================  =============================================
name                    paper repository (``beta_repo``)           here (``beta``)
======================  =========================================  =============================================
``"blundell"``          ``2^(M - i - 1) / (2^M - 1)``              ``M * 2^(M - i - 1) / (2^M - 1)`` (mean 1)
``"graves"``            ``1 / M``                                  ``1``
``"standard"``          ``1`` ("original", KL counted ``M`` times)  ``1`` (KL counted once per epoch)
======================  =========================================  =============================================

with ``i = batch_idx``. The repository's ``"original"`` (``beta_repo = 1`` with its per-batch loss) weights the
KL ``M`` times per epoch, more than the ELBO does; to reproduce it use ``get_beta_schedule("constant",
value=num_batches)``. ``"standard"`` / ``"original"`` here mean the ELBO itself.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Union

from .checks import check_between, check_int, check_nonnegative
from .errors import ConfigError, UnknownNameError
from .registry import Registry

__all__ = [
    "BetaSchedule",
    "ConstantBeta",
    "BlundellBeta",
    "LinearWarmupBeta",
    "CyclicalBeta",
    "BETA_SCHEDULES",
    "get_beta_schedule",
]


class BetaSchedule:
    """Base class: a callable ``schedule(step, epoch, batch_idx, num_batches) -> float`` (see the module doc)."""

    def __call__(self, step: int, epoch: int, batch_idx: int, num_batches: int) -> float:
        _check_position(step, epoch, batch_idx, num_batches)
        return float(self.beta(step, epoch, batch_idx, num_batches))

    def beta(self, step: int, epoch: int, batch_idx: int, num_batches: int) -> float:
        """The KL weight at this position; implemented by subclasses (arguments already checked)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class ConstantBeta(BetaSchedule):
    """``beta = value`` at every step; ``value = 1`` is the ELBO (names ``"none"``, ``"standard"``,
    ``"original"``, ``"graves"``, ``"constant"``).

    Args:
        value: the KL weight, a float >= 0.

    Example:
        >>> ConstantBeta()(step=10, epoch=0, batch_idx=10, num_batches=100)
        1.0
    """

    def __init__(self, value: float = 1.0) -> None:
        self.value = check_nonnegative(value, "beta schedule: value")

    def beta(self, step, epoch, batch_idx, num_batches) -> float:
        return self.value


class BlundellBeta(BetaSchedule):
    """Blundell et al. (2015), eq. (9): most of the KL on the first batches of each epoch.

    ``beta = M * 2^(M - i - 1) / (2^M - 1)`` for batch ``i`` (0-based) of ``M``; the betas of an epoch have
    mean 1, so an epoch still counts the KL once. (The paper's weight is ``2^(M-i-1) / (2^M - 1)`` for a loss
    with the un-scaled KL; see the module doc.) Computed as ``M * 2^-(i+1) / (1 - 2^-M)`` so that it does not
    overflow for large ``M``.

    Example:
        >>> [BlundellBeta()(i, 0, i, 3) for i in range(3)]  # 3 * [4, 2, 1] / 7
        [1.7142857142857142, 0.8571428571428571, 0.42857142857142855]
    """

    def beta(self, step, epoch, batch_idx, num_batches) -> float:
        return num_batches * 0.5 ** (batch_idx + 1) / (1.0 - 0.5**num_batches)


class LinearWarmupBeta(BetaSchedule):
    """Linear KL warm-up: ``beta`` grows from ``beta_min`` to ``beta_max`` over ``warmup_steps`` steps, then stays.

    ``beta = beta_min + (beta_max - beta_min) * min(1, step / warmup_steps)``; ``warmup_steps = 0`` gives
    ``beta_max`` from the first step.

    Args:
        warmup_steps: number of steps of the ramp, an integer >= 0.
        beta_min: beta at step 0.
        beta_max: beta from step ``warmup_steps`` on.

    Example:
        >>> LinearWarmupBeta(warmup_steps=100)(step=25, epoch=0, batch_idx=25, num_batches=50)
        0.25
    """

    def __init__(self, warmup_steps: int, beta_min: float = 0.0, beta_max: float = 1.0) -> None:
        self.warmup_steps = check_int(warmup_steps, "beta schedule: warmup_steps", 0)
        self.beta_min = check_nonnegative(beta_min, "beta schedule: beta_min")
        self.beta_max = check_nonnegative(beta_max, "beta schedule: beta_max")

    def beta(self, step, epoch, batch_idx, num_batches) -> float:
        frac = 1.0 if self.warmup_steps == 0 else min(1.0, step / self.warmup_steps)
        return self.beta_min + (self.beta_max - self.beta_min) * frac


class CyclicalBeta(BetaSchedule):
    """Cyclical linear annealing (Fu et al., 2019, "Cyclical Annealing Schedule").

    The ``total_steps`` steps are cut into ``n_cycles`` cycles of ``T = total_steps / n_cycles`` steps; within a
    cycle, at position ``tau = (step mod T) / T``, ``beta = beta_min + (beta_max - beta_min) * min(1, tau / ratio)``:
    a linear ramp over the first ``ratio`` of the cycle, then ``beta_max``. From ``step >= total_steps`` on,
    ``beta = beta_max`` (training past the schedule optimises the ELBO).

    Args:
        total_steps: length of the schedule in steps (e.g. ``epochs * len(train_loader)``), >= 1.
        n_cycles: number of cycles, >= 1.
        ratio: share ``R`` of each cycle spent increasing, in ``(0, 1]``.
        beta_min: beta at the start of each cycle.
        beta_max: beta at the end of the ramp.

    Example:
        >>> s = CyclicalBeta(total_steps=8, n_cycles=2, ratio=0.5)
        >>> [s(t, 0, t, 8) for t in range(8)]
        [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]
    """

    def __init__(self, total_steps: int, n_cycles: int = 4, ratio: float = 0.5, beta_min: float = 0.0,
                 beta_max: float = 1.0) -> None:
        self.total_steps = check_int(total_steps, "CyclicalBeta: total_steps", 1,
                                     hint="e.g. total_steps=epochs * len(train_loader)")
        self.n_cycles = check_int(n_cycles, "CyclicalBeta: n_cycles", 1)
        self.ratio = check_between(ratio, "CyclicalBeta: ratio", 0, 1, closed=(False, True),
                                   hint="the share of a cycle spent increasing")
        self.beta_min = check_nonnegative(beta_min, "beta schedule: beta_min")
        self.beta_max = check_nonnegative(beta_max, "beta schedule: beta_max")

    def beta(self, step, epoch, batch_idx, num_batches) -> float:
        if step >= self.total_steps:
            return self.beta_max
        period = self.total_steps / self.n_cycles
        tau = math.fmod(step, period) / period
        return self.beta_min + (self.beta_max - self.beta_min) * min(1.0, tau / self.ratio)


#: Schedule names (case-insensitive) -> factory.
BETA_SCHEDULES: Registry[Callable[..., BetaSchedule]] = Registry("beta schedule")
BETA_SCHEDULES.register("none", ConstantBeta)
BETA_SCHEDULES.register("constant", ConstantBeta)
BETA_SCHEDULES.register("standard", ConstantBeta)
BETA_SCHEDULES.register("original", ConstantBeta)
BETA_SCHEDULES.register("graves", ConstantBeta)
BETA_SCHEDULES.register("blundell", BlundellBeta)
BETA_SCHEDULES.register("linear", LinearWarmupBeta)
BETA_SCHEDULES.register("warmup", LinearWarmupBeta)
BETA_SCHEDULES.register("cyclical", CyclicalBeta)

_FIXED_ONE = ("none", "standard", "original", "graves")  # beta = 1 by definition: no options


def get_beta_schedule(name: Union[str, Callable[..., float]] = "none", **kwargs: Any) -> Callable[..., float]:
    """Build a KL weight schedule by name (or pass a callable through).

    Names: ``"none"`` / ``"standard"`` / ``"original"`` / ``"graves"`` (beta = 1: the ELBO), ``"constant"``
    (``value``), ``"blundell"``, ``"linear"`` / ``"warmup"`` (``warmup_steps``, ``beta_min``, ``beta_max``),
    ``"cyclical"`` (``total_steps``, ``n_cycles``, ``ratio``, ``beta_min``, ``beta_max``). See the module doc
    for what each returns and how it relates to the paper repository.

    Args:
        name: a schedule name, or a callable ``f(step, epoch, batch_idx, num_batches) -> float``, returned as is.
        **kwargs: options of the schedule.

    Returns:
        ``schedule(step, epoch, batch_idx, num_batches) -> float``.

    Example:
        >>> schedule = get_beta_schedule("warmup", warmup_steps=1000)
        >>> schedule(step=500, epoch=1, batch_idx=20, num_batches=480)
        0.5
    """
    if callable(name) and not isinstance(name, str):
        if kwargs:
            raise ConfigError(f"get_beta_schedule: options {sorted(kwargs)} cannot be applied to a callable {name!r}")
        return name
    if not isinstance(name, str):
        raise ConfigError(f"a beta schedule is a name or a callable, got {type(name).__name__}")
    factory = BETA_SCHEDULES.get(name)  # UnknownNameError listing the names, with a suggestion
    key = name.lower()
    allowed = [] if key in _FIXED_ONE else list(inspect.signature(factory).parameters)
    unknown = [k for k in kwargs if k not in allowed]
    if unknown:
        raise UnknownNameError(
            f"beta schedule {name!r} has no option(s) {unknown}; its options are {allowed or 'none'}"
            + (" (use 'constant' with value=... for another fixed beta)" if key in _FIXED_ONE else "")
        )
    try:
        return factory(**kwargs)
    except TypeError as err:
        raise ConfigError(f"beta schedule {name!r}: {err}; its options are {allowed}") from err


def _check_position(step: Any, epoch: Any, batch_idx: Any, num_batches: Any) -> None:
    for label, value in (("step", step), ("epoch", epoch), ("batch_idx", batch_idx), ("num_batches", num_batches)):
        check_int(value, f"beta schedule: {label}", 0)
    if num_batches < 1 or batch_idx >= num_batches:
        raise ConfigError(
            f"beta schedule: need 0 <= batch_idx < num_batches (0-based batch index within the epoch), got "
            f"batch_idx={batch_idx}, num_batches={num_batches}; pass num_batches=len(train_loader)"
        )

