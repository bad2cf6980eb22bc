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

import contextlib
import json
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional

import torch
from torch import nn

from ..errors import CheckpointError
from .inputs import is_hf_model

__all__ = ["HF_PREFIX", "is_hf_folder", "has_label_head", "autobayes_weights", "Pretrained", "read_pretrained",
           "load_pretrained", "build_from_config", "hf_spec", "build_from_spec", "folder_summary", "summary_lines"]

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


def has_label_head(name: str) -> bool:
    """Whether the ``transformers`` class called ``name`` ends in a label head sized by ``config.num_labels``
    (``...ForSequenceClassification``, ``...ForTokenClassification``, ``...ForImageClassification``, ...).

    Example:
        >>> has_label_head("BertForSequenceClassification"), has_label_head("GPT2LMHeadModel")
        (True, False)
    """
    return re.search(r"For\w*Classification$", str(name)) is not None


def autobayes_weights(folder: Any) -> Optional[Path]:
    """The first safetensors file of ``folder`` whose header holds autobayes checkpoint metadata (a folder that
    already holds a Bayesian network: written by ``bnn.save_pretrained(DIR)``, whose ``autobayes.safetensors``
    comes first, or e.g. by ``autobayes convert DIR -o DIR/model.safetensors``), or ``None``. Only headers are
    read.

    Example:
        >>> autobayes_weights("bert-tiny/") is None  # doctest: +SKIP
        True
    """
    from ..io.files import folder_checkpoint
    from ..io.formats import METADATA_KEY, read_safetensors_metadata

    saved = folder_checkpoint(folder)  # bnn.save_pretrained's own checkpoint comes first
    for path in ([saved] if saved else []) + sorted(Path(folder).glob("*.safetensors")):
        try:
            if METADATA_KEY in read_safetensors_metadata(path):
                return path
        except CheckpointError:
            continue  # a corrupt file: transformers' own loading reports it
    return None


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
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from ..io.formats import first_line

    transformers = _transformers()
    try:
        model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    except (ValueError, AttributeError, OSError) as err:
        raise CheckpointError(f"{str(folder / 'config.json')!r} is not a JSON object ({first_line(err)})") from err
    if isinstance(model_type, str) and model_type not in CONFIG_MAPPING:
        raise CheckpointError(
            f"{str(folder / 'config.json')!r} has model_type {model_type!r}, which transformers "
            f"{transformers.__version__} does not know (custom code is never run: no trust_remote_code); upgrade "
            f"transformers if the model type is newer, or re-save the model with a transformers class"
        )
    try:  # trust_remote_code stays False: a config that needs custom code is refused by transformers itself
        return transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - ValueError / OSError / KeyError: all mean an unreadable config
        raise CheckpointError(f"cannot read the Hugging Face config of {str(folder)!r}: {first_line(err)}") from err


def _architecture(config: Any, folder: Path) -> type:
    names = list(getattr(config, "architectures", None) or [])
    if not names:
        raise CheckpointError(
            f"{str(folder / 'config.json')!r} names no architecture (no \"architectures\" entry); write the folder "
            f"with model.save_pretrained(DIR), which records the model class"
        )
    return _model_class(names[0], f"{str(folder / 'config.json')!r}")


@dataclass
class Pretrained:
    """A model read by :func:`read_pretrained`, with the weights it did not take from the folder.

    Attributes:
        model: the deterministic ``transformers`` model, in eval mode.
        resized_head: keys of the label head re-initialised for ``num_labels`` (random weights).
        missing: keys absent from the folder's weights, randomly initialised (only with ``allow_missing``).
    """

    model: nn.Module
    resized_head: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)


@contextlib.contextmanager
def _transformers_quiet(progress: bool) -> Iterator[None]:
    """transformers' load report off (autobayes checks the keys itself), its progress bars off unless
    ``progress``; both restored afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _head_keys(cls: type, config: Any, num_labels: int) -> List[str]:
    """The keys whose shapes change when ``config`` gets ``num_labels`` labels (the label head), found on models
    built on the meta device (no memory, no initialisation)."""
    import copy

    resized = copy.deepcopy(config)
    resized.num_labels = num_labels
    with torch.device("meta"):
        old, new = cls(config).state_dict(), cls(resized).state_dict()
    return [k for k, v in new.items() if k in old and tuple(old[k].shape) != tuple(v.shape)]


def _check_loading(info: Mapping[str, Any], folder: Path, cls: type, resized: List[str],
                   allow_missing: bool) -> List[str]:
    """Refuse weights that do not fit the model (as :func:`autobayes.io.load_checked` does for a state dict);
    the missing keys allowed by ``allow_missing`` are returned."""
    from ..io.state_dict import StateDictMismatch

    mismatch = StateDictMismatch(
        missing=sorted(k for k in info["missing_keys"] if k not in resized),
        unexpected=sorted(info["unexpected_keys"]),
        shape_mismatches=sorted((k, tuple(a), tuple(b)) for k, a, b in info["mismatched_keys"] if k not in resized),
    )
    allowed = mismatch.missing if allow_missing else []
    if allow_missing:
        mismatch.missing = []
    if mismatch:
        fix = " or pass --allow-missing-keys (allow_missing=True) to keep them randomly initialised" \
            if mismatch.missing and not (mismatch.unexpected or mismatch.shape_mismatches) else ""
        raise CheckpointError(
            f"the weights of {str(folder)!r} do not match its {cls.__name__} (config.json): "
            f"{mismatch.describe(limit=3)}; re-save the folder with model.save_pretrained(DIR){fix}"
        )
    return allowed


def read_pretrained(folder: Any, *, num_labels: Optional[int] = None, allow_missing: bool = False,
                    progress: bool = True) -> Pretrained:
    """The deterministic ``transformers`` model saved in ``folder`` by ``save_pretrained``, checked key by key.

    Offline only (``local_files_only=True``), the class of ``config.architectures[0]`` from the
    ``transformers`` namespace (never ``trust_remote_code``), weights from safetensors only (one file or shards
    with their index). Every weight of the model must come from the folder with its shape, and every weight in
    the folder must belong to the model: the error names the count and the first keys, as
    :func:`autobayes.io.load_checked` does.

    Args:
        folder: the ``save_pretrained`` folder.
        num_labels: a label-head model (:func:`has_label_head`) with another number of labels: the head is
            re-initialised (random weights, listed in :attr:`Pretrained.resized_head`), as transformers'
            ``num_labels=...`` with ``ignore_mismatched_sizes=True`` does.
        allow_missing: keep weights absent from the folder randomly initialised (listed in
            :attr:`Pretrained.missing`, with a warning) instead of refusing the folder.
        progress: show transformers' "Loading weights" progress bar.

    Raises:
        CheckpointError: no ``config.json``, weights not in safetensors, a folder already holding an autobayes
            checkpoint (e.g. written by a Bayesian model's ``save_pretrained``: its ``autobayes.safetensors`` is
            read by :func:`autobayes.load`), an unknown class or model type, weights that do not fit, or files
            transformers cannot read.
        ConfigError: ``num_labels`` for a model without a label head.

    Example:
        >>> loaded = read_pretrained("bert-tiny/", num_labels=5)  # doctest: +SKIP
        >>> loaded.resized_head  # doctest: +SKIP
        ['classifier.weight', 'classifier.bias']
    """
    from ..errors import ConfigError
    from ..io.formats import first_line

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
    bayesian = autobayes_weights(folder)
    if bayesian is not None:
        raise CheckpointError(
            f"{str(bayesian)!r} is already a Bayesian (autobayes) checkpoint, not Hugging Face weights to convert; "
            f"describe it with `autobayes inspect {bayesian}`, load it with autobayes.load({str(bayesian)!r})"
        )
    config = _read_config(folder)
    cls = _architecture(config, folder)
    resized: List[str] = []
    if num_labels is not None and not has_label_head(cls.__name__):
        raise ConfigError(f"--num-classes (num_labels) sizes a label head; {cls.__name__} of {str(folder)!r} has "
                          f"none: drop --num-classes")
    if num_labels is not None and num_labels != config.num_labels:
        resized = _head_keys(cls, config, num_labels)
        config.num_labels = num_labels
    with _transformers_quiet(progress):
        try:
            model, info = cls.from_pretrained(str(folder), config=config, local_files_only=True, use_safetensors=True,
                                              ignore_mismatched_sizes=True, output_loading_info=True)
        except Exception as err:  # noqa: BLE001 - whatever transformers raises means the folder cannot be loaded
            raise CheckpointError(f"cannot load the {cls.__name__} of {str(folder)!r}: {first_line(err)}") from err
    missing = _check_loading(info, folder, cls, resized, allow_missing)
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        warnings.warn(f"{len(missing)} weights of the {cls.__name__} are missing from {str(folder)!r} and keep their "
                      f"random initialisation (allowed by --allow-missing-keys): {shown}", stacklevel=2)
    return Pretrained(model.eval(), resized, missing)


def load_pretrained(folder: Any, **options: Any) -> nn.Module:
    """The deterministic ``transformers`` model saved in ``folder`` by ``save_pretrained``, in eval mode (see
    :func:`read_pretrained` for the checks and ``options``).

    Example:
        >>> model = load_pretrained("gpt2-tiny/")  # doctest: +SKIP
    """
    return read_pretrained(folder, **options).model


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
