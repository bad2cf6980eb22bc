"""The swap-mode root, for models torch.fx cannot trace.

The layers are converted in place (:func:`autobayes.fx.convert.convert_modules`); every KL unit
(:func:`autobayes.fx.runtime.kl_units`) gets a forward pre-hook that marks it as called, and the root's class
gets the ``"swap"`` root mixin (:mod:`autobayes.fx.derive`), whose forward runs the original forward and adds the
KL of the units it called, each counted once.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .derive import new_derived as _rebuild  # noqa: F401  (pickles written by 0.1.0 name autobayes.fx.swap._rebuild)
from .derive import set_class
from .runtime import USED, kl_units
from .runtime import total_kl  # noqa: F401  (the forward code pickled by 0.1.0 imports it from here)

__all__ = ["make_swap_root"]


def _mark_used(module: nn.Module, args: Any) -> None:
    # the forward pre-hook of every KL unit; pickled with the model by its qualified name: keep it here
    module.__dict__[USED] = True


def make_swap_root(model: nn.Module) -> None:
    """Hook every KL unit of ``model`` and give the root the swap-mode forward.

    Example:
        >>> bnn = autobayes.bayesify(model, mode="swap")  # calls it; bnn(x) returns BayesOutput(output, kl)
    """
    for m in kl_units(model).values():
        m.__dict__[USED] = False
        m.register_forward_pre_hook(_mark_used)
    set_class(model, root="swap")
