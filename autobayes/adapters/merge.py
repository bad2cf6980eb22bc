""":func:`merge_adapters`: the deterministic model at the posterior mean, adapters folded into the base weights."""

from __future__ import annotations

import copy
from typing import Mapping

from torch import Tensor, nn

from ..errors import ConfigError
from ..fx.convert import replace_module
from ..fx.derive import base_class
from ..fx.runtime import FORWARD_CODE, FORWARD_FNS, USED
from ..nn import BayesLayer, BayesParameter
from .lora import LoRALinear
from .parametrized import LoRADelta, merge_lora_parametrizations
from .peft import merge_peft

__all__ = ["merge_adapters"]

_ROOT_ATTRIBUTES = ("bayes_config", "bayes_report", "bayes_adapter")


def merge_adapters(bnn: nn.Module) -> nn.Module:
    """A deterministic copy of ``bnn`` at the posterior mean, each adapter folded into the weight it adapts.

    Every adapted layer becomes a plain layer with weight ``W + scaling * B_mu @ A_mu`` (``A_mu`` / ``B_mu``: the
    posterior means of the adapter matrices): for ``bayesify(model, adapter="lora", ...)`` the model's own
    ``nn.Linear`` again, and each weight parametrization (:class:`~autobayes.adapters.parametrized.LoRADelta`)
    removed, the weight keeping its adapted value; for a PEFT model, PEFT's ``merge_and_unload()`` of it (the
    plain base model, e.g. the ``BertForSequenceClassification`` PEFT wrapped). Its outputs equal ``bnn(x).output`` under
    :func:`autobayes.use_mean` (up to float rounding); it returns the plain output (no KL), and every parameter
    is trainable (``requires_grad=True``) as in a freshly built model. ``bnn`` is not modified.

    Raises:
        ConfigError: ``bnn`` holds no adapters (it was not converted with ``adapter="lora"`` or from a PEFT
            model); for other Bayesian layers use ``layer.to_deterministic()``.

    Example:
        >>> bnn = autobayes.bayesify(model, adapter="lora", rank=4, include=["*attn*"])
        >>> merged = autobayes.merge_adapters(bnn)
        >>> with autobayes.use_mean(bnn):
        ...     torch.allclose(bnn(x).output, merged(x), atol=1e-6)
        True
    """
    info = getattr(bnn, "bayes_adapter", None)
    if not isinstance(bnn, nn.Module) or not isinstance(info, Mapping) or info.get("adapter") not in ("lora", "peft"):
        raise ConfigError(
            f"merge_adapters expects a model converted with Bayesian adapters (autobayes.bayesify(model, "
            f"adapter='lora', ...) or bayesify(peft_model)); {type(bnn).__name__} has none. For other Bayesian "
            f"layers, layer.to_deterministic() gives the posterior-mean layer")
    model = copy.deepcopy(bnn)
    _plain_root(model)
    if info["adapter"] == "lora":
        for layer in [m for m in model.modules() if isinstance(m, LoRALinear)]:
            replace_module(model, layer, layer.merged(_mean_weight(layer.lora_A), _mean_weight(layer.lora_B)))
        for delta in [m for m in model.modules() if isinstance(m, LoRADelta)]:
            _plain_attributes(delta)
        merge_lora_parametrizations(model)
    else:
        for layer in [m for m in model.modules() if isinstance(m, BayesLayer)]:
            replace_module(model, layer, layer.to_deterministic())
        for module in model.modules():
            _plain_attributes(module)
        model = merge_peft(model)
    model.requires_grad_(True)
    return model


def _mean_weight(layer: nn.Module) -> Tensor:
    """The posterior mean of an adapter matrix (a swapped ``BayesLinear`` or a posterior attribute), or the
    weight of one left deterministic."""
    posterior = layer._modules.get("weight_posterior")
    return posterior.mu if isinstance(posterior, BayesParameter) else layer.weight


def _plain_root(model: nn.Module) -> None:
    """Undo the converted root: its own class and forward again, no autobayes attributes."""
    model.__class__ = base_class(model)
    for key in (FORWARD_CODE, FORWARD_FNS, *_ROOT_ATTRIBUTES):
        model.__dict__.pop(key, None)


def _plain_attributes(module: nn.Module) -> None:
    """A module with posterior attributes gets its plain parameters back, at the posterior means."""
    posteriors = [k for k, m in module._modules.items() if isinstance(m, BayesParameter) and k.endswith("_posterior")]
    if not posteriors or isinstance(module, BayesLayer):
        return
    module.__class__ = base_class(module)
    for key in posteriors:
        mu = module._modules.pop(key).mu
        module.register_parameter(key[: -len("_posterior")], nn.Parameter(mu.detach().clone()))
    module.__dict__.pop(USED, None)
    for hook_id, hook in list(module._forward_pre_hooks.items()):
        if getattr(hook, "__module__", "") == "autobayes.fx.swap":  # swap mode's "called" marker
            del module._forward_pre_hooks[hook_id]
