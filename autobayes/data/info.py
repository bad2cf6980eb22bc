"""What a data set tells a model and a prediction: :class:`DatasetInfo`, and the input normalisation check.

The :class:`DatasetInfo` records everything a prediction on new inputs needs -- the input normalisation (per
channel for images, per feature for tabular data), the class names, the task and, for regression, the target
standardisation -- and ``autobayes train`` stores it in every checkpoint, where ``autobayes predict`` and
``autobayes evaluate`` read it back (:meth:`DatasetInfo.from_checkpoint`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import ConfigError
from ..hf.tasks import image_inputs

__all__ = ["DatasetInfo", "check_normalisation"]


@dataclass
class DatasetInfo:
    """What a model needs to know about a data set, and what a prediction on new inputs needs to prepare them.

    Attributes:
        task: ``"classification"`` or ``"regression"``.
        num_classes: classes, or regression outputs.
        in_channels: image channels (1 for tabular data).
        image_size: side of the square images; ``None`` for tabular data.
        num_features: input features of tabular data; ``None`` for images.
        name: the data set's name (``""`` when unknown, e.g. read from a converted checkpoint).
        target_mean: regression targets were standardised as ``(y - target_mean) / target_std``.
        target_std: see ``target_mean``.
        mean: images: the per-channel normalisation ``(x - mean) / std`` applied to pixels in ``[0, 1]``.
        std: see ``mean``.
        class_names: the name of each class, in label order (classification).
        feature_mean: tabular data: the per-feature standardisation ``(x - feature_mean) / feature_std``.
        feature_std: see ``feature_mean``.
        feature_names: tabular data: the name of each feature (column), in order.
        split_seed: the seed of the training / validation split (``None``: a fixed, official split).
        val_fraction: the share of the data held out for validation (``None``: a fixed, official split).

    Example:
        >>> from autobayes.data import load_dataset
        >>> info = load_dataset("digits")[2]
        >>> info.class_names[:3], round(info.mean[0], 4), round(info.std[0], 4)
        (['0', '1', '2'], 0.3054, 0.3761)
    """

    task: str
    num_classes: int
    in_channels: int
    image_size: Optional[int]
    num_features: Optional[int]
    name: str
    target_mean: float = 0.0
    target_std: float = 1.0
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    class_names: Optional[List[str]] = None
    feature_mean: Optional[List[float]] = None
    feature_std: Optional[List[float]] = None
    feature_names: Optional[List[str]] = None
    split_seed: Optional[int] = None
    val_fraction: Optional[float] = None

    @property
    def standardised_targets(self) -> bool:
        """Whether the regression targets were standardised (``target_mean`` / ``target_std`` other than 0 / 1):
        the network's outputs, and the training log's RMSE and NLL, are then in standardised units.

        Example:
            >>> load_dataset("diabetes")[2].standardised_targets  # doctest: +SKIP
            True
        """
        return (self.target_mean, self.target_std) != (0.0, 1.0)

    def model_kwargs(self) -> Dict[str, Any]:
        """The sizing arguments of :func:`autobayes.models.build_model` for this data."""
        return dict(num_classes=self.num_classes, in_channels=self.in_channels, image_size=self.image_size,
                    num_features=self.num_features)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (what ``autobayes train`` stores under ``metadata["dataset"]``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DatasetInfo":
        """The inverse of :meth:`to_dict`; fields missing from ``data`` (older checkpoints) take their defaults,
        unknown keys (newer checkpoints) are ignored.

        Example:
            >>> DatasetInfo.from_dict({"task": "classification", "num_classes": 2, "in_channels": 1,
            ...                        "image_size": None, "num_features": 30, "name": "x"}).mean is None
            True
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in dict(data).items() if k in known}
        values.setdefault("task", "classification")
        values.setdefault("num_classes", 1)
        values.setdefault("in_channels", 1)
        values.setdefault("image_size", None)
        values.setdefault("num_features", None)
        values.setdefault("name", "")
        return cls(**values)

    @classmethod
    def from_checkpoint(cls, spec: Mapping[str, Any]) -> "DatasetInfo":
        """What an autobayes checkpoint's header (``bnn.autobayes_checkpoint``) records about its inputs.

        Sources, in order of precedence: the data set ``autobayes train`` trained on (``metadata["dataset"]``:
        what the network has seen, so its image size, channels, classes and normalisation win), the
        preprocessing ``autobayes convert`` recorded (``metadata["preprocessing"]``: ``mean``, ``std``,
        ``class_names``, ``task`` and ``image_size``, which is ``None`` when convert was given no
        ``--image-size``: the input size is then unknown, not the size the architecture was built with), and
        last the architecture's sizing arguments (``spec["arch"]["kwargs"]``: the numbers the network was built
        with, which need not be those of its inputs: a network with adaptive pooling takes any size). A
        checkpoint that records none of them gives ``mean = None`` etc.: the caller decides what to do without
        (``autobayes predict`` warns, or refuses without an image size).

        Example:
            >>> bnn = autobayes.load("runs/digits/best.safetensors")  # doctest: +SKIP
            >>> info = DatasetInfo.from_checkpoint(bnn.autobayes_checkpoint)  # doctest: +SKIP
            >>> info.mean, info.std, info.class_names, info.image_size  # doctest: +SKIP
        """
        arch = dict((spec.get("arch") or {}).get("kwargs") or {})
        metadata = spec.get("metadata") or {}
        recorded = metadata.get("dataset") if isinstance(metadata.get("dataset"), Mapping) else {}
        preprocessing = metadata.get("preprocessing") if isinstance(metadata.get("preprocessing"), Mapping) else {}
        if recorded:  # the training data: complete (its sizes, None included, are the inputs the network has seen)
            return cls.from_dict(recorded)
        data: Dict[str, Any] = {k: arch[k] for k in ("num_classes", "in_channels", "image_size", "num_features")
                                if arch.get(k) is not None}
        if arch.get("num_features") is not None:
            data.pop("image_size", None)  # tabular data (build_model records a default image_size for every net)
        for key in ("mean", "std", "class_names", "task"):
            if preprocessing.get(key) is not None:
                data[key] = preprocessing[key]
        if "image_size" in preprocessing:  # convert's --image-size, or None: the user gave none, the size is unknown
            data["image_size"] = preprocessing["image_size"]
        hf_config = image_inputs(spec.get("arch") or {}) or {}  # a transformers image classifier's own config
        data.update({key: value for key, value in hf_config.items() if value is not None})
        return cls.from_dict(data)


def check_normalisation(
    mean: Any, std: Any, channels: Optional[int], *, names: Tuple[str, str] = ("mean", "std")
) -> Tuple[Optional[List[float]], Optional[List[float]]]:
    """Validate an input normalisation ``(x - mean) / std`` and give it one value per channel.

    Args:
        mean: a number or one number per channel (``None``: no normalisation; then ``std`` must be ``None``).
        std: the same for the standard deviations (each finite and ``> 0``).
        channels: the channels of the network's input (``None``: unknown, any count is accepted).
        names: how the error messages name the two values (``("--mean", "--std")`` on the command line).

    Returns:
        ``(mean, std)`` as lists of ``channels`` floats (a single value repeated), or ``(None, None)``.

    Raises:
        ConfigError: only one of the two given, a count that is neither 1 nor ``channels``, a value that is not
            a finite number, or a standard deviation ``<= 0``.

    Example:
        >>> check_normalisation(0.5, [0.25], 3)
        ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    """
    if mean is None and std is None:
        return None, None
    if (mean is None) != (std is None):
        given, missing = (names[0], names[1]) if std is None else (names[1], names[0])
        raise ConfigError(f"{given} needs {missing} too (the input normalisation is (x - mean) / std); give both, "
                          f"e.g. {names[0]} 0.5 {names[1]} 0.25")
    out = []
    for name, values in zip(names, (mean, std)):
        values = [values] if isinstance(values, (numbers.Real, str)) else list(values)
        try:
            floats = [float(v) for v in values]
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be numbers, got {values!r}") from None
        if not floats or channels is not None and len(floats) not in (1, channels):
            per = f"1 value per channel ({channels} for this model)" if channels else "1 value per channel"
            alone = " or one value for all channels" if channels and channels > 1 else ""
            raise ConfigError(f"{name} needs {per}{alone}, got {len(floats)}")
        if not all(math.isfinite(v) for v in floats):
            raise ConfigError(f"{name} values must be finite numbers, got {floats}; e.g. {names[0]} 0.5 {names[1]} 0.25")
        out.append(floats)
    mean_f, std_f = out
    if any(s <= 0 for s in std_f):
        raise ConfigError(f"{names[1]} values must be > 0 (they divide the input), got {std_f}")
    n = channels or max(len(mean_f), len(std_f))
    if len(mean_f) not in (1, n) or len(std_f) not in (1, n):
        raise ConfigError(f"{names[0]} has {len(mean_f)} values and {names[1]} {len(std_f)}; give one per channel "
                          f"(or one for all) to both")
    return (mean_f * n if len(mean_f) == 1 else mean_f), (std_f * n if len(std_f) == 1 else std_f)
