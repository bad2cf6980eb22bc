"""``BayesTrainer`` with ``Trainer``'s FSDP settings (``TrainingArguments(fsdp=..., fsdp_config=...)``, or
``accelerate launch --use_fsdp``): the model is sharded by :func:`autobayes.distributed.shard`, per block, before
accelerate sees it.

Left to accelerate, a converted model would not be sharded correctly, or at all:

* on the CPU accelerate ignores the FSDP plugin: ``AcceleratorState`` sets ``distributed_type = FSDP`` only for
  the accelerator device types (``accelerate/state.py``, the ``MULTI_GPU, MULTI_MLU, ...`` branch that holds
  ``if ... fsdp_plugin is not None: self.distributed_type = DistributedType.FSDP``); with gloo on the CPU it stays
  ``MULTI_CPU``, ``Trainer.is_fsdp_enabled`` is ``False`` and the model is wrapped in ``DistributedDataParallel``:
  every rank holds every parameter, without a word (accelerate 1.16, transformers 5.25);
* on a GPU ``fsdp2_prepare_model`` (``accelerate/utils/fsdp_utils.py``) calls ``fully_shard`` on the modules its
  auto-wrap policy names, then on the root; but the fx and capture routes read every posterior in one graph at
  the root and the KL at the root as well, so per-block unsharding never happens (``mixed torch.Tensor and
  DTensor``); :func:`autobayes.distributed.shard` gives the root the blocks' own forwards and each block's KL.

So ``BayesTrainer.__init__`` reads the settings through accelerate's own ``FullyShardedDataParallelPlugin`` (the
one accelerate holds, else one built from ``args.fsdp_plugin_args``, the same ``FSDP_*`` environment defaults) and
shards with them (:func:`shard_options`): the blocks are ``transformer_layer_cls_to_wrap`` (default: the model's
repeated blocks, :func:`autobayes.sharding.default_blocks`); ``activation_checkpointing`` and
``reshard_after_forward`` pass through; ``bf16`` / ``fp16`` give accelerate's ``MixedPrecisionPolicy``; and
``cpu_offload`` gives ``CPUOffloadPolicy`` (CUDA only). Every rank then takes rank 0's parameters (as
``DistributedDataParallel`` does at construction; what ``cpu_ram_efficient_loading`` asks for, though each rank
has built the model already). A setting that cannot be honoured raises :class:`~autobayes.errors.ConfigError`
naming it. Accelerate takes the sharded model as it is: on a GPU ``fsdp2_prepare_model`` returns an ``FSDPModule``
unchanged (and applies no activation checkpointing of its own to one); on the CPU the model is prepared in
evaluation mode (autocast, compile), which marks it prepared, so no ``DistributedDataParallel`` wraps it. The
optimiser, which ``Trainer`` builds at ``train()``, holds the sharded (``DTensor``) parameters.

Checkpoints (``BayesTrainer``'s overrides): the model's state is gathered from the shards on every rank
(:func:`autobayes.distributed.full_state_dict`) and written by rank 0 as the usual folder; the optimiser's state
likewise (``get_optimizer_state_dict``, full), and loaded back into the shards on resume. Loading a checkpoint
(resume, best model) gives every rank its shard of the file's tensors (:func:`autobayes.io.load_state`), from the
folder rank 0 names.

This module imports ``accelerate`` (with ``transformers``); :mod:`autobayes.hf.trainer` imports it.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME

from ..errors import ConfigError
from ..fx.derive import base_class
from ..sharding import shard

__all__ = ["fsdp_plugin", "plugin_from_args", "shard_options", "shard_for_trainer", "agreed_path", "save_optimizer",
           "load_optimizer"]


def fsdp_plugin(trainer: Any) -> Optional[Any]:
    """Accelerate's ``FullyShardedDataParallelPlugin`` for ``trainer``: the one its accelerator holds (a GPU), else
    one built from ``trainer.args`` (the CPU, where accelerate drops it), else ``None`` (no FSDP asked for)."""
    held = getattr(trainer.accelerator.state, "fsdp_plugin", None)
    if held is not None:
        return held
    if not trainer.args.fsdp:
        return None
    return plugin_from_args(trainer.args, trainer.accelerator.mixed_precision)


def plugin_from_args(args: Any, mixed_precision: str = "no") -> Any:
    """Accelerate's ``FullyShardedDataParallelPlugin`` as ``Trainer`` builds it from ``TrainingArguments`` with
    ``fsdp`` set, with ``mixed_precision`` (``"no"``, ``"bf16"``, ``"fp16"``) as accelerate sets it.

    Example:
        >>> plugin_from_args(TrainingArguments("out", fsdp=True), "bf16").mixed_precision_policy  # doctest: +SKIP
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16, ...)
    """
    from accelerate.utils import FullyShardedDataParallelPlugin

    if args.fsdp_config.get("xla"):
        raise ConfigError("BayesTrainer cannot honour fsdp_config xla=True (PyTorch/XLA FSDP): autobayes shards "
                          "with FSDP2: leave 'xla' out of fsdp_config")
    version = args.fsdp_plugin_args["fsdp_version"]
    if version != 2:  # before accelerate builds the plugin, which refuses FSDP1 on the CPU
        raise ConfigError(f"BayesTrainer cannot honour fsdp_config version={version}: autobayes shards with FSDP2: "
                          f"fsdp_config={{'version': 2}}")
    plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
    if mixed_precision != "no":
        plugin.set_mixed_precision(mixed_precision)
    return plugin


def shard_options(plugin: Any, model: nn.Module, device: torch.device) -> Dict[str, Any]:
    """The arguments of :func:`autobayes.distributed.shard` that honour ``plugin``'s settings; a
    :class:`ConfigError` naming any setting that cannot be honoured, with the fix.

    Example:
        >>> shard_options(fsdp_plugin(trainer), bnn, torch.device("cpu"))  # doctest: +SKIP
        {'blocks': (GPT2Block,), 'activation_checkpointing': True, 'reshard_after_forward': True}
    """
    from torch.distributed.fsdp import CPUOffloadPolicy
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    def refuse(setting: str, fix: str) -> None:
        raise ConfigError(f"BayesTrainer cannot honour fsdp_config {setting}: {fix}")

    if plugin.fsdp_version != 2:
        refuse(f"version={plugin.fsdp_version}", "autobayes shards with FSDP2: fsdp_config={'version': 2}")
    policy = getattr(plugin.auto_wrap_policy, "func", plugin.auto_wrap_policy)
    if policy is not transformer_auto_wrap_policy:
        name = "NO_WRAP" if policy is None else "SIZE_BASED_WRAP"
        refuse(f"auto_wrap_policy={name!r}", "a Bayesian model is sharded per block (each block computes its KL "
               "while gathered): use the default 'TRANSFORMER_BASED_WRAP', with transformer_layer_cls_to_wrap="
               "['MyBlock'] to name the blocks")
    if "SHARDED" in str(plugin.state_dict_type):
        refuse("state_dict_type='SHARDED_STATE_DICT'", "BayesTrainer's checkpoints are autobayes checkpoints "
               "gathered from the shards: leave state_dict_type out, or set it to 'FULL_STATE_DICT'")
    if plugin.ignored_modules is not None:
        refuse("ignored_modules", "every parameter of a Bayesian model is sharded: leave ignored_modules out")
    if getattr(plugin, "activation_checkpointing_offload", False):
        refuse("activation_checkpointing_offload=True", "leave it out (activation_checkpointing=True recomputes "
               "the blocks' activations)")
    options: Dict[str, Any] = {
        "blocks": _block_classes(model, plugin.transformer_cls_names_to_wrap),
        "activation_checkpointing": bool(plugin.activation_checkpointing),
        "reshard_after_forward": plugin.reshard_after_forward,
    }
    if plugin.mixed_precision_policy is not None:
        options["mp_policy"] = plugin.mixed_precision_policy
    if isinstance(plugin.cpu_offload, CPUOffloadPolicy):
        if device.type != "cuda":
            refuse("cpu_offload=True (fsdp='... offload')", f"it keeps the shards in pinned host memory, which needs "
                   f"CUDA; on {device.type} they are in host memory already: drop 'offload' / cpu_offload")
        options["offload_policy"] = plugin.cpu_offload
    return options


def shard_for_trainer(trainer: Any) -> bool:
    """Shard ``trainer.model`` by its FSDP settings (see the module docstring), in place; ``False`` when none are
    set. Called by ``BayesTrainer.__init__``, on every rank."""
    plugin = fsdp_plugin(trainer)
    if plugin is None:
        return False
    if trainer.optimizer is not None:
        raise ConfigError("BayesTrainer: an optimizer built before sharding holds the unsharded parameters; with "
                          "FSDP let BayesTrainer build it: BayesTrainer(..., optimizer_cls_and_kwargs="
                          "(torch.optim.AdamW, {'lr': 1e-4})) instead of optimizers=(...)")
    model = trainer.model
    options = shard_options(plugin, model, trainer.args.device)
    first = model.state_dict() if dist.get_rank() == 0 else {}
    shard(model, **options)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, first, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    if not trainer.is_fsdp_enabled:  # the CPU: keep accelerate from wrapping the shards in DDP
        trainer.model = trainer.model_wrapped = trainer.accelerator.prepare_model(
            model, device_placement=False, evaluation_mode=True)
    return True


def agreed_path(path: str) -> str:
    """Rank 0's ``path`` on every rank: the checkpoint all ranks load their shards from (each rank picks its best
    checkpoint from its own evaluation)."""
    chosen: List[Any] = [path]
    dist.broadcast_object_list(chosen, src=0)
    return chosen[0]


def save_optimizer(trainer: Any, output_dir: str) -> None:
    """The optimiser's state gathered from the shards (every rank), written by rank 0 with the scheduler's."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    state = get_optimizer_state_dict(trainer.model, _inner(trainer.optimizer),
                                     options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if trainer.args.should_save:
        os.makedirs(output_dir, exist_ok=True)
        torch.save(state, os.path.join(output_dir, OPTIMIZER_NAME))
        torch.save(trainer.lr_scheduler.state_dict(), os.path.join(output_dir, SCHEDULER_NAME))


def load_optimizer(trainer: Any, checkpoint: Optional[str]) -> None:
    """Resume: the optimiser's full state from ``checkpoint`` (every rank reads it, keeps its shard) and the
    scheduler's; nothing when the folder holds neither (as ``Trainer``)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    if checkpoint is None:
        return
    files = [os.path.join(checkpoint, name) for name in (OPTIMIZER_NAME, SCHEDULER_NAME)]
    if not all(os.path.isfile(f) for f in files):
        return
    state = torch.load(files[0], map_location="cpu", weights_only=True)
    set_optimizer_state_dict(trainer.model, _inner(trainer.optimizer), state,
                             options=StateDictOptions(full_state_dict=True))
    trainer.lr_scheduler.load_state_dict(torch.load(files[1], weights_only=True))


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def _block_classes(model: nn.Module, names: Optional[List[str]]) -> Optional[tuple]:
    """The module classes named by ``transformer_layer_cls_to_wrap`` (``None``: the model's own blocks)."""
    if not names:
        return None
    found = {base_class(m).__name__: base_class(m) for m in model.modules()}
    missing = [n for n in names if n not in found]
    if missing:
        present = sorted(found)
        raise ConfigError(f"BayesTrainer: fsdp_config transformer_layer_cls_to_wrap names {missing}, which "
                          f"{type(model).__name__} does not hold (its module types: {', '.join(present[:12])}"
                          f"{', ...' if len(present) > 12 else ''}); name the repeated block, e.g. "
                          f"fsdp_config={{'transformer_layer_cls_to_wrap': ['GPT2Block']}}, or leave it out")
    return tuple(found[n] for n in names)


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimiser inside accelerate's ``AcceleratedOptimizer``."""
    return getattr(optimizer, "optimizer", optimizer)
