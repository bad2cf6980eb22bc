"""Checkpoints: save and load Bayesian networks that rebuild themselves, read deterministic checkpoints safely.

The autobayes checkpoint is **one safetensors file**. Its tensors are the Bayesian network's state dict
(posterior means and log-variances, prior locations and scales, every other parameter and buffer); its header
metadata holds, under the key ``"autobayes"``, a JSON document::

    {
      "format": "autobayes.bnn",
      "format_version": 1,
      "arch": {"arch": "torchvision:resnet18", "kwargs": {"num_classes": 10, ...}},   # how to rebuild the net
      "bayes_config": {...},                    # BayesConfig.to_dict()
      "bayesify": {"mode": "fx"},               # the route bayesify took ("fx" or "swap"), reused on load
      "bayesian_layers": ["conv1", "fc", ...],  # qualified names of the converted modules
      "filter_fn_accepted": null,               # or the module names a (not storable) filter_fn accepted
      "versions": {"autobayes": "0.1.0", "torch": "2.14.1", ...},
      "created_at": "2025-01-01T12:00:00+00:00",
      "metadata": {...}                         # the caller's own JSON metadata; `autobayes train` stores
    }                                           # "dataset" (DatasetInfo: normalisation, classes, ...) there,
                                                # `autobayes convert` "preprocessing" (--mean/--std/--class-names)

Loading parses that JSON, rebuilds the deterministic architecture with :func:`autobayes.models.build_model`
(no pretrained download: the weights come from the file), converts it again with :func:`autobayes.bayesify`
and loads the tensors strictly. Nothing is ever unpickled: safetensors holds raw tensors only, and the
deterministic checkpoints read by :func:`load_state_dict_file` go through ``torch.load(weights_only=True)``.

Every write goes to a temporary file in the destination folder, renamed over the destination only once
complete (:func:`atomic_output`): a crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import pickle
import platform
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from .config import BayesConfig
from .errors import AutobayesError, CheckpointError

__all__ = [
    "save",
    "load",
    "read_checkpoint_info",
    "CheckpointInfo",
    "load_state_dict_file",
    "check_state_dict",
    "StateDictMismatch",
    "atomic_output",
    "check_output",
    "OutputExistsError",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "METADATA_KEY",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Value of ``"format"`` in the checkpoint's JSON header.
FORMAT_NAME = "autobayes.bnn"
#: Version of the checkpoint layout; :func:`load` refuses newer versions.
FORMAT_VERSION = 1
#: safetensors header-metadata key holding the JSON document.
METADATA_KEY = "autobayes"

#: Top-level keys under which training scripts commonly nest a state dict (searched in this order).
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema", "net", "network")
#: Prefixes added by wrappers: ``nn.DataParallel`` / DDP (``module.``) and ``torch.compile`` (``_orig_mod.``).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class OutputExistsError(CheckpointError, FileExistsError):
    """The output file exists and overwriting it was not allowed (``overwrite=False`` / no ``--force``)."""


# ====================================================================== atomic writes
def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output(path: PathLike, *, overwrite: bool = False, inputs: Tuple[PathLike, ...] = ()) -> Path:
    """Refuse an output path that is one of ``inputs``, a directory, in a missing folder, or (unless
    ``overwrite``) an existing file. Returns ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> check_output("model.safetensors", overwrite=False, inputs=("model.pt",))  # doctest: +SKIP
    """
    path = Path(path)
    for src in inputs:
        if Path(src).resolve() == path.resolve() or _same_file(Path(src), path):
            raise CheckpointError(f"refusing to write the output onto the input file {str(src)!r}; choose another output path")
    if path.is_dir():
        raise CheckpointError(f"output {str(path)!r} is a directory; give a file name such as {str(path / 'model.safetensors')!r}")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {str(path)!r} already exists; pass --force (overwrite=True) to replace it")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise CheckpointError(f"cannot write {str(path)!r}: the folder {str(parent)!r} does not exist")
    return path


@contextlib.contextmanager
def atomic_output(path: PathLike, *, overwrite: bool = False, inputs: Tuple[PathLike, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only when the block completes.

    Args:
        path: the destination.
        overwrite: replace an existing ``path`` (the CLI's ``--force``); otherwise raise :class:`OutputExistsError`.
        inputs: files being read; writing onto one of them is refused even with ``overwrite=True``.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Example:
        >>> with atomic_output("out.json", overwrite=True) as tmp:  # doctest: +SKIP
        ...     tmp.write_text("{}")
    """
    path = check_output(path, overwrite=overwrite, inputs=inputs)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=parent)  # keep the suffix: some writers infer the format from it
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _finalise(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _finalise(tmp: Path) -> None:
    """Flush the temporary file to disk and give it the permissions a plain ``open()`` would (mkstemp: 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())


# ====================================================================== state-dict checks
@dataclass
class StateDictMismatch:
    """What differs between a model's state dict and a checkpoint's (see :func:`check_state_dict`)."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatches: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shape_mismatches)

    def describe(self, limit: int = 10) -> str:
        """A readable summary, at most ``limit`` names per category."""

        def _names(names: List[str]) -> str:
            shown = ", ".join(names[:limit])
            return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {_names(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {_names(self.unexpected)}")
        if self.shape_mismatches:
            shown = [f"{k} (checkpoint {list(c)}, model {list(m)})" for k, c, m in self.shape_mismatches]
            parts.append(f"shape mismatches ({len(shown)}): {_names(shown)}")
        return "; ".join(parts)


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> StateDictMismatch:
    """Compare ``state_dict`` with ``model.state_dict()``: missing keys, unexpected keys, shape mismatches.

    Example:
        >>> check_state_dict(nn.Linear(2, 3), {"weight": torch.zeros(3, 2)}).missing
        ['bias']
    """
    own = model.state_dict()
    result = StateDictMismatch(
        missing=[k for k in own if k not in state_dict],
        unexpected=[k for k in state_dict if k not in own],
    )
    for key, value in state_dict.items():
        if key in own and isinstance(value, Tensor) and tuple(value.shape) != tuple(own[key].shape):
            result.shape_mismatches.append((key, tuple(value.shape), tuple(own[key].shape)))
    return result


def _load_checked(model: nn.Module, state_dict: Mapping[str, Tensor], source: str, hint: str = "") -> None:
    mismatch = check_state_dict(model, state_dict)
    if mismatch:
        raise CheckpointError(f"{source} does not match the architecture: {mismatch.describe()}{hint}")
    model.load_state_dict(state_dict, strict=True)


# ====================================================================== file sniffing
def _sniff(path: Path) -> str:
    """``"safetensors"``, ``"torch-zip"``, ``"torch-pickle"``, ``"truncated"`` or ``"unknown"``."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # an 8-byte header length, then the JSON header; checked first
        (n,) = struct.unpack("<Q", head[:8])  # because that length's bytes may look like another magic number
        return "safetensors" if n <= size - 8 else "truncated"
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80":
        return "torch-pickle"
    return "unknown"


def _require_file(path: PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{what} {str(path)!r} is a directory, not a file")
    return path


_CONVERT_HINT = "to turn a deterministic checkpoint into an autobayes checkpoint, run `autobayes convert SOURCE -o OUT.safetensors --arch ARCH`"


# ====================================================================== deterministic checkpoints
def load_state_dict_file(path: PathLike) -> Dict[str, Tensor]:
    """Read a deterministic checkpoint into a flat state dict, without ever unpickling code.

    Accepted: a safetensors file; a ``torch.save`` file holding a state dict, or a dict holding one under
    ``'state_dict'`` / ``'model_state_dict'`` / ``'model'`` (and a few other common keys). Wrapper prefixes
    (``module.`` from ``nn.DataParallel`` / DDP, ``_orig_mod.`` from ``torch.compile``) are stripped.
    ``torch.save`` files are read with ``weights_only=True``: a file holding pickled objects (a whole
    ``nn.Module``, an optimizer of custom classes, ...) is refused.

    Raises:
        CheckpointError: missing, corrupt, truncated or pickled-object file, or no state dict inside.

    Example:
        >>> torch.save({"state_dict": net.state_dict(), "epoch": 3}, "ckpt.pt")  # doctest: +SKIP
        >>> net.load_state_dict(load_state_dict_file("ckpt.pt"))  # doctest: +SKIP
    """
    path = _require_file(path, "checkpoint")
    kind = _sniff(path)
    if kind == "truncated":
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt (its safetensors header is cut short)")
    if kind == "safetensors":
        data: Any = _read_safetensors(path)[0]
    elif kind in ("torch-zip", "torch-pickle"):
        data = _torch_load_weights_only(path)
    else:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is neither a safetensors file nor a torch.save file "
            f"(wrong format, or corrupt)"
        )
    return _unwrap_state_dict(data, path)


def _torch_load_weights_only(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()
        detail = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it holds pickled Python objects, which could run code "
            f"({detail}); only tensors and plain containers are accepted. Re-save it with "
            f"`torch.save(model.state_dict(), path)` or as safetensors"
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, struct.error) as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({type(err).__name__}: {_first_line(err)})") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _unwrap_state_dict(data: Any, path: Path) -> Dict[str, Tensor]:
    candidate = data
    if not _is_state_dict(candidate) and isinstance(data, Mapping):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(data.get(key)):
                candidate = data[key]
                break
    if not _is_state_dict(candidate):
        if isinstance(data, Mapping):
            keys = ", ".join(repr(k) for k in list(data)[:10])
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds no state dict: its top-level keys are [{keys}], none of "
                f"{list(STATE_DICT_KEYS)} holds a name -> tensor mapping"
            )
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(data).__name__}, not a state dict")
    state = dict(candidate)
    for prefix in WRAPPER_PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


# ====================================================================== safetensors
def _read_safetensors(path: Path, device: str = "cpu") -> Tuple[Dict[str, Tensor], Dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            metadata = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # SafetensorError has no stable import path; everything here means a bad file
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({_first_line(err)})") from err
    return tensors, metadata


def _read_safetensors_metadata(path: Path) -> Dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except Exception as err:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({_first_line(err)})") from err


def _tensors_for_saving(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Detached, contiguous CPU tensors, none sharing memory with another (safetensors refuses aliasing)."""
    seen = set()
    out = {}
    for key, value in state.items():
        t = value.detach().to("cpu").contiguous()
        storage = (t.untyped_storage().data_ptr(), t.device.type)
        if storage in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()  # tied / aliased / view-of-larger-storage tensors get their own copy
        seen.add((t.untyped_storage().data_ptr(), t.device.type))
        out[key] = t
    return out


# ====================================================================== save
def _versions() -> Dict[str, str]:
    from . import __version__

    versions = {"autobayes": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("torchvision", "timm", "safetensors"):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # optional packages; absence is fine
            pass
    return versions


def _arch_spec(bnn: nn.Module, arch: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    spec = arch if arch is not None else getattr(bnn, "autobayes_arch", None)
    if spec is None:
        spec, example = _infer_arch(bnn)
        if spec is None:
            raise CheckpointError(
                "cannot save: the network carries no architecture spec, so the checkpoint could not rebuild it. "
                "Build the deterministic model with autobayes.models.build_model(...) before bayesify, or pass "
                f"save(bnn, path, arch={example})"
            )
    if isinstance(spec, str):
        spec = {"arch": spec, "kwargs": {}}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("arch"), str):
        raise CheckpointError(f"the architecture spec must be {{'arch': str, 'kwargs': dict}}, got {spec!r}")
    spec = {"arch": spec["arch"], "kwargs": dict(spec.get("kwargs") or {})}
    try:
        json.dumps(spec)
    except TypeError as err:
        raise CheckpointError(f"the architecture spec must be JSON-serialisable (numbers, strings, lists, dicts): {err}; got {spec!r}") from err
    return spec


def _deterministic_shapes(bnn: nn.Module) -> Dict[str, Tuple[int, ...]]:
    """The state-dict shapes of the deterministic network ``bnn`` was converted from: a posterior's mean
    ``<path>.<name>_posterior.mu`` stands for the parameter ``<path>.<name>``; its other tensors are dropped."""
    shapes: Dict[str, Tuple[int, ...]] = {}
    for key, value in bnn.state_dict().items():
        if "_posterior." in key:
            owner, _, rest = key.rpartition("_posterior.")
            if rest == "mu":
                shapes[owner] = tuple(value.shape)
        else:
            shapes[key] = tuple(value.shape)
    return shapes


def _library_candidates(bnn: nn.Module, size: int) -> Tuple[str, List[Tuple[str, Optional[int]]]]:
    """``(library, [("timm:NAME" | "torchvision:NAME", parameters or None), ...])``: the architectures of timm or
    torchvision whose class ``bnn`` was built from, the likeliest first (``("", [])`` for a network of neither).
    torchvision's are its builders of that class, ordered by how close their parameter count (from their
    weights' metadata, at 1000 classes) is to ``size``."""
    def made_by_autobayes(cls: type) -> bool:  # autobayes' own classes and the class bayesify derives
        return cls.__module__.startswith("autobayes.") or any(b.__module__.startswith("autobayes.") for b in cls.__bases__)

    # the class of the network that was converted: a user's subclass of a library class is not the library's
    origin = next((c for c in type(bnn).__mro__ if not made_by_autobayes(c)), object)
    if not origin.__module__.startswith(("timm.", "torchvision.models.")):
        return "", []
    if origin.__module__.startswith("timm."):
        cfg = getattr(bnn, "pretrained_cfg", None) or getattr(bnn, "default_cfg", None) or {}
        name = cfg.get("architecture") if isinstance(cfg, Mapping) else None
        return "timm", [(f"timm:{name}", None)] if isinstance(name, str) and name else []
    try:
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        same = [n for n in names if torchvision.models.get_model_builder(n).__module__ == origin.__module__]
    except Exception:  # noqa: BLE001 - an unusual torchvision: no guess
        return "torchvision", []

    def parameters(name: str) -> Optional[int]:
        try:
            return int(next(iter(torchvision.models.get_model_weights(name))).meta["num_params"])
        except Exception:  # noqa: BLE001 - a builder without published weights
            return None

    counted = [(n, parameters(n)) for n in same]
    key = origin.__name__.lower()  # ties: the class's own name first (ResNet -> resnet18), then shorter names
    counted.sort(key=lambda item: (item[1] is None, abs(math.log((item[1] or 1) / max(size, 1))),
                                   not item[0].startswith(key), len(item[0]), item[0]))
    return "torchvision", [(f"torchvision:{n}", count) for n, count in counted]


def _infer_arch(bnn: nn.Module) -> Tuple[Optional[Dict[str, Any]], str]:
    """The spec of a timm / torchvision network converted without :func:`autobayes.models.build_model`.

    Each candidate architecture of the network's library (timm: ``pretrained_cfg["architecture"]``; torchvision:
    the builders of the network's class) is built on the meta device (no memory, nothing downloaded; for real
    only when its builder needs data and it is not much larger than the network), sized by the network's first
    convolution (``in_channels``) and last layer (``num_classes``), and accepted only when every state-dict
    shape matches. Returns ``(spec, example)``: ``spec`` is ``None`` when nothing matches, and ``example`` is
    the ``arch=`` argument to suggest then.
    """
    from .models import build_model

    shapes = _deterministic_shapes(bnn)
    size = sum(math.prod(shape) for shape in shapes.values())
    library, candidates = _library_candidates(bnn, size)
    if not candidates:
        name = {"timm": "timm:resnet18", "torchvision": "torchvision:resnet18"}.get(library, "mypackage.models:make_net")
        return None, f"{{'arch': {name!r}, 'kwargs': {{...}}}}"

    def build(candidate: str, count: Optional[int], **kwargs: Any) -> nn.Module:
        try:
            with torch.device("meta"):
                return build_model(candidate, image_size=None, **kwargs)
        except Exception:  # noqa: BLE001 - a builder that computes with tensors (RegNet): for real, if small
            if library == "torchvision" and (count is None or count > 2 * size + 5_000_000):
                raise
            return build_model(candidate, image_size=None, **kwargs)

    for candidate, count in candidates:
        try:
            probe = build(candidate, count).state_dict()
            first = next((k for k, v in probe.items() if v.dim() == 4 and k.endswith("weight")), None)
            last = next(reversed(probe))  # the classifier's bias (or weight): (num_classes, ...)
            channels = int(shapes[first][1]) if first is not None else 3
            model = build(candidate, count, num_classes=int(shapes[last][0]), in_channels=channels)
        except Exception:  # noqa: BLE001 - a candidate that cannot be built or sized is simply not this network
            continue
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
            return dict(model.autobayes_arch), ""
    guess = candidates[0][0]
    return None, f"{{'arch': {guess!r}, 'kwargs': {{'num_classes': ..., 'in_channels': ...}}}}"


def _bayesify_options(bnn: nn.Module) -> Dict[str, Any]:
    """The route bayesify actually took (``"fx"`` or ``"swap"``, after any fallback), so that loading rebuilds
    the same module tree without tracing again in ``"auto"`` mode."""
    mode = getattr(getattr(bnn, "bayes_report", None), "mode", None)
    return {"mode": mode} if isinstance(mode, str) else {}


def _filter_fn_accepted(config: BayesConfig, arch_spec: Mapping[str, Any]) -> Optional[List[str]]:
    """``filter_fn`` is Python code and cannot be stored: record the module names it accepts instead, found by
    asking it about every module of a freshly built copy of the deterministic architecture."""
    if config.filter_fn is None:
        return None
    try:
        model = _build_deterministic(arch_spec)
    except Exception as err:
        raise CheckpointError(
            f"cannot save filter_fn: rebuilding {arch_spec['arch']!r} to record which layers it selects failed "
            f"({_first_line(err)}); use include / exclude / overrides instead of filter_fn"
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
    arch_spec = _arch_spec(bnn, arch)
    config_dict = config.to_dict()
    from .fx.runtime import kl_units

    layers = list(kl_units(bnn))
    spec = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "arch": arch_spec,
        "bayes_config": config_dict,
        "filter_fn_accepted": _filter_fn_accepted(config, arch_spec),
        "bayesify": _bayesify_options(bnn),
        "bayesian_layers": layers,
        "versions": _versions(),
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metadata": dict(metadata or {}),
    }
    try:
        header = json.dumps(spec)
    except TypeError as err:
        raise CheckpointError(f"cannot save the configuration as JSON: {err}") from err
    tensors = _tensors_for_saving(bnn.state_dict())
    path = Path(path)
    with atomic_output(path, overwrite=overwrite) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: header, "format": "pt"})
    return path


# ====================================================================== read / load
@dataclass
class CheckpointInfo:
    """The JSON header of an autobayes checkpoint plus a summary of its tensors (no model is built).

    Attributes:
        path: the file.
        spec: the parsed JSON document (see the module docstring).
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
        kwargs = ", ".join(f"{k}={v!r}" for k, v in spec["arch"].get("kwargs", {}).items())
        cfg = spec["bayes_config"]
        versions = ", ".join(f"{k} {v}" for k, v in spec.get("versions", {}).items())
        lines = [
            f"autobayes checkpoint {self.path} (format {spec['format']} v{spec['format_version']})",
            f"  architecture:    {spec['arch']['arch']}({kwargs})",
            f"  posterior:       {cfg.get('posterior')}   prior: {cfg.get('prior')}(loc={cfg.get('prior_loc')}, "
            f"scale={cfg.get('prior_scale')})   kl: {cfg.get('kl')} (n_mc={cfg.get('n_mc')})   forward: {cfg.get('forward')}",
            f"  bayesian layers: {len(spec.get('bayesian_layers', []))}: {_short_list(spec.get('bayesian_layers', []))}",
            f"  tensors:         {self.num_tensors} ({self.num_elements:,} elements)",
            f"  created:         {spec.get('created_at', '?')} with {versions}",
        ]
        lines[3:3] = _data_lines(spec)
        shown = {k: v for k, v in (spec.get("metadata") or {}).items() if k not in ("dataset", "preprocessing")}
        if shown:  # the data set and the preprocessing are described above
            lines.append(f"  metadata:        {json.dumps(shown)}")
        return "\n".join(lines)


def _numbers(values: List[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _data_lines(spec: Mapping[str, Any]) -> List[str]:
    """What the checkpoint records about its inputs and outputs (see :meth:`autobayes.data.DatasetInfo.from_checkpoint`)."""
    from .data import DatasetInfo

    info = DatasetInfo.from_checkpoint(spec)
    recorded = (spec.get("metadata") or {}).get("dataset") or {}
    preprocessing = (spec.get("metadata") or {}).get("preprocessing") or {}
    known_task = bool(recorded.get("task") or preprocessing.get("task"))
    if info.task == "regression":
        task = f"regression, {info.num_classes} output(s)"
        if recorded:
            task += f"; targets standardised, y = {info.target_mean:.6g} + {info.target_std:.6g} * output"
    else:
        names = f": {_short_list(info.class_names, 10)}" if info.class_names else " (class names not recorded)"
        task = f"classification, {info.num_classes} classes{names}"
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
    if info.name:
        split = "" if info.split_seed is None else \
            f" (validation split: {info.val_fraction:g} of it, seed {info.split_seed})"
        lines.append(f"  data set:        {info.name}{split}")
    return lines


def _short_list(names: List[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit})" if len(names) > limit else "")


def _parse_spec(path: Path, metadata: Mapping[str, str]) -> Dict[str, Any]:
    if METADATA_KEY not in metadata:
        raise CheckpointError(
            f"{str(path)!r} is a safetensors file without autobayes metadata (a deterministic checkpoint?); {_CONVERT_HINT}"
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


def _open_checkpoint(path: PathLike) -> Path:
    path = _require_file(path, "checkpoint")
    kind = _sniff(path)
    if kind == "truncated":
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt (its safetensors header is cut short)")
    if kind in ("torch-zip", "torch-pickle"):
        raise CheckpointError(f"{str(path)!r} is a torch.save file, not an autobayes checkpoint (a safetensors file written by autobayes.save); {_CONVERT_HINT}")
    if kind != "safetensors":
        raise CheckpointError(f"{str(path)!r} is not an autobayes checkpoint (not a safetensors file: wrong format or corrupt)")
    return path


def read_checkpoint_info(path: PathLike) -> CheckpointInfo:
    """Read an autobayes checkpoint's header without building the network (``autobayes inspect FILE``).

    Example:
        >>> print(autobayes.read_checkpoint_info("resnet18_bnn.safetensors"))  # doctest: +SKIP
    """
    from safetensors import safe_open

    path = _open_checkpoint(path)
    spec = _parse_spec(path, _read_safetensors_metadata(path))
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
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({_first_line(err)})") from err
    return CheckpointInfo(path=path, spec=spec, num_tensors=n_tensors, num_elements=n_elements)


def _rebuild_config(spec: Mapping[str, Any]) -> BayesConfig:
    data = dict(spec["bayes_config"])
    accepted = spec.get("filter_fn_accepted")
    if accepted is not None:  # the saved filter_fn, as the set of module names it accepted
        names = frozenset(accepted)
        data["filter_fn"] = lambda module, name: name in names
    return BayesConfig.from_dict(data)


def _build_deterministic(arch: Mapping[str, Any]) -> nn.Module:
    from .models import build_model

    kwargs = dict(arch.get("kwargs") or {})
    # The tensors come from the checkpoint: never fetch pretrained weights to overwrite them.
    kwargs.pop("pretrained", None)
    kwargs.pop("weights", None)
    return build_model(arch["arch"], **kwargs)


def load(path: PathLike, *, device: Union[str, torch.device] = "cpu", strict: bool = True) -> nn.Module:
    """Rebuild a Bayesian network saved by :func:`save`: architecture, configuration and state.

    Args:
        path: an autobayes ``.safetensors`` checkpoint.
        device: where to put the tensors.
        strict: require the checkpoint's keys and shapes to match the rebuilt network exactly (default).

    Returns:
        The network, in eval mode, with ``bayes_config`` and ``autobayes_arch`` set and the checkpoint's
        header under ``autobayes_checkpoint``.

    Raises:
        CheckpointError: missing / corrupt / truncated / wrong-format file, or a state that does not match the
            architecture (the message lists missing and unexpected keys and shape mismatches).

    Example:
        >>> bnn = autobayes.load("resnet18_bnn.safetensors")  # doctest: +SKIP
        >>> out, kl = bnn(torch.randn(2, 3, 224, 224))  # doctest: +SKIP
    """
    from .api import bayesify

    path = _open_checkpoint(path)
    tensors, metadata = _read_safetensors(path, device="cpu")
    spec = _parse_spec(path, metadata)
    try:
        model = _build_deterministic(spec["arch"])
        config = _rebuild_config(spec)
        options = {k: v for k, v in (spec.get("bayesify") or {}).items()}
        bnn = bayesify(model, config=config, allow_deterministic=True, **options)  # the file says what it holds
    except AutobayesError as err:
        raise CheckpointError(f"cannot rebuild the network of {str(path)!r} ({spec['arch']['arch']}): {err}") from err
    hint = (
        f" (the file was written with {', '.join(f'{k} {v}' for k, v in spec.get('versions', {}).items())}; "
        f"a different autobayes / torchvision / timm version may build the architecture differently)"
    )
    if strict:
        _load_checked(bnn, tensors, f"checkpoint {str(path)!r}", hint)
    else:
        mismatch = check_state_dict(bnn, tensors)
        if mismatch.shape_mismatches:
            only_shapes = StateDictMismatch(shape_mismatches=mismatch.shape_mismatches)
            raise CheckpointError(f"checkpoint {str(path)!r} does not match the architecture: {only_shapes.describe()}{hint}")
        bnn.load_state_dict(tensors, strict=False)
    bnn.autobayes_arch = dict(spec["arch"])
    bnn.autobayes_checkpoint = spec
    bnn.to(device)
    bnn.eval()
    return bnn
