"""The autobayes checkpoint: save and load Bayesian networks that rebuild themselves.

The autobayes checkpoint is **one safetensors file**. Its tensors are the Bayesian network's state dict
(posterior means and log-variances, prior locations and scales, every other parameter and buffer); its header
metadata holds, under the key ``"autobayes"``, a JSON document::

    {
      "format": "autobayes.bnn",
      "format_version": 1,
      "arch": {"arch": "torchvision:resnet18", "kwargs": {"num_classes": 10, ...}},   # how to rebuild the net
      "bayes_config": {...},                    # BayesConfig.to_dict()
      "bayesify": {"mode": "fx"},               # the route bayesify took ("fx" or "swap"), reused on load,
                                                # and its adapter options ({"adapter": "lora", "rank": 8, ...})
      "bayesian_layers": ["conv1", "fc", ...],  # qualified names of the converted modules
      "frozen_parameters": ["fc.weight", ...],  # parameters with requires_grad=False, restored on loading
      "tied": {"lm_head.weight_posterior.mu": "transformer.wte.weight_posterior.mu", ...},  # if any, see below
      "filter_fn_accepted": null,               # or the module names a (not storable) filter_fn accepted
      "versions": {"autobayes": "0.1.0", "torch": "2.14.1", ...},
      "created_at": "2025-01-01T12:00:00+00:00",
      "metadata": {...}                         # the caller's own JSON metadata; `autobayes train` stores
    }                                           # "dataset" (DatasetInfo: normalisation, classes, ...) there,
                                                # `autobayes convert` "preprocessing" (--mean/--std/--class-names)

Loading parses that JSON, rebuilds the deterministic architecture with :func:`autobayes.models.build_model`
(no pretrained download: the weights come from the file), converts it again with :func:`autobayes.bayesify`
and loads the tensors strictly. A ``transformers`` model is recorded as ``{"arch": "transformers:<Class>",
"kwargs": {"config": {...}, "generation_config": {...}}}`` and rebuilt from that config
(:mod:`autobayes.hf.io`: the class from the ``transformers`` namespace only, nothing downloaded).

Tied tensors: one tensor registered under several keys (a posterior module shared by an output head and an input
embedding, or a deterministic head tied to the embedding) is stored once, under its first key; ``"tied"`` maps
every other key to that one (safetensors refuses tensors that share memory, and a copy would untie them).
Loading gives the stored tensor to every key and checks that the rebuilt network shares them; where it does
not, the tie is restored (the shared module, or else the shared tensor, is registered under both owners).

Nothing is ever unpickled: safetensors holds raw tensors only, and the deterministic checkpoints read by
:func:`autobayes.io.load_state_dict_file` go through ``torch.load(weights_only=True)``.

Every write goes to a temporary file in the destination folder, renamed over the destination only once
complete (:func:`autobayes.io.files.atomic_output`): a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from ..config import BayesConfig
from ..errors import AutobayesError, CheckpointError
from ..fx.routes import INPUT_SPEC, inputs_from_spec
from .arch import arch_spec, build_deterministic
from .files import PathLike, atomic_output, folder_checkpoint, require_file
from .formats import METADATA_KEY, first_line, read_safetensors, sniff, tensors_for_saving, tied_tensors
from .state_dict import StateDictMismatch, check_state_dict, load_checked
from .ties import retie, tied_entry
from .trainable import frozen_parameters, restore_frozen

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "METADATA_KEY", "CONVERT_HINT", "save", "load", "load_state",
           "open_checkpoint", "parse_spec"]

#: Value of ``"format"`` in the checkpoint's JSON header.
FORMAT_NAME = "autobayes.bnn"
#: Version of the checkpoint layout; :func:`load` refuses newer versions.
FORMAT_VERSION = 1
#: What to do with a deterministic checkpoint given where an autobayes checkpoint is expected.
CONVERT_HINT = ("to turn a deterministic checkpoint into an autobayes checkpoint, run "
                "`autobayes convert SOURCE -o OUT.safetensors --arch ARCH`")


def _versions(bnn: nn.Module) -> Dict[str, str]:
    """The versions that build the network again: a ``transformers`` model's (and PEFT's) too."""
    from .. import __version__
    from ..hf.inputs import is_hf_model

    versions = {"autobayes": __version__, "torch": torch.__version__, "python": platform.python_version()}
    extra = [n for n in ("transformers", "peft") if n in sys.modules] if is_hf_model(bnn) else []
    for name in ("torchvision", "timm", "safetensors", *extra):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # optional packages; absence is fine
            pass
    return versions


def _bayesify_options(bnn: nn.Module) -> Dict[str, Any]:
    """The route bayesify actually took (``"fx"`` or ``"swap"``, after any fallback), so that loading rebuilds
    the same module tree without tracing again in ``"auto"`` mode."""
    mode = getattr(getattr(bnn, "bayes_report", None), "mode", None)
    adapter = getattr(bnn, "bayes_adapter", None)  # bayesify(adapter="lora", rank=..., alpha=...): rebuilt alike
    options = {**({"mode": mode} if isinstance(mode, str) else {}), **(dict(adapter) if isinstance(adapter, dict) else {})}
    if mode == "export" and INPUT_SPEC in bnn.__dict__:  # the capture route captures again on inputs like these
        options["example_inputs"] = bnn.__dict__[INPUT_SPEC]
    return options


def _filter_fn_accepted(config: BayesConfig, arch: Mapping[str, Any]) -> Optional[List[str]]:
    """``filter_fn`` is Python code and cannot be stored: record the module names it accepts instead, found by
    asking it about every module of a freshly built copy of the deterministic architecture."""
    if config.filter_fn is None:
        return None
    try:
        model = build_deterministic(arch)
    except Exception as err:
        raise CheckpointError(
            f"cannot save filter_fn: rebuilding {arch['arch']!r} to record which layers it selects failed "
            f"({first_line(err)}); use include / exclude / overrides instead of filter_fn"
        ) from err
    return [name for name, module in model.named_modules() if name and config.filter_fn(module, name)]


def _unwrap(module: nn.Module) -> nn.Module:
    """The network inside ``nn.DataParallel`` / ``DistributedDataParallel`` (``.module``) or ``torch.compile``
    (``._orig_mod``) wrappers, so that the saved keys carry no wrapper prefix."""
    while True:
        if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            module = module.module
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):
            module = module._orig_mod
        else:
            return module


def _plain_state(bnn: nn.Module) -> Dict[str, torch.Tensor]:
    """``bnn.state_dict()``, refused when it holds shards (DTensors) of a model sharded by FSDP."""
    state = bnn.state_dict()
    sharded = next((k for k, v in state.items() if type(v).__name__ == "DTensor"), None)
    if sharded is not None:
        raise CheckpointError(
            f"{type(bnn).__name__} is sharded ({sharded!r} is a DTensor): gather it on every rank, then save on "
            f"rank 0: state = autobayes.distributed.full_state_dict(bnn); autobayes.save(bnn, path, state_dict=state)"
        )
    return state


def _json_ok(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def save(
    bnn: nn.Module,
    path: PathLike,
    *,
    metadata: Optional[Mapping[str, Any]] = None,
    arch: Optional[Mapping[str, Any]] = None,
    overwrite: bool = True,
    state_dict: Optional[Mapping[str, torch.Tensor]] = None,
) -> Path:
    """Save a Bayesian network as one self-describing safetensors file (see the module docstring).

    Args:
        bnn: a network returned by :func:`autobayes.bayesify` (it carries ``bayes_config``) whose deterministic
            model came from :func:`autobayes.models.build_model` (it carries ``autobayes_arch``), or was built by
            timm or torchvision: its architecture is then recognised (``"timm:resnet18"``, with its number of
            classes and input channels) when rebuilding it reproduces every tensor shape.
        path: destination, conventionally ``*.safetensors``. Written atomically.
        metadata: your own JSON-serialisable information (dataset, epochs, accuracy, ...), stored verbatim.
        arch: ``{"arch": ..., "kwargs": {...}}`` when the network carries no ``autobayes_arch`` and is not a
            recognised timm / torchvision network (e.g. ``{"arch": "mypackage.models:make_net", "kwargs":
            {"width": 64}}``).
        overwrite: replace an existing file (default, as ``torch.save``); ``False`` raises
            :class:`OutputExistsError` instead.
        state_dict: the tensors to save instead of ``bnn.state_dict()``: the full state dict of a sharded model,
            gathered on every rank by :func:`autobayes.distributed.full_state_dict` (then saved on rank 0).

    Returns:
        The path written.

    Example:
        >>> bnn = autobayes.bayesify(build_model("torchvision:resnet18", num_classes=10), posterior="gaussian")
        >>> autobayes.save(bnn, "resnet18_bnn.safetensors", metadata={"dataset": "cifar10"})  # doctest: +SKIP
        >>> same = autobayes.load("resnet18_bnn.safetensors")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    bnn = _unwrap(bnn)
    config = getattr(bnn, "bayes_config", None)
    if not isinstance(config, BayesConfig):
        raise CheckpointError(
            f"save() expects a network returned by autobayes.bayesify (it has a .bayes_config), got a "
            f"{type(bnn).__name__} without one; for a deterministic model use torch.save(model.state_dict(), path)"
        )
    if metadata is not None and not _json_ok(dict(metadata)):
        raise CheckpointError("metadata must be JSON-serialisable (numbers, strings, lists, dicts)")
    arch = arch_spec(bnn, arch)
    config_dict = config.to_dict()
    from ..fx.runtime import kl_units

    state = _plain_state(bnn) if state_dict is None else dict(state_dict)
    tied = tied_tensors(state)

    layers = list(kl_units(bnn))
    spec = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": arch,
        "bayes_config": config_dict,
        "filter_fn_accepted": _filter_fn_accepted(config, arch),
        "bayesify": _bayesify_options(bnn),
        "bayesian_layers": layers,
        "frozen_parameters": frozen_parameters(bnn),
        "versions": _versions(bnn),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metadata": dict(metadata or {}),
    }
    if tied:  # only when there are ties: the header of a network without any is unchanged
        spec["tied"] = tied
    try:
        header = json.dumps(spec)
    except TypeError as err:
        raise CheckpointError(f"cannot save the configuration as JSON: {err}") from err
    tensors = tensors_for_saving({k: v for k, v in state.items() if k not in tied})
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: header, "format": "pt"})
    return path


def parse_spec(path: Path, metadata: Mapping[str, str]) -> Dict[str, Any]:
    """The JSON document of a checkpoint's header metadata (see the module docstring), checked: the format,
    a version this code understands, an ``arch`` and a ``bayes_config`` entry.

    Example:
        >>> parse_spec(path, read_safetensors_metadata(path))["arch"]  # doctest: +SKIP
        {'arch': 'digits_cnn', 'kwargs': {'num_classes': 10, 'in_channels': 1, 'image_size': 8}}
    """
    if METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file without autobayes metadata (a deterministic checkpoint?); {CONVERT_HINT}"
        )
    try:
        spec = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"checkpoint {str(path)!r} has a corrupt autobayes header (invalid JSON: {err})") from err
    if not isinstance(spec, dict) or spec.get("format") != FORMAT_NAME:
        raise CheckpointError(f"checkpoint {str(path)!r} has an unrecognised header (format {spec.get('format') if isinstance(spec, dict) else None!r}, expected {FORMAT_NAME!r})")
    version = spec.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {str(path)!r} uses format version {version!r}, newer than this autobayes understands "
            f"({FORMAT_VERSION}); upgrade autobayes"
        )
    for key in ("arch", "bayes_config"):
        if not isinstance(spec.get(key), dict):
            raise CheckpointError(f"checkpoint {str(path)!r} has a corrupt autobayes header (no {key!r} entry)")
    return spec


def open_checkpoint(path: PathLike) -> Path:
    """``path``, once it is known to be a safetensors file; otherwise a :class:`CheckpointError` saying what it is
    (missing, truncated, a ``torch.save`` file: convert it, something else). A folder holding an autobayes
    checkpoint (:func:`folder_checkpoint`) gives that file.

    Example:
        >>> open_checkpoint("model.pt")  # doctest: +SKIP
        Traceback (most recent call last):
        autobayes.errors.CheckpointError: 'model.pt' is a torch.save file, not an autobayes checkpoint ...
    """
    path = folder_checkpoint(path) or require_file(path, "checkpoint")
    kind = sniff(path)
    if kind == "truncated":
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt (its safetensors header is cut short)")
    if kind in ("torch-zip", "torch-pickle"):
        raise CheckpointError(f"{str(path)!r} is a torch.save file, not an autobayes checkpoint (a safetensors file written by autobayes.save); {CONVERT_HINT}")
    if kind != "safetensors":
        raise CheckpointError(f"{str(path)!r} is not an autobayes checkpoint (not a safetensors file: wrong format or corrupt)")
    return path


def _rebuild_config(spec: Mapping[str, Any]) -> BayesConfig:
    data = dict(spec["bayes_config"])
    accepted = spec.get("filter_fn_accepted")
    if accepted is not None:  # the saved filter_fn, as the set of module names it accepted
        names = frozenset(accepted)
        data["filter_fn"] = lambda module, name: name in names
    return BayesConfig.from_dict(data)


def _load_tensors(bnn: nn.Module, path: Path, spec: Mapping[str, Any], tensors: Dict[str, Any], strict: bool,
                  hint: str = "") -> None:
    """Load a checkpoint's ``tensors`` into ``bnn``, giving tied keys their stored tensor and restoring ties."""
    tied = tied_entry(path, spec, tensors)
    tensors.update({key: tensors[first] for key, first in tied.items()})
    if strict:
        load_checked(bnn, tensors, f"checkpoint {str(path)!r}", hint)
    else:
        mismatch = check_state_dict(bnn, tensors)
        if mismatch.shape_mismatches:
            only_shapes = StateDictMismatch(shape_mismatches=mismatch.shape_mismatches)
            raise CheckpointError(f"checkpoint {str(path)!r} does not match the architecture: {only_shapes.describe()}{hint}")
        bnn.load_state_dict(tensors, strict=False)
    retie(bnn, tied)


def load_state(bnn: nn.Module, path: PathLike) -> nn.Module:
    """Load the state of the autobayes checkpoint ``path`` (a file, or a folder holding one) into the Bayesian
    network ``bnn`` of the same architecture, strictly, in place (no rebuild: what ``BayesTrainer`` does to resume
    or to load the best checkpoint). Returns ``bnn``.

    Example:
        >>> autobayes.io.load_state(bnn, "out/checkpoint-20")  # doctest: +SKIP
    """
    path = open_checkpoint(path)
    tensors, metadata = read_safetensors(path, device="cpu")
    spec = parse_spec(path, metadata)
    _load_tensors(bnn, path, spec, tensors, strict=True)  # load_state_dict copies onto bnn's devices
    return bnn


def load(path: PathLike, *, device: Union[str, torch.device] = "cpu", strict: bool = True) -> nn.Module:
    """Rebuild a Bayesian network saved by :func:`save`: architecture, configuration and state.

    Args:
        path: an autobayes ``.safetensors`` checkpoint, or a folder holding one (``bnn.save_pretrained(DIR)``).
        device: where to put the tensors.
        strict: require the checkpoint's keys and shapes to match the rebuilt network exactly (default).

    Returns:
        The network, in eval mode, with ``bayes_config`` and ``autobayes_arch`` set, the checkpoint's header
        under ``autobayes_checkpoint``, and the saved network's trainable parameters (``requires_grad``).

    Raises:
        CheckpointError: missing / corrupt / truncated / wrong-format file, or a state that does not match the
            architecture (the message lists missing and unexpected keys and shape mismatches).

    Example:
        >>> bnn = autobayes.load("resnet18_bnn.safetensors")  # doctest: +SKIP
        >>> out, kl = bnn(torch.randn(2, 3, 224, 224))  # doctest: +SKIP
    """
    from ..api import bayesify

    path = open_checkpoint(path)
    tensors, metadata = read_safetensors(path, device="cpu")
    spec = parse_spec(path, metadata)
    try:
        model = build_deterministic(spec["arch"])
        config = _rebuild_config(spec)
        options = {k: v for k, v in (spec.get("bayesify") or {}).items()}
        if isinstance(options.get("example_inputs"), dict):  # the shapes and dtypes an export-route model was captured on
            args, kwargs = inputs_from_spec(options["example_inputs"])
            options["example_inputs"] = kwargs if not args else args if not kwargs else None
            if options["example_inputs"] is None:
                raise CheckpointError(f"{str(path)!r} records example inputs with both positional and keyword "
                                      f"arguments, which bayesify(example_inputs=...) cannot take")
        bnn = bayesify(model, config=config, allow_deterministic=True, **options)  # the file says what it holds
    except AutobayesError as err:
        raise CheckpointError(f"cannot rebuild the network of {str(path)!r} ({spec['arch']['arch']}): {err}") from err
    hint = (
        f" (the file was written with {', '.join(f'{k} {v}' for k, v in spec.get('versions', {}).items())}; "
        f"a different autobayes / torchvision / timm version may build the architecture differently)"
    )
    _load_tensors(bnn, path, spec, tensors, strict, hint)
    if isinstance(spec.get("frozen_parameters"), list):  # what the saved network trained (older files: bayesify's)
        restore_frozen(bnn, spec["frozen_parameters"])
    bnn.autobayes_arch = dict(spec["arch"])
    bnn.autobayes_checkpoint = spec
    bnn.to(device)
    bnn.eval()
    return bnn
