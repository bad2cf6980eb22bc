"""``generate()`` on a Bayesian ``transformers`` model: one posterior draw per call.

A converted model's forward returns :class:`~autobayes.fx.runtime.BayesOutput` ``(output, kl)``, while
``transformers``' ``GenerationMixin`` expects the model's own ``ModelOutput``. The root class autobayes derives
for a model that can generate gets :class:`GenerateRoot`, whose ``generate`` runs the original ``generate``
with a forward that returns the output alone, with the KL switched off (nothing is trained while decoding).

**One weight draw serves the whole call.** Every posterior is sampled once per ``generate`` call (each
:class:`~autobayes.nn.BayesParameter` gets a draw seed for the call, as :func:`autobayes.predict` with
``seed=`` does, and layers in ``local`` mode sample their weights for the call instead of drawing per-example
activation noise), so every decoding step and every sequence of the batch (every beam, every
``num_return_sequences``) sees the same network, one sample of the posterior; the key/value cache is then
consistent with the weights that read it. Two calls draw two networks: repeat the call for a Monte Carlo set of
generations. Under :func:`autobayes.use_mean` the posterior means are used: decoding is deterministic, and
greedy decoding equals the deterministic model's with the posterior means as weights.

Nothing here imports ``transformers``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Iterator

import torch
from torch import nn

from ..fx.runtime import BASE_CLASS, BayesOutput, kl_disabled
from ..nn.parameter import seeded_draws

__all__ = ["GenerateRoot", "one_draw", "can_generate"]


def can_generate(cls: type) -> bool:
    """Whether ``cls`` has ``transformers``' ``GenerationMixin`` among its bases (checked by name: nothing is
    imported)."""
    return any(c.__name__ == "GenerationMixin" and c.__module__.startswith("transformers.") for c in cls.__mro__)


@contextlib.contextmanager
def one_draw(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every forward of ``model`` uses the same posterior draw of every weight.

    Each :class:`~autobayes.nn.BayesParameter` without a draw seed gets one (from torch's global generator), and
    a layer in ``local`` mode (per-example activation noise) samples its weights instead, for the block; both
    are restored on exit. Under :func:`autobayes.use_mean` the means are used and nothing changes.

    Example:
        >>> with torch.no_grad(), one_draw(bnn):  # doctest: +SKIP
        ...     a, b = bnn(x).output, bnn(x).output  # the same network twice: a equals b
    """
    local = [m for m in model.modules() if getattr(m, "forward_mode", None) == "local"]
    entropy = int(torch.randint(0, 2**62, ()).item())  # torch.manual_seed makes a call reproducible
    try:
        for layer in local:
            layer.forward_mode = "sample"
        with seeded_draws(model, entropy, unseeded_only=True):
            yield model
    finally:
        for layer in local:
            layer.forward_mode = "local"


@contextlib.contextmanager
def _output_only(model: nn.Module) -> Iterator[None]:
    """``model(...)`` returns the output of its :class:`BayesOutput` (the model's own ``ModelOutput``), without
    computing the KL. The forward keeps the signature of the original class's (``generate`` inspects it)."""
    root_forward = type(model).forward
    base = getattr(type(model), BASE_CLASS, type(model))

    @functools.wraps(base.forward)
    def forward(*args: Any, **kwargs: Any) -> Any:
        out = root_forward(model, *args, **kwargs)
        return out.output if isinstance(out, BayesOutput) else out  # (a graph capture runs the plain forward)

    forward.__signature__ = inspect.signature(base.forward.__get__(model))  # bound: no `self`, as model.forward's
    model.__dict__["forward"] = forward
    try:
        with kl_disabled(model):
            yield
    finally:
        del model.__dict__["forward"]


class GenerateRoot:
    """Root mixin of a converted ``transformers`` model that can generate: ``generate`` with one posterior draw
    per call (see the module docstring); every argument of ``transformers``' ``generate`` is accepted.

    Example:
        >>> bnn = autobayes.bayesify(GPT2LMHeadModel(config))  # doctest: +SKIP
        >>> ids = bnn.generate(prompt, max_new_tokens=20, do_sample=False)  # one sampled network, greedy decoding
        >>> with autobayes.use_mean(bnn):  # doctest: +SKIP
        ...     ids = bnn.generate(prompt, max_new_tokens=20, do_sample=False)  # the posterior means: deterministic
    """

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with _output_only(self), one_draw(self):
            return super().generate(*args, **kwargs)
