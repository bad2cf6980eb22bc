"""What a ``transformers`` model's task means for autobayes' summaries, read from the model or a checkpoint's
recorded config (nothing here imports ``transformers`` unless a model is already one):

* :func:`is_causal_lm`: a causal language model follows transformers' label convention (``labels=input_ids``,
  shifted inside the model): the prediction at position ``t`` is for the token at ``t + 1``, so per-token targets
  are the labels shifted by one (:func:`next_token_targets`);
* :func:`image_inputs`: the input sizes and classes of an image classifier (ViT, ConvNeXt, Swin, ...) from its
  config, so that ``autobayes predict`` / ``evaluate`` read images for it as for a torchvision network.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import Tensor, nn

from ..fx.derive import base_class
from .inputs import is_hf_model

__all__ = ["is_causal_lm", "next_token_targets", "image_inputs", "IGNORE_INDEX"]

#: transformers' (and ``F.cross_entropy``'s) label of a position that has no target.
IGNORE_INDEX = -100


def is_causal_lm(model: nn.Module) -> bool:
    """Whether ``model`` (deterministic or converted) is a ``transformers`` causal language model: its class is in
    transformers' ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` or has a causal-LM loss, and it is no encoder-decoder.

    Example:
        >>> is_causal_lm(torch.nn.Linear(2, 2))
        False
    """
    if not is_hf_model(model) or getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return False
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    name = base_class(model).__name__
    return (any(name == v or (isinstance(v, (tuple, list)) and name in v)
                for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
            or LOSS_MAPPING.get(getattr(model, "loss_type", None)) is ForCausalLMLoss)


def next_token_targets(labels: Tensor) -> Tensor:
    """``labels`` shifted left by one position (``out[:, t] = labels[:, t + 1]``), the last position
    :data:`IGNORE_INDEX`: the target of each prediction of a causal LM under transformers' label convention.

    Example:
        >>> next_token_targets(torch.tensor([[5, 6, 7]]))
        tensor([[   6,    7, -100]])
    """
    return torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), IGNORE_INDEX)], dim=1)


def image_inputs(arch: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """``{"in_channels", "image_size", "num_classes", "class_names"}`` of the image classifier a checkpoint's
    ``arch`` record describes (``{"arch": "transformers:<Class>", "kwargs": {"config": {...}}}``), or ``None``
    when it is not a ``transformers`` model that reads square images (no ``image_size`` in its config).

    Example:
        >>> image_inputs({"arch": "transformers:ViTForImageClassification",
        ...               "kwargs": {"config": {"image_size": 32, "num_channels": 3, "id2label": {"0": "a", "1": "b"}}}})
        {'in_channels': 3, 'image_size': 32, 'num_classes': 2, 'class_names': ['a', 'b']}
    """
    if not str(arch.get("arch", "")).startswith("transformers:"):
        return None
    config = (arch.get("kwargs") or {}).get("config")
    if not isinstance(config, Mapping) or config.get("image_size") is None:
        return None
    size = config["image_size"]
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            return None
        size = size[0]
    labels = config.get("id2label") or {}
    names = [str(labels[k]) for k in sorted(labels, key=int)] if labels else None
    if names and all(n == f"LABEL_{i}" for i, n in enumerate(names)):  # transformers' default names: none given
        names = None
    return {"in_channels": int(config.get("num_channels") or 3), "image_size": int(size),
            "num_classes": len(labels) or config.get("num_labels"), "class_names": names}
