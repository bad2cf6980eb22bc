"""Sharding (FSDP2) and activation checkpointing of converted models, block by block.

FSDP2 (``torch.distributed.fsdp.fully_shard``) gathers a block's parameters in forward / backward hooks of that
block, so every read of them must happen inside the block's own forward. Three things in a converted model read
them elsewhere, and :func:`shard` / :func:`checkpoint_blocks` change each:

* **the root's forward.** The fx and capture routes inline every block into one graph that reads all posteriors
  at the root; the root is given the swap-mode forward instead (:func:`run_blocks_eagerly`): the model's own
  forward over the converted modules, so each block's forward -- and each block's hooks -- run. The maths is the
  route's: the same converted modules, one draw per posterior per forward (``shared_draws``), the KL of the
  Bayesian layers the forward called, each once. ``bnn.bayes_report.mode`` still names the route that converted
  the model (a checkpoint rebuilds it so).
* **the KL.** A root-level ``total_kl`` would read every block's posteriors after the blocks have been resharded.
  Each block computes the KL of its own units in a forward hook that runs before FSDP's post-forward hook (the
  parameters are still gathered), and hands it to the root (:func:`autobayes.fx.runtime.block_kls`). The KL is
  tied to the block's output by :class:`_Attach` (identity forward, identity backward), so its backward runs
  only once the gradient of the block's output has arrived -- after FSDP's pre-backward hook gathered the
  parameters again, and before the block's post-backward reduce-scatter, like the block's own operations.
* **recomputation.** With activation checkpointing (``torch.distributed._composable.checkpoint``, non-reentrant,
  RNG state preserved) a block's forward is run again in the backward pass; it must draw the same weights and
  noise. torch restores the CPU (and the block's device's) generator state, which is all that torch's samplers,
  autobayes' parallel CPU sampler (:mod:`autobayes._random`, whose streams are seeded from that generator) and
  ``local`` mode's output noise read. What the generator does not hold is the forward's cache of draws
  (:func:`~autobayes.nn.parameter.shared_draws`): :func:`checkpoint_context` gives the recomputation the draws
  that existed when the block was entered, so a posterior read twice, or first read before the block (a tied
  weight), is not drawn anew.

Sampled training on N ranks: each rank draws its own weights and noise from its own generator state (as with
DDP, :func:`autobayes.distributed.noise_seed`), FSDP averages the gradients; under :func:`autobayes.use_mean` a
step on N ranks equals the unsharded step on the whole batch.
"""

from __future__ import annotations

from typing import Any, Iterable, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils import _pytree as pytree

from .errors import ConfigError
from .fx.derive import base_class, set_class
from .fx.runtime import ROOT_MIXIN, SHARDED_BLOCKS, USED, add_block_kl, collecting_block_kls, kl_units, total_kl
from .fx.swap import hook_kl_units
from .nn import BayesLayer, BayesParameter
from .nn.parameter import checkpoint_context

__all__ = ["shard", "checkpoint_blocks", "checkpoint_context", "default_blocks", "run_blocks_eagerly",
           "full_state_dict", "load_full_state_dict", "is_sharded"]

#: On a block: the forward hook that computes its KL is registered.
_KL_HOOKED = "_autobayes_block_kl"


def shard(bnn: nn.Module, blocks: Optional[Iterable[type]] = None, activation_checkpointing: bool = False,
          mesh: Any = None, **fsdp_kwargs: Any) -> nn.Module:
    """Shard a converted model with FSDP2: ``fully_shard`` on every block, then on the root; in place.

    Call it on every rank after ``torch.distributed`` is initialised, with the same model on every rank (built
    from the same seed), then build the optimiser. Each rank keeps ``1/N`` of every parameter (posterior means
    and log-variances alike) and of its gradient and optimiser state; a block's parameters are gathered for its
    forward and backward only. Gradients are averaged over the ranks, as with DDP.

    Args:
        bnn: a model returned by :func:`autobayes.bayesify`, converted by any route.
        blocks: the module types sharded one unit each (the classes the deterministic model was built from).
            Default: :func:`default_blocks` (a ``transformers`` model's ``_no_split_modules``, else the children
            of its ``nn.ModuleList`` / ``nn.Sequential`` containers that hold Bayesian layers, else each Bayesian
            layer). Nested blocks are sharded first; each block adds the KL of the layers no inner block counted.
        activation_checkpointing: recompute each block's activations in the backward pass instead of keeping
            them (:func:`checkpoint_blocks`); the recomputation draws the same weights and noise.
        mesh: the ``DeviceMesh`` (default: every rank, one dimension).
        **fsdp_kwargs: passed to ``fully_shard`` for every unit: ``mp_policy=MixedPrecisionPolicy(...)`` (the KL
            is still computed in float32), ``offload_policy=CPUOffloadPolicy()`` (pins host memory: CUDA only),
            ``reshard_after_forward=...``.

    Returns:
        ``bnn`` itself, sharded (an ``FSDPModule``).

    Example:
        >>> ctx = autobayes.distributed.setup(torch.device("cpu"))  # doctest: +SKIP
        >>> torch.manual_seed(0)  # the same model on every rank
        >>> bnn = autobayes.bayesify(GPT2LMHeadModel(config))
        >>> autobayes.distributed.shard(bnn, activation_checkpointing=True)
        >>> optimizer = torch.optim.AdamW(bnn.parameters(), lr=1e-4)
        >>> state = autobayes.distributed.full_state_dict(bnn)  # every rank; rank 0 gets the tensors
    """
    from torch.distributed.fsdp import fully_shard

    types = _block_types(bnn, blocks)
    units = checkpoint_blocks(bnn, types) if activation_checkpointing else _prepare_blocks(bnn, types)
    for block in sorted(units, key=lambda m: -_depth(bnn, m)):  # nested blocks before the blocks holding them
        fully_shard(block, mesh=mesh, **fsdp_kwargs)
    fully_shard(bnn, mesh=mesh, **fsdp_kwargs)
    return bnn


def checkpoint_blocks(bnn: nn.Module, blocks: Optional[Iterable[type]] = None) -> List[nn.Module]:
    """Activation checkpointing of every block of a converted model (in place): a block keeps its inputs only and
    runs its forward again in the backward pass, drawing the same weights and noise (see the module docstring).
    Works with or without :func:`shard` (which calls it for ``activation_checkpointing=True``). Returns the blocks.

    Example:
        >>> bnn = autobayes.bayesify(GPT2LMHeadModel(config))  # doctest: +SKIP
        >>> checkpoint_blocks(bnn)  # the GPT2Block modules
        >>> out, kl = bnn(input_ids=ids, labels=ids)
    """
    from torch.distributed._composable import checkpoint

    units = _prepare_blocks(bnn, _block_types(bnn, blocks))
    for block in units:
        checkpoint(block, context_fn=checkpoint_context)
    return units


def default_blocks(bnn: nn.Module) -> Tuple[type, ...]:
    """The repeated blocks of a model: the classes named by a ``transformers`` model's ``_no_split_modules``; else
    the classes of the children of its ``nn.ModuleList`` s and ``nn.Sequential`` s that hold Bayesian layers (a
    ResNet's residual blocks, a ViT's blocks); else, for a plain stack of layers, the Bayesian layer classes.

    Example:
        >>> default_blocks(autobayes.bayesify(GPT2LMHeadModel(config)))  # doctest: +SKIP
        (<class 'transformers.models.gpt2.modeling_gpt2.GPT2Block'>,)
    """
    def bayesian(m: nn.Module) -> bool:
        return isinstance(m, (BayesLayer, BayesParameter))

    names = set(getattr(bnn, "_no_split_modules", None) or ())
    if names:
        found = [base_class(m) for m in bnn.modules() if base_class(m).__name__ in names]
    else:
        found = [base_class(child) for m in bnn.modules() if isinstance(m, (nn.ModuleList, nn.Sequential))
                 for child in m if not bayesian(child) and any(bayesian(c) for c in child.modules())]
    if not found:
        found = [type(m) for m in kl_units(bnn).values() if isinstance(m, BayesLayer)]
    return tuple(dict.fromkeys(found))


def run_blocks_eagerly(bnn: nn.Module) -> None:
    """Give a converted model's root the swap-mode forward (its own forward over the converted modules, the KL of
    the Bayesian layers it called), so that every block runs its own forward and hooks; in place. Nothing
    changes for a model converted in swap mode."""
    if getattr(type(bnn), ROOT_MIXIN, None) is None:
        raise ConfigError(f"{type(bnn).__name__} is not a model converted by autobayes.bayesify; convert it first: "
                          f"bnn = autobayes.bayesify(model)")
    if not any(USED in m.__dict__ for m in kl_units(bnn).values()):
        hook_kl_units(bnn)
    set_class(bnn, root="swap")
    bnn.__dict__.pop("_autobayes_captured", None)  # the capture route's graphs are no longer run
    bnn.__dict__[SHARDED_BLOCKS] = True  # the root collects the KLs its blocks hand in


def full_state_dict(bnn: nn.Module) -> dict:
    """The full state dict of a sharded model, gathered on the CPU of rank 0 (an empty dict on the other ranks);
    call it on every rank. It loads into the unsharded model (``load_state_dict``) and saves with
    ``autobayes.save(bnn, path, state_dict=state)`` on rank 0.

    Example:
        >>> state = full_state_dict(bnn)  # doctest: +SKIP
        >>> if ctx.is_main:
        ...     autobayes.save(bnn, "model.safetensors", state_dict=state)
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(bnn, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(bnn: nn.Module, state: dict) -> None:
    """Load a full (unsharded) state dict into a sharded model, strictly; call it on every rank with the same
    tensors: each rank keeps its shard. :func:`autobayes.io.load_state` calls it for a sharded model.

    Example:
        >>> load_full_state_dict(bnn, autobayes.load("model.safetensors").state_dict())  # doctest: +SKIP
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(bnn, state, options=StateDictOptions(full_state_dict=True, strict=True))


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` is sharded by FSDP2 (``fully_shard`` made it an ``FSDPModule``)."""
    if not torch.distributed.is_available():  # builds without torch.distributed have no FSDP
        return False
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def _block_types(bnn: nn.Module, blocks: Optional[Iterable[type]]) -> Tuple[type, ...]:
    types = default_blocks(bnn) if blocks is None else tuple(blocks)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise ConfigError(f"blocks must hold nn.Module classes, e.g. shard(bnn, blocks=[GPT2Block]), got {t!r}")
    if not types:
        raise ConfigError(f"{type(bnn).__name__} has no repeated blocks autobayes recognises (no _no_split_modules, "
                          f"no nn.ModuleList); name them: shard(bnn, blocks=[MyBlock])")
    return types


def _prepare_blocks(bnn: nn.Module, types: Tuple[type, ...]) -> List[nn.Module]:
    """The blocks of ``types`` (outermost first), each with its KL hook, the root running them eagerly."""
    units = [m for m in bnn.modules() if m is not bnn and isinstance(m, types)]
    if not units:
        present = sorted({base_class(m).__name__ for m in bnn.modules()})
        raise ConfigError(f"no module of {[t.__name__ for t in types]} in {type(bnn).__name__} (its module types: "
                          f"{', '.join(present[:12])}{', ...' if len(present) > 12 else ''}); pass the block "
                          f"classes: shard(bnn, blocks=[...]), see autobayes.inspect_model(model)")
    run_blocks_eagerly(bnn)
    for block in units:
        if not block.__dict__.get(_KL_HOOKED):
            block.register_forward_hook(_BlockKL(list(kl_units(block).values())))
            block.__dict__[_KL_HOOKED] = True
    return units


class _BlockKL:
    """Forward hook of a block: the KL of the units of the block its forward called, handed to the root's
    :func:`~autobayes.fx.runtime.block_kls` and tied to the block's output (:class:`_Attach`). Registered before
    ``fully_shard``, it runs before FSDP's post-forward hook, while the parameters are gathered."""

    def __init__(self, units: List[nn.Module]) -> None:
        self.units = units

    def __call__(self, block: nn.Module, args: Any, output: Any) -> Any:
        used = [u for u in self.units if u.__dict__.get(USED)]
        if not used or not collecting_block_kls():  # a block called on its own, or recomputed: nothing to add
            return None
        kl = total_kl(*used)
        leaves, spec = pytree.tree_flatten(output)
        index = next((i for i, t in enumerate(leaves) if isinstance(t, Tensor) and t.requires_grad), None)
        if index is not None and kl.requires_grad:
            leaves[index], kl = _Attach.apply(leaves[index], kl)
        add_block_kl(kl)
        for u in used:
            u.__dict__[USED] = False  # counted: the root does not read these (sharded) parameters again
        return pytree.tree_unflatten(leaves, spec) if index is not None else None


class _Attach(torch.autograd.Function):
    """``(out, kl) -> (out, kl)``: one autograd node for both, so that the KL's backward waits for the gradient of
    the block's output (see the module docstring). Copies, not views: the next module may modify the block's
    output in place (``nn.ReLU(inplace=True)``), which autograd forbids on views returned by a function."""

    @staticmethod
    def forward(ctx: Any, out: Tensor, kl: Tensor) -> Tuple[Tensor, Tensor]:
        return out.clone(), kl.clone()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, grad_kl: Tensor) -> Tuple[Tensor, Tensor]:
        return grad_out, grad_kl


def _depth(root: nn.Module, module: nn.Module) -> int:
    return next(name.count(".") + 1 for name, m in root.named_modules() if m is module)
