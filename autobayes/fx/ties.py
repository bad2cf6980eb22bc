"""Tied tensors: one parameter shared by several modules is one random variable.

Language models tie their output head to their input embedding (GPT-2's ``lm_head.weight`` *is*
``transformer.wte.weight``); RoBERTa's ``lm_head.bias`` is ``lm_head.decoder.bias``. Swapping the head for a
``BayesLinear`` would copy the tensor and silently untie it: the head would get a posterior initialised from the
embedding while the embedding trains on its own (and an orphaned bias gets no gradient). Instead, a tie is either

* ``"shared"``: ONE :class:`~autobayes.nn.BayesParameter`, registered as ``<param>_posterior`` on every owner
  (each owner's class derives a posterior attribute, :mod:`autobayes.fx.derive`; no layer is swapped), so every
  read is a sample of the same posterior -- one draw per forward, shared by all reads
  (:func:`autobayes.nn.parameter.shared_draws`) -- and its KL counts once; or
* ``"deterministic"``: every owner keeps the raw tensor (a layer whose weight stays deterministic this way keeps
  its bias deterministic too; a layer whose bias alone is tied still gets a Bayesian weight).

The choice (:func:`decide`): deterministic when ``BayesConfig(tied="deterministic")``, when no owner is a layer
autobayes converts (two norms sharing a weight), or when any owner is *explicitly* excluded (an ``exclude``
pattern or an ``overrides`` entry of ``None`` matches its name); otherwise shared when at least one owner that
autobayes converts is selected by the usual rules (:meth:`BayesConfig.resolve_layer`), with the options of the
first such owner in module order. So ``include=["lm_head"]`` makes the tied embedding Bayesian too (it is the
same tensor), and ``exclude=["transformer.wte"]`` keeps the head deterministic.

A state dict keeps one key per owner, as the deterministic model had (``transformer.wte.weight_posterior.mu``
and ``lm_head.weight_posterior.mu``, the same tensor); ``model.parameters()`` lists it once.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from torch import nn

from ..config import BayesConfig
from ..nn import BayesParameter
from .derive import set_class

__all__ = ["Tie", "find_ties", "decide", "share_posterior"]


@dataclass
class Tie:
    """One tensor registered as a parameter of several modules (or under several names of one module).

    Attributes:
        param: the shared tensor.
        owners: ``(module qualname, module, attribute)`` of each owner, in module order.
    """

    param: nn.Parameter
    owners: List[Tuple[str, nn.Module, str]] = field(default_factory=list)

    @property
    def names(self) -> List[str]:
        """Qualified parameter names: ``["transformer.wte.weight", "lm_head.weight"]``."""
        return [f"{n}.{a}" if n else a for n, _, a in self.owners]


def find_ties(model: nn.Module) -> List[Tie]:
    """The tied tensors of ``model`` (a module registered under several names is one owner, not a tie).

    Example:
        >>> lm = nn.ModuleDict({"emb": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
        >>> lm.head.weight = lm.emb.weight
        >>> [t.names for t in find_ties(lm)]
        [['emb.weight', 'head.weight']]
    """
    groups: Dict[int, Tie] = {}
    seen = set()
    for name, module in model.named_modules(remove_duplicate=False):
        for attr, param in module._parameters.items():
            if param is None or (id(module), attr) in seen:
                continue
            seen.add((id(module), attr))
            groups.setdefault(id(param), Tie(param)).owners.append((name, module, attr))
    return [t for t in groups.values() if len(t.owners) > 1]


def _explicitly_excluded(config: BayesConfig, name: str) -> str:
    """Why ``exclude`` / an ``overrides`` entry of ``None`` names ``name`` ("" when neither does)."""
    for p in config.exclude:
        if name == p or fnmatch.fnmatchcase(name, p):
            return f"owner {name!r} matched by exclude pattern {p!r}"
    for p, value in config.overrides.items():
        if value is None and (name == p or fnmatch.fnmatchcase(name, p)):
            return f"owner {name!r} has overrides[{p!r}] = None"
    return ""


def decide(
    tie: Tie,
    config: BayesConfig,
    candidate: Callable[[str, nn.Module, str], Optional[type]],
    select: Callable[[str, nn.Module, type], Tuple[Optional[BayesConfig], str]],
) -> Tuple[Optional[BayesConfig], str, str]:
    """``(layer config or None, primary owner name, reason)`` for ``tie`` (see the module docstring).

    ``candidate(name, module, attr)`` is the layer type an owner counts as when autobayes converts that
    parameter of it (``None`` when it does not); ``select(name, module, as_type)`` is the selection rule
    (:func:`autobayes.fx.convert.select_layer`).
    """
    owners = [(n, m, a, candidate(n, m, a)) for n, m, a in tie.owners]
    layers = [(n, m, t) for n, m, a, t in owners if t is not None]
    if not layers:
        return None, "", "no owner is a layer autobayes converts"
    if config.tied == "deterministic":
        return None, "", "tied='deterministic'"
    for n, _, _, _ in owners:
        why = _explicitly_excluded(config, n)
        if why:
            return None, "", why
    first_reason = ""
    for n, m, t in layers:
        cfg, reason = select(n, m, t)
        if cfg is not None:
            return cfg, n, f"one posterior shared by all owners (options of {n or '(the model itself)'!r})"
        first_reason = first_reason or f"{n or '(the model itself)'}: {reason}"
    return None, "", f"no owner selected ({first_reason})"


def share_posterior(tie: Tie, config: BayesConfig) -> BayesParameter:
    """Replace the tied tensor of every owner by one posterior attribute ``<attr>_posterior`` (the same module)."""
    posterior = BayesParameter(tie.param, config, from_weights=True)
    for _, module, attr in tie.owners:
        module._parameters.pop(attr)
        module.add_module(attr + "_posterior", posterior)
        set_class(module, attrs=[attr])
    return posterior
