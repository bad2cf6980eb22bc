"""Saving and loading the fitted calibrators (:class:`~autobayes.calibration.TemperatureScaler`,
:class:`~autobayes.calibration.ConformalClassifier`, :class:`~autobayes.calibration.ConformalRegressor`) as small
JSON files: a ``kind`` plus the dataclass's fields, written atomically (:func:`autobayes.io.atomic_output`)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, Type, TypeVar, Union

from ..errors import ConfigError

__all__ = ["JsonRecord"]

R = TypeVar("R", bound="JsonRecord")


class JsonRecord:
    """Mixin of a frozen dataclass of numbers and strings: ``to_dict`` / ``from_dict`` / ``save`` / ``load``.

    Infinite floats (an uninformative conformal threshold) are stored as the strings ``"inf"`` / ``"-inf"``, so the
    file is strict JSON.
    """

    def to_dict(self) -> Dict[str, Any]:
        """The fields, plus ``kind`` (the class name), as JSON-ready values."""
        out: Dict[str, Any] = {"kind": type(self).__name__}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, float) and math.isinf(value) else value
        return out

    @classmethod
    def from_dict(cls: Type[R], data: Dict[str, Any]) -> R:
        """Rebuild from :meth:`to_dict`'s output; unknown or missing fields name the fix."""
        kind = data.get("kind", cls.__name__)
        if kind != cls.__name__:
            raise ConfigError(f"this record holds a {kind}, not a {cls.__name__}; load it with autobayes.{kind}.load")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        values = {k: v for k, v in data.items() if k != "kind"}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown fields {unknown}; expected some of {sorted(names)}")
        values = {k: float(v) if v in ("inf", "-inf") else v for k, v in values.items()}
        try:
            return cls(**values)
        except TypeError as err:
            raise ConfigError(f"{cls.__name__}: {err}; save it again with {cls.__name__}.save(path)") from err

    def save(self, path: Union[str, os.PathLike], *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` atomically (an existing file needs ``overwrite=True``)."""
        from ..io import atomic_output

        with atomic_output(path, overwrite=overwrite) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls: Type[R], path: Union[str, os.PathLike]) -> R:
        """Read a file written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read {cls.__name__} from {str(path)!r}: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{str(path)!r} holds no {cls.__name__} (expected a JSON object)")
        return cls.from_dict(data)
