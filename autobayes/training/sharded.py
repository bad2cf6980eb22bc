"""Sharded training (``fsdp=True``, ``autobayes train --fsdp``) and activation checkpointing in the training loop.

With ``fsdp`` every rank holds ``1/N`` of the model (:func:`autobayes.distributed.shard`): a forward is a
collective, so every rank validates (rank 0's row is kept, as with DDP) and the checkpoints are gathered on every
rank and written by rank 0. The resume file (the optimiser's sharded state) is not written: ``resume`` is refused.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
import torch.distributed as dist
from torch import nn

from .. import distributed
from ..errors import ConfigError

__all__ = ["prepare", "gathered_state", "unsharded_copy"]


def prepare(bnn: nn.Module, ctx: "distributed.DistContext", fsdp: bool, activation_checkpointing: bool,
            resume: bool) -> nn.Module:
    """Shard ``bnn`` (``fsdp``) and / or checkpoint its blocks' activations; before the optimiser is built."""
    if fsdp and not ctx.active:
        raise ConfigError("fsdp=True shards the model over processes and this run has one; pass nproc=2 or more "
                          "(autobayes train --nproc 2 --fsdp), or launch with torchrun")
    if fsdp and resume:
        raise ConfigError("resume=True is not supported with fsdp=True (the resume file would hold optimiser "
                          "shards); start a new run, or resume without --fsdp")
    if fsdp:
        with torch.no_grad():  # rank 0's initial parameters on every rank (what DDP's broadcast gives)
            for tensor in list(bnn.parameters()) + list(bnn.buffers()):
                dist.broadcast(tensor, src=0)
        distributed.shard(bnn, activation_checkpointing=activation_checkpointing)
    elif activation_checkpointing:
        distributed.checkpoint_blocks(bnn)
    return bnn


def gathered_state(bnn: nn.Module, fsdp: bool) -> Optional[Dict[str, torch.Tensor]]:
    """The full state dict of a sharded model (called on every rank; empty but on rank 0), else ``None``."""
    return distributed.full_state_dict(bnn) if fsdp else None


def unsharded_copy(build: Callable[[], nn.Module], state: Dict[str, Any]) -> nn.Module:
    """An unsharded model holding ``state`` (the result a sharded run returns, on rank 0)."""
    model = build()
    model.load_state_dict(state)
    return model
