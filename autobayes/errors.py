"""Exception types raised by autobayes.

Every error names the offending thing (a module path, a type, a value), lists the valid choices where there
are some, and says what to do instead.
"""

from __future__ import annotations

__all__ = [
    "AutobayesError",
    "ConfigError",
    "UnknownNameError",
    "NoClosedFormError",
    "UntraceableModelError",
    "CheckpointError",
    "DataMismatchError",
]


class AutobayesError(Exception):
    """Base class of every error autobayes raises on purpose."""


class ConfigError(AutobayesError, ValueError):
    """A configuration value is out of range or of the wrong type."""


class UnknownNameError(ConfigError, KeyError):
    """A name (posterior, prior, KL method, architecture, ...) is not registered.

    Subclasses ``KeyError`` so that ``except KeyError`` still works, but prints its message unquoted.
    """

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NoClosedFormError(AutobayesError, NotImplementedError):
    """The KL of a posterior / prior pair has no registered closed form."""


class UntraceableModelError(AutobayesError, RuntimeError):
    """torch.fx could not trace the model (raised with ``mode="fx"``)."""


class CheckpointError(AutobayesError, RuntimeError):
    """A checkpoint file is missing, corrupt, of the wrong format or does not match the architecture."""


class DataMismatchError(AutobayesError, ValueError):
    """A network given to train does not fit the data: its classes, channels or features, or its inputs' shape
    (``autobayes train --init CHECKPOINT`` with other data: a failure, exit code 1, not a usage error)."""
