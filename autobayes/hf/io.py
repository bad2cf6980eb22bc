"""Hugging Face model folders and the checkpoint spec of a ``transformers`` model.

A folder written by ``model.save_pretrained(DIR)`` (``config.json`` + ``model.safetensors``) is read offline:
the class named in ``config.architectures`` is looked up in the ``transformers`` namespace only (never
``trust_remote_code``, never a download: ``local_files_only=True``) and its weights come from safetensors only
(a pickled ``pytorch_model.bin`` is refused). An autobayes checkpoint of a ``transformers`` model records the
architecture as ``{"arch": "transformers:<Class>", "kwargs": {"config": {...}, "generation_config": {...}}}``
(the model's config as JSON), from which :func:`build_from_spec` rebuilds the deterministic model (random
weights: the checkpoint's tensors replace them).

``transformers`` is imported only by the functions that need it, never by ``import autobayes``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from ..errors import CheckpointError
from .inputs import is_hf_model

__all__ = ["HF_PREFIX", "is_hf_folder", "load_pretrained", "build_from_config", "hf_spec", "build_from_spec",
           "folder_summary", "summary_lines"]

#: The architecture name of a ``transformers`` model in a checkpoint spec: ``"transformers:GPT2LMHeadModel"``.
HF_PREFIX = "transformers:"
_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


def is_hf_folder(path: Any) -> bool:
    """Whether ``path`` is a folder holding a Hugging Face ``config.json`` (as ``save_pretrained`` writes).

    Example:
        >>> is_hf_folder("runs/digits/best.safetensors")
        False
    """
    path = Path(path)
    return path.is_dir() and (path / "config.json").is_file()


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise CheckpointError(
            "reading a Hugging Face model needs the transformers package: pip install 'autobayes[hf]'"
        ) from err
    return transformers


def _model_class(name: Any, where: str) -> type:
    """The ``transformers`` class called ``name`` (looked up in the ``transformers`` namespace only)."""
    transformers = _transformers()
    cls = getattr(transformers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        raise CheckpointError(
            f"{where} names the architecture {name!r}, which is not a model class of transformers "
            f"{transformers.__version__} (custom code is never run: no trust_remote_code); re-save the model "
            f"with a transformers class, e.g. GPT2LMHeadModel.from_pretrained(...).save_pretrained(DIR)"
        )
    return cls


def _read_config(folder: Path) -> Any:
    transformers = _transformers()
    try:  # trust_remote_code stays False: a config that needs custom code is refused by transformers itself
        return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - ValueError / OSError / KeyError: all mean an unreadable config
        raise CheckpointError(f"cannot read the Hugging Face config of {str(folder)!r}: {err}") from err


def _architecture(config: Any, folder: Path) -> type:
    names = list(getattr(config, "architectures", None) or [])
    if not names:
        raise CheckpointError(
            f"{str(folder / 'config.json')!r} names no architecture (no \"architectures\" entry); write the folder "
            f"with model.save_pretrained(DIR), which records the model class"
        )
    return _model_class(names[0], f"{str(folder / 'config.json')!r}")


def load_pretrained(folder: Any) -> nn.Module:
    """The deterministic ``transformers`` model saved in ``folder`` by ``save_pretrained``, in eval mode.

    Offline only (``local_files_only=True``), the class of ``config.architectures[0]`` from the
    ``transformers`` namespace (never ``trust_remote_code``), weights from safetensors only.

    Raises:
        CheckpointError: no ``config.json``, weights not in safetensors, an unknown class, or files transformers
            cannot read; or a folder written by a Bayesian model's ``save_pretrained`` (already Bayesian: its
            ``autobayes.safetensors`` is read by :func:`autobayes.load`).

    Example:
        >>> model = load_pretrained("gpt2-tiny/")  # doctest: +SKIP
    """
    folder = Path(folder)
    _refuse_bayesian(folder)
    if not is_hf_folder(folder):
        raise CheckpointError(f"{str(folder)!r} is not a Hugging Face model folder (no config.json in it)")
    if not any((folder / name).is_file() for name in _WEIGHTS):
        pickled = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        found = f" (found {', '.join(sorted(pickled))}: pickled files are never read)" if pickled else ""
        raise CheckpointError(
            f"{str(folder)!r} holds no model.safetensors{found}; re-save the model with "
            f"model.save_pretrained(DIR) (safetensors is its default format)"
        )
    config = _read_config(folder)
    cls = _architecture(config, folder)
    try:
        model = cls.from_pretrained(str(folder), config=config, local_files_only=True, use_safetensors=True)
    except Exception as err:  # noqa: BLE001 - whatever transformers raises means the folder cannot be loaded
        raise CheckpointError(f"cannot load the {cls.__name__} of {str(folder)!r}: {err}") from err
    return model.eval()


def _refuse_bayesian(folder: Path) -> None:
    """A folder written by ``bnn.save_pretrained`` holds a Bayesian network: converting its posterior means
    afresh would drop the learned variances, so it is refused with what to do instead."""
    from ..io.files import FOLDER_CHECKPOINT, folder_checkpoint

    if folder_checkpoint(folder) is not None:
        raise CheckpointError(
            f"{str(folder)!r} holds a Bayesian network already ({FOLDER_CHECKPOINT}, written by save_pretrained): "
            f"read it with autobayes.load({str(folder)!r}) or `autobayes inspect {folder}`. To start a new "
            f"posterior from its posterior means deliberately: "
            f"autobayes.bayesify(AutoModel.from_pretrained({str(folder)!r}))"
        )


def build_from_config(cls: type, config: Mapping[str, Any],
                      generation: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """A freshly initialised ``cls`` of the config dict ``config`` (and generation config ``generation``), in the
    floating dtype the config records (``"dtype"``: a model saved in bfloat16 is rebuilt in bfloat16)."""
    model = cls(cls.config_class.from_dict(dict(config)))
    dtype = getattr(torch, str(config.get("dtype") or config.get("torch_dtype") or ""), None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        model = model.to(dtype)
    if generation and getattr(model, "generation_config", None) is not None:
        model.generation_config = type(model.generation_config).from_dict(dict(generation))
    return model.eval()


def hf_spec(model: nn.Module) -> Optional[Dict[str, Any]]:
    """The checkpoint spec of a ``transformers`` model (``None`` for any other network).

    The class is the first of the model's classes that ``transformers`` exports (a class autobayes derives, or a
    user's subclass, is not stored); the config is ``model.config`` as JSON.

    Example:
        >>> hf_spec(bnn)["arch"]  # doctest: +SKIP
        'transformers:GPT2LMHeadModel'
    """
    if not is_hf_model(model):
        return None
    transformers = sys.modules["transformers"]
    cls = next((c for c in type(model).__mro__ if getattr(transformers, c.__name__, None) is c), None)
    if cls is None or not issubclass(cls, transformers.PreTrainedModel):
        return None
    kwargs: Dict[str, Any] = {"config": json.loads(model.config.to_json_string(use_diff=False))}
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        kwargs["generation_config"] = json.loads(generation.to_json_string(use_diff=True))
    return {"arch": HF_PREFIX + cls.__name__, "kwargs": kwargs}


def build_from_spec(arch: Mapping[str, Any]) -> nn.Module:
    """The deterministic model of a ``"transformers:<Class>"`` spec (random weights, nothing downloaded).

    Example:
        >>> build_from_spec({"arch": "transformers:GPT2LMHeadModel", "kwargs": {"config": {...}}})  # doctest: +SKIP
    """
    name = arch["arch"][len(HF_PREFIX):]
    kwargs = dict(arch.get("kwargs") or {})
    if not isinstance(kwargs.get("config"), Mapping):
        raise CheckpointError(f"the architecture spec {arch['arch']!r} stores no config dict under kwargs['config']")
    return build_from_config(_model_class(name, "the checkpoint"), kwargs["config"], kwargs.get("generation_config"))


def folder_summary(folder: Any) -> Dict[str, Any]:
    """What ``autobayes inspect DIR`` prints about a Hugging Face folder before the conversion report: its class,
    model type, weight files and sizes (read from the config and the file headers, no weights loaded).

    Example:
        >>> folder_summary("gpt2-tiny/")["architecture"]  # doctest: +SKIP
        'GPT2LMHeadModel'
    """
    folder = Path(folder)
    config = _read_config(folder)
    cls = _architecture(config, folder)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    return {"folder": str(folder), "architecture": cls.__name__, "model_type": getattr(config, "model_type", None),
            "files": files, "safetensors": any(name in files for name in _WEIGHTS)}


def summary_lines(summary: Mapping[str, Any]) -> str:
    """The text of :func:`folder_summary` for ``autobayes inspect DIR``."""
    return "\n".join([
        f"Hugging Face model folder {summary['folder']}",
        f"  architecture:  {summary['architecture']} (model type {summary['model_type']})",
        f"  files:         {', '.join(summary['files'])}",
    ])
