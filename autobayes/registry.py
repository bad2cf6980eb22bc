"""One small generic registry, used for posteriors, priors and KL estimators."""

from __future__ import annotations

import difflib
from typing import Callable, Dict, Generic, Iterator, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")

__all__ = ["Registry", "did_you_mean"]


def did_you_mean(name: str, choices) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest of ``choices`` to ``name``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


class Registry(Generic[T]):
    """A name -> object table whose misses list the valid names and suggest the closest one.

    Example:
        >>> POSTERIORS = Registry("posterior")
        >>> @POSTERIORS.register("gaussian")
        ... class Gaussian: ...
        >>> POSTERIORS.get("gausian")  # doctest: +SKIP
        UnknownNameError: unknown posterior 'gausian'; choose one of ['gaussian']. Did you mean 'gaussian'?
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: Dict[str, T] = {}

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """Register ``obj`` under ``name``; usable as a decorator when ``obj`` is omitted."""

        def _add(o: T) -> T:
            key = name.lower()
            if key in self._items and not overwrite and self._items[key] is not o:
                raise ValueError(
                    f"a {self.kind} named {name!r} is already registered ({self._items[key]!r}); "
                    f"pass overwrite=True to replace it"
                )
            self._items[key] = o
            return o

        return _add(obj) if obj is not None else _add

    def register_subclass(self, name: str, base: type):
        """Class decorator: check that the class derives from ``base``, set its ``name`` and register it."""

        def _add(cls: type) -> type:
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise TypeError(f"registering a {self.kind} expects a {base.__name__} subclass, got {cls!r}")
            cls.name = name
            self.register(name, cls)
            return cls

        return _add

    def get(self, name: str) -> T:
        key = str(name).lower()
        if key not in self._items:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of {sorted(self._items)}.{did_you_mean(key, self._items)}"
            )
        return self._items[key]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return str(name).lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
