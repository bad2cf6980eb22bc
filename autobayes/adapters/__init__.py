"""Bayesian low-rank adapters (LoRA): only the adapter matrices of a pretrained model get a posterior.

* :mod:`~autobayes.adapters.lora`: autobayes' own adapters, :class:`LoRALinear` (``bayesify(model,
  adapter="lora", rank=8, alpha=16, include=[...])``);
* :mod:`~autobayes.adapters.parametrized`: :class:`LoRADelta`, the same update on a weight a forward reads itself
  (``nn.MultiheadAttention``'s ``in_proj_weight``, ``F.linear(x, self.weight)``), as a weight parametrization;
* :mod:`~autobayes.adapters.peft`: models PEFT has wrapped (``bayesify(peft_model)``; PEFT stays optional);
* :mod:`~autobayes.adapters.plan`: how :func:`autobayes.bayesify` restricts the conversion to the adapters;
* :mod:`~autobayes.adapters.merge`: :func:`merge_adapters`, the deterministic model at the posterior mean.
"""

from .lora import LoRALinear
from .merge import merge_adapters
from .plan import ADAPTER_POSTERIOR, ADAPTERS, AdapterPlan, AdapterSpec, adapter_options, adapter_spec, plan_adapters

__all__ = ["LoRALinear", "merge_adapters", "ADAPTERS", "ADAPTER_POSTERIOR", "AdapterSpec", "AdapterPlan", "adapter_spec",
           "adapter_options", "plan_adapters"]
