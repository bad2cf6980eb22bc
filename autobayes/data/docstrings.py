"""Real text on every machine: the docstrings of Python's standard library (what the examples train on)."""

from __future__ import annotations

import importlib
import inspect
from typing import List

__all__ = ["module_docstrings"]


def module_docstrings(module_name: str, min_length: int = 40) -> List[str]:
    """The docstrings of a module and of its public classes, functions and methods (those defined in it), in a
    fixed order, each longer than ``min_length`` characters; ``[]`` for a module this Python cannot import
    (e.g. ``tkinter`` without Tk). They vary a little between Python versions.

    Example:
        >>> len(module_docstrings("textwrap")) > 5
        True
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return []
    objects = [module]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            objects.append(obj)
            if inspect.isclass(obj):
                objects.extend(v for k, v in sorted(vars(obj).items()) if not k.startswith("_") and inspect.isfunction(v))
    docs = (inspect.getdoc(obj) for obj in objects)
    return [d for d in docs if d and len(d) > min_length]
