"""Files: the autobayes checkpoint, deterministic checkpoints read safely, and atomic writes.

* :mod:`~autobayes.io.checkpoint`: the self-describing checkpoint (one safetensors file), :func:`save` and
  :func:`load`; :mod:`~autobayes.io.info`: :func:`read_checkpoint_info`, its header without building the network;
  :mod:`~autobayes.io.arch`: the architecture spec it records (timm / torchvision networks recognised).
* :mod:`~autobayes.io.state_dict`: deterministic checkpoints, :func:`load_state_dict_file` (never unpickling
  code), :func:`check_state_dict` and :func:`load_checked`.
* :mod:`~autobayes.io.files`: :func:`atomic_output` and :func:`check_output`, through which every file autobayes
  writes goes, and :func:`check_inputs_untouched`, the rule that no output replaces an input;
  :mod:`~autobayes.io.formats`: file-type sniffing and raw safetensors access.
"""

from .checkpoint import FORMAT_NAME, FORMAT_VERSION, METADATA_KEY, load, save
from .files import InputOverwriteError, OutputExistsError, PathLike, atomic_output, check_inputs_untouched, check_output
from .formats import tensors_for_saving as _tensors_for_saving  # noqa: F401 - tests/test_io.py imports it from here
from .info import CheckpointInfo, read_checkpoint_info
from .state_dict import (
    STATE_DICT_KEYS,
    WRAPPER_PREFIXES,
    StateDictMismatch,
    check_state_dict,
    load_checked,
    load_state_dict_file,
)

__all__ = [
    "save",
    "load",
    "read_checkpoint_info",
    "CheckpointInfo",
    "load_state_dict_file",
    "check_state_dict",
    "load_checked",
    "StateDictMismatch",
    "atomic_output",
    "check_output",
    "OutputExistsError",
    "InputOverwriteError",
    "check_inputs_untouched",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "METADATA_KEY",
]
