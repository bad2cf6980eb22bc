"""Models PEFT has wrapped with LoRA: their adapter matrices, and merging them back into the base model.

PEFT is optional: nothing here imports it unless the model already holds its layers (then it is imported).
A PEFT LoRA layer (``peft.tuners.lora.Linear`` / ``Conv1d`` / ``Conv2d`` / ``Conv3d``) holds the frozen
``base_layer`` and, per adapter name, ``lora_A[name]`` / ``lora_B[name]`` modules that its forward calls:
:func:`autobayes.bayesify` turns those into Bayesian layers and leaves everything else as PEFT set it.
"""

from __future__ import annotations

import sys
from typing import List, Tuple

from torch import nn

from ..errors import ConfigError

__all__ = ["peft_lora_layers", "check_peft_layer", "peft_matrices", "merge_peft"]


def peft_lora_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, layer)`` of every PEFT LoRA layer of ``model`` (none when PEFT was never imported)."""
    if "peft" not in sys.modules:  # a model cannot hold PEFT layers unless PEFT is loaded
        return []
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - a broken PEFT install: treat the model as a plain one
        return []
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def check_peft_layer(name: str, layer: nn.Module) -> str:
    """``""`` when autobayes can make the adapters of ``layer`` Bayesian, else why not.

    Raises:
        ConfigError: the layer uses a LoRA variant (DoRA, ...) whose forward reads the adapter weights
            directly, or its adapters are merged into the base weights.
    """
    from peft.tuners.lora import layer as lora

    if getattr(layer, "lora_variant", None):
        raise ConfigError(
            f"the PEFT layer {name!r} uses the LoRA variant(s) {sorted(layer.lora_variant)} (e.g. use_dora=True), "
            f"whose forward reads the adapter weights directly; autobayes makes plain LoRA adapters Bayesian only. "
            f"Build the PEFT model without the variant (LoraConfig(use_dora=False, ...))")
    if getattr(layer, "merged", False):
        raise ConfigError(f"the PEFT layer {name!r} has its adapters merged into the base weights; call "
                          f"model.unmerge_adapter() before bayesify")
    supported = (lora.Linear, lora.Conv1d, lora.Conv2d, lora.Conv3d)
    if type(layer) not in supported:
        return (f"PEFT {type(layer).__name__} layer: its adapters stay deterministic (autobayes supports PEFT's "
                f"Linear and Conv LoRA layers)")
    return ""


def peft_matrices(name: str, layer: nn.Module) -> List[str]:
    """The qualified names of the adapter matrices of the PEFT layer ``name``: ``<name>.lora_A.<adapter>``..."""
    return [f"{name}.{part}.{key}" for key in layer.lora_A for part in ("lora_A", "lora_B")]


def merge_peft(model: nn.Module) -> nn.Module:
    """``model.merge_and_unload()`` of a PEFT model whose Bayesian adapter layers were made plain again; the base
    model with every adapter folded into its weights."""
    if not hasattr(model, "merge_and_unload"):
        raise ConfigError(f"{type(model).__name__} holds PEFT adapters but has no merge_and_unload(): merge the "
                          f"PeftModel returned by peft.get_peft_model, not a module inside it")
    return model.merge_and_unload()
