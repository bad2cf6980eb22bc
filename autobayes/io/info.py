"""Describing a checkpoint without building its network: :func:`read_checkpoint_info` (``autobayes inspect FILE``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping

from ..config import BayesConfig
from ..errors import CheckpointError
from .checkpoint import open_checkpoint, parse_spec
from .files import PathLike
from .formats import first_line, read_safetensors_metadata
from ..hf.io import has_label_head

__all__ = ["CheckpointInfo", "read_checkpoint_info"]


@dataclass
class CheckpointInfo:
    """The JSON header of an autobayes checkpoint plus a summary of its tensors (no model is built).

    Attributes:
        path: the file.
        spec: the parsed JSON document (see :mod:`autobayes.io.checkpoint`).
        num_tensors: how many tensors the file holds.
        num_elements: their total number of elements.
    """

    path: Path
    spec: Dict[str, Any]
    num_tensors: int = 0
    num_elements: int = 0

    @property
    def arch(self) -> Dict[str, Any]:
        return self.spec["arch"]

    @property
    def bayes_config(self) -> BayesConfig:
        return BayesConfig.from_dict(self.spec["bayes_config"])

    def to_dict(self) -> Dict[str, Any]:
        return {"path": str(self.path), "num_tensors": self.num_tensors, "num_elements": self.num_elements, **self.spec}

    def __str__(self) -> str:
        spec = self.spec
        cfg = spec["bayes_config"]
        versions = ", ".join(f"{k} {v}" for k, v in spec.get("versions", {}).items())
        lines = [
            f"autobayes checkpoint {self.path} (format {spec['format']} v{spec['format_version']})",
            f"  architecture:    {_architecture(spec['arch'])}",
            f"  posterior:       {cfg.get('posterior')}   prior: {cfg.get('prior')}(loc={cfg.get('prior_loc')}, "
            f"scale={cfg.get('prior_scale')})   kl: {cfg.get('kl')} (n_mc={cfg.get('n_mc') or 'default'})   forward: {cfg.get('forward')}",
            f"  bayesian layers: {len(spec.get('bayesian_layers', []))}: {_short_list(spec.get('bayesian_layers', []))}",
            f"  tensors:         {self.num_tensors} ({self.num_elements:,} elements)",
            f"  created:         {spec.get('created_at', '?')} with {versions}",
        ]
        tied = spec.get("tied") or {}
        if tied:
            lines.insert(4, f"  tied tensors:    {len(tied)} stored once: "
                            f"{_short_list([f'{k} = {v}' for k, v in tied.items()], 3)}")
        lines[3:3] = _hf_lines(spec["arch"]) if _is_hf(spec["arch"]) else _data_lines(spec)
        adapter = _adapter_line(spec.get("bayesify") or {})
        if adapter:
            lines.insert(3, adapter)
        shown = {k: v for k, v in (spec.get("metadata") or {}).items() if k not in ("dataset", "preprocessing")}
        if shown:  # the data set and the preprocessing are described above
            lines.append(f"  metadata:        {json.dumps(shown)}")
        return "\n".join(lines)


def _is_hf(arch: Mapping[str, Any]) -> bool:
    return str(arch.get("arch", "")).startswith("transformers:")


def _architecture(arch: Mapping[str, Any]) -> str:
    """``NAME(kwargs)``; for a ``transformers`` model its class and model type (its config is long)."""
    kwargs = arch.get("kwargs") or {}
    if _is_hf(arch):
        config = kwargs.get("config") or {}
        return f"{arch['arch']} (model type {config.get('model_type')!r}, config of {len(config)} entries)"
    return f"{arch['arch']}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def _adapter_line(options: Mapping[str, Any]) -> str:
    """``adapter: lora (rank 8, alpha 16) ...`` for a checkpoint converted with ``bayesify(adapter=...)``."""
    adapter = options.get("adapter")
    if not adapter:
        return ""
    sizes = ", ".join(f"{k} {options[k]:g}" for k in ("rank", "alpha") if isinstance(options.get(k), (int, float)))
    return (f"  adapter:         {adapter}{f' ({sizes})' if sizes else ''}: the low-rank factors are Bayesian, the "
            f"base weights stay deterministic")


def _plural(n: int, word: str, words: str) -> str:
    return f"{n} {word if n == 1 else words}"


def _hf_lines(arch: Mapping[str, Any]) -> List[str]:
    """The sizes a ``transformers`` config records: vocabulary, width, layers, labels."""
    config = (arch.get("kwargs") or {}).get("config") or {}
    keys = ("vocab_size", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_attention_heads", "n_head",
            "max_position_embeddings", "n_positions")
    sizes = ", ".join(f"{k}={config[k]}" for k in keys if config.get(k) is not None)
    lines = [f"  config:          {sizes}"] if sizes else []
    labels = config.get("id2label") or {}
    if len(labels) and has_label_head(arch["arch"]):
        names = [str(labels[k]) for k in sorted(labels, key=lambda k: int(k) if str(k).isdigit() else 0)]
        task = " (regression)" if config.get("problem_type") == "regression" else ""
        lines.append(f"  labels:          {len(names)}{task}: {_short_list(names, 10)}")
    return lines


def _numbers(values: List[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _data_lines(spec: Mapping[str, Any]) -> List[str]:
    """What the checkpoint records about its inputs and outputs (see :meth:`autobayes.data.DatasetInfo.from_checkpoint`)."""
    from ..data import DatasetInfo

    info = DatasetInfo.from_checkpoint(spec)
    recorded = (spec.get("metadata") or {}).get("dataset") or {}
    preprocessing = (spec.get("metadata") or {}).get("preprocessing") or {}
    known_task = bool(recorded.get("task") or preprocessing.get("task"))
    if info.task == "regression":
        task = f"regression, {info.num_classes} output(s)"
        if recorded and info.standardised_targets:
            task += f"; targets standardised, y = {info.target_mean:.6g} + {info.target_std:.6g} * output"
        elif recorded:
            task += "; targets in their own units (not standardised)"
    else:
        names = f": {_short_list(info.class_names, 10)}" if info.class_names else " (class names not recorded)"
        task = f"classification, {_plural(info.num_classes, 'class', 'classes')}{names}"
        if info.num_classes == 1:  # one output is no classifier of classes: say what the head is
            task = "classification, 1 output (a single logit)" if known_task else \
                "1 output (a single logit, or a regression: record which with `autobayes convert --task`)"
            known_task = True  # what is unknown is said above
    lines = [f"  task:            {task}" + ("" if known_task else " (assumed: not recorded)")]
    if info.image_size is not None:
        shape = f"{info.in_channels}x{info.image_size}x{info.image_size} images"
        if info.mean is not None:
            shape += f", pixels in [0, 1] normalised as (x - {_numbers(info.mean)}) / {_numbers(info.std)}"
        else:
            shape += ", input normalisation not recorded (pass --mean / --std to `autobayes predict`)"
        lines.append(f"  inputs:          {shape}")
    elif info.num_features is not None:
        text = f"{info.num_features} features"
        if info.feature_names:
            text += f" ({_short_list(info.feature_names, 4)})"
        text += ", standardised per feature with stored statistics" if info.feature_mean is not None else \
            ", feature standardisation not recorded (fed as given)"
        lines.append(f"  inputs:          {text}")
    else:
        lines.append(f"  inputs:          {info.in_channels}-channel images of unrecorded size (converted without "
                     f"--image-size: give it to `autobayes predict` / `evaluate`)")
    if info.name:
        split = "" if info.split_seed is None else \
            f" (validation split: {info.val_fraction:g} of it, seed {info.split_seed})"
        lines.append(f"  data set:        {info.name}{split}")
    return lines


def _short_list(names: List[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


def read_checkpoint_info(path: PathLike) -> CheckpointInfo:
    """Read an autobayes checkpoint's header without building the network (``autobayes inspect FILE``).

    Example:
        >>> print(autobayes.read_checkpoint_info("resnet18_bnn.safetensors"))  # doctest: +SKIP
    """
    from safetensors import safe_open

    path = open_checkpoint(path)
    spec = parse_spec(path, read_safetensors_metadata(path))
    n_tensors = n_elements = 0
    try:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():
                shape = fh.get_slice(key).get_shape()
                n_tensors += 1
                numel = 1
                for d in shape:
                    numel *= d
                n_elements += numel
    except Exception as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({first_line(err)})") from err
    return CheckpointInfo(path=path, spec=spec, num_tensors=n_tensors, num_elements=n_elements)
