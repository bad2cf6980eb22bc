"""Bayesian low-rank adapters inside :func:`autobayes.bayesify`: which matrices become Bayesian, and the report.

Two ways in, one outcome (only the adapter matrices get a posterior; every base weight stays frozen and
deterministic, never converted):

* ``bayesify(model, adapter="lora", rank=8, alpha=16, include=[...])``: autobayes wraps each selected
  linear layer (``nn.Linear``, transformers' ``Conv1D``) in a :class:`~autobayes.adapters.LoRALinear` (frozen base, ``A: in -> r``, ``B: r -> out``,
  ``B = 0``), gives each selected 2-d weight a forward reads itself (``nn.MultiheadAttention``'s
  ``in_proj_weight``, ``F.linear(x, self.weight)``) a weight parametrization
  (:class:`~autobayes.adapters.parametrized.LoRADelta`) and freezes every other parameter of the model, as PEFT does;
* ``bayesify(peft_model)``: a model PEFT has wrapped with LoRA is recognised (``adapter="peft"`` says so
  explicitly); its ``lora_A`` / ``lora_B`` modules become Bayesian, everything else stays as PEFT set it.

``include`` / ``exclude`` / ``layer_types`` / ``filter_fn`` / ``overrides`` select, by the layer's own name, which
layers get (Bayesian) adapters; the conversion itself then runs with a configuration that names the adapter
matrices exactly, the per-layer options carried over (:func:`conversion_config`). The priors are those of the
configuration: centred at ``prior_loc`` (0 by default), i.e. on "no update" of the pretrained weights.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from torch import nn

from ..config import BayesConfig
from ..errors import ConfigError, UnknownNameError
from ..fx.report import ConversionReport
from ..fx.swap import record_functional_weights
from ..fx.tracer import leaf_ancestors
from ..registry import did_you_mean
from .lora import add_lora, check_rank, lora_candidates
from .parametrized import add_lora_parametrizations
from .peft import check_peft_layer, peft_lora_layers, peft_matrices

__all__ = ["ADAPTERS", "ADAPTER_POSTERIOR", "AdapterSpec", "AdapterPlan", "adapter_spec", "adapter_options",
           "plan_adapters", "conversion_config"]

#: The posterior of adapter matrices when none is named: a mean-field family (the default before 0.3). The
#: default rank-1 posterior multiplies a point-estimated matrix by random factors, and ``B`` starts at 0: its
#: adapters would have no spread until ``B`` moves, and no prior at "no update" (rank-1's prior is on the factors).
ADAPTER_POSTERIOR = "radial"

#: Values of ``bayesify(adapter=...)``: ``"lora"`` adds autobayes' own adapters, ``"peft"`` expects PEFT's.
ADAPTERS = ("lora", "peft")
_SELECTION = ("layer_types", "include", "exclude", "filter_fn", "overrides")
_LORA_OPTIONS = ("rank", "alpha")


@dataclass(frozen=True)
class AdapterSpec:
    """What ``bayesify(adapter=...)`` asked for: ``kind`` (``"lora"`` or ``"peft"``), and LoRA's rank and alpha."""

    kind: str
    rank: int = 8
    alpha: float = 8.0

    def to_dict(self) -> Dict[str, Any]:
        """The ``bayesify`` keywords that rebuild it (stored in checkpoints)."""
        if self.kind == "peft":
            return {"adapter": "peft"}
        return {"adapter": "lora", "rank": self.rank, "alpha": self.alpha}


def adapter_spec(adapter: Any, options: Dict[str, Any]) -> Optional[AdapterSpec]:
    """The adapter ``bayesify`` was asked for; pops ``rank`` / ``alpha`` from its keyword ``options``.

    Example:
        >>> adapter_spec("lora", {"rank": 4, "alpha": 8})
        AdapterSpec(kind='lora', rank=4, alpha=8.0)
    """
    given = [k for k in _LORA_OPTIONS if k in options]
    if isinstance(adapter, AdapterSpec):
        if given:
            raise ConfigError(f"pass {given} inside the AdapterSpec, not beside it")
        return adapter
    if adapter is None:
        if given:
            raise ConfigError(f"{given} are options of LoRA adapters: "
                              f"bayesify(model, adapter='lora', rank=8, alpha=16)")
        return None
    if not isinstance(adapter, str) or adapter.lower() not in ADAPTERS:
        raise UnknownNameError(f"unknown adapter {adapter!r}; choose one of {list(ADAPTERS)} (or None: no "
                               f"adapters).{did_you_mean(str(adapter), ADAPTERS)}")
    kind = adapter.lower()
    if kind == "peft":
        if given:
            raise ConfigError(f"adapter='peft' takes the rank and alpha PEFT's LoraConfig(r=..., lora_alpha=...) set; "
                              f"drop {given}")
        return AdapterSpec("peft")
    rank = check_rank(options.pop("rank", 8))
    alpha = options.pop("alpha", None)
    alpha = float(rank) if alpha is None else alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ConfigError(f"alpha must be a positive number (the update is scaled by alpha / rank), got {alpha!r}; "
                          f"e.g. alpha=16")
    return AdapterSpec("lora", rank, float(alpha))


@dataclass
class AdapterPlan:
    """The adapters of one conversion: the configuration the conversion runs with, and what to report."""

    spec: AdapterSpec
    config: BayesConfig
    owners: Dict[str, str] = field(default_factory=dict)  # adapter matrix name -> the layer it adapts
    others: Dict[str, str] = field(default_factory=dict)  # layer name -> why its adapters are not Bayesian
    n_params_total: int = 0
    weights: Dict[str, str] = field(default_factory=dict)  # LoRADelta name -> the weight it adapts (parametrized)

    def finish(self, net: nn.Module, report: ConversionReport) -> None:
        """Record the adapters in ``report`` (reasons, totals, a note) and on ``net`` (``bayes_adapter``)."""
        report.n_params_total = self.n_params_total
        bases = {f"{owner}.base_layer" for owner in self.owners.values()}
        own = self.spec.kind == "lora"
        for record in report.records:
            if record.status == "bayesian" and record.name in self.owners:
                if record.name in self.weights:
                    record.reason = f"LoRA A and B of {self.weights[record.name]!r} (a weight parametrization)"
                else:
                    part = "A" if ".lora_A" in record.name else "B"
                    record.reason = f"LoRA {part} of {self.owners[record.name]!r}"
            elif record.status == "skipped":
                if record.name in bases:
                    record.reason = "frozen base weight of the adapted layer (deterministic, requires_grad=False)"
                elif record.name in self.others:
                    record.reason = self.others[record.name]
                else:
                    record.reason = ("frozen, deterministic" if own else "deterministic") + " (adapter mode: only " \
                                    "adapter matrices are Bayesian)"
        layers = sorted({o for m, o in self.owners.items() if m not in self.weights} | set(self.weights.values()))
        n_var = sum(r.n_bayes_params for r in report.converted)
        if own:
            head = (f"LoRA adapters (rank {self.spec.rank}, alpha {self.spec.alpha:g}, scaling "
                    f"{self.spec.alpha / self.spec.rank:g}) added to {len(layers)} linear layer(s) or weight(s)")
        else:
            head = f"PEFT LoRA model: the adapters of {len(layers)} layer(s) made Bayesian"
        report.notes.append(
            f"{head}: only the adapter matrices A / B are Bayesian ({n_var:,} variational parameters); every base "
            f"weight is frozen (requires_grad=False) and deterministic"
            + ("; so is every other parameter of the model" if own else "")
            + ". autobayes.merge_adapters(bnn) folds the posterior means into the base weights")
        net.bayes_adapter = self.spec.to_dict()


def adapter_options(model: nn.Module, spec: Optional["AdapterSpec"], config: Any,
                    options: Dict[str, Any]) -> Dict[str, Any]:
    """``options`` with ``posterior=ADAPTER_POSTERIOR`` added when ``model``'s adapters are what ``bayesify``
    converts (``adapter="lora"``, or a PEFT model) and neither ``options`` nor ``config`` names a posterior."""
    named = "posterior" in options or isinstance(config, BayesConfig) or (
        isinstance(config, Mapping) and "posterior" in config)
    if named or (spec is None and not peft_lora_layers(model)):
        return options
    return {**options, "posterior": ADAPTER_POSTERIOR}


def plan_adapters(net: nn.Module, config: BayesConfig, spec: Optional[AdapterSpec],
                  allow_deterministic: bool = False, inputs: Optional[Tuple[tuple, Dict[str, Any]]] = None
                  ) -> Optional[AdapterPlan]:
    """Prepare ``net`` (in place) for a conversion of its adapters only; ``None`` when it has none to convert.

    With ``spec.kind == "lora"`` the selected linear layers (``nn.Linear``, ``Conv1D``) are wrapped in adapters, the
    selected weights read functionally (those of :func:`~autobayes.adapters.lora.lora_candidates`; with ``inputs``,
    ``(args, kwargs)``, also those one run finds fed to a weight op) get a :class:`LoRADelta` parametrization,
    and every parameter of ``net`` is frozen; a model holding PEFT LoRA layers is recognised without ``spec``.

    Raises:
        ConfigError: no layer selected (unless ``allow_deterministic``), ``adapter='lora'`` on a PEFT model,
            ``adapter='peft'`` on a model without PEFT layers, or an unsupported PEFT layer.
    """
    peft_layers = peft_lora_layers(net)
    if spec is None and not peft_layers:
        return None
    if spec is not None and spec.kind == "lora" and peft_layers:
        raise ConfigError(
            f"{type(net).__name__} already holds PEFT LoRA layers ({peft_layers[0][0]!r}, ...): bayesify(model) "
            f"makes their adapters Bayesian; adapter='lora' would add a second set. Drop adapter='lora'")
    if spec is None or spec.kind == "peft":
        if not peft_layers:
            raise ConfigError(f"adapter='peft': {type(net).__name__} holds no PEFT LoRA layer; wrap it first "
                              f"(peft.get_peft_model(model, peft.LoraConfig(...))) or use adapter='lora'")
        return _plan_peft(net, config, peft_layers, allow_deterministic)
    return _plan_lora(net, config, spec, allow_deterministic, inputs)


def _plan_lora(net: nn.Module, config: BayesConfig, spec: AdapterSpec, allow_deterministic: bool,
               inputs: Optional[Tuple[tuple, Dict[str, Any]]]) -> AdapterPlan:
    for where, options in [("", vars(config))] + [(f"overrides[{k!r}]: ", v) for k, v in config.overrides.items() if v]:
        if options.get("moped_delta") is not None:  # B starts at 0: its MOPED std would be the 1e-8 floor for good
            raise ConfigError(f"{where}moped_delta sets the posterior std from trained weights, but the adapters "
                              f"start fresh (B = 0); use init_scale=... (e.g. 1e-3) or the default initialisation")
        if options.get("prior_loc") == "weights":
            raise ConfigError(f"{where}prior_loc='weights' would centre the adapters' prior on their random start; "
                              f"they are centred at prior_loc=0.0 ('no change of the pretrained weights')")
    found = record_functional_weights(net, inputs) if inputs is not None else {}
    chosen, weights, others = lora_candidates(net, config, leaf_ancestors(net, ()), found)
    if not chosen and not weights and not allow_deterministic:
        raise ConfigError(_nothing_selected(net, config, "linear layer", [n for n, _, _ in others]))
    net.requires_grad_(False)
    add_lora(net, chosen, spec.rank, spec.alpha)
    owners = {f"{name}.lora_{part}": name for name, _ in chosen for part in "AB"}
    adapted = {}
    for delta, name, weight in add_lora_parametrizations(net, weights, spec.rank, spec.alpha):
        owners[delta] = name
        adapted[delta] = weight
    layers = chosen + [(name, module) for name, module, _ in weights]
    return AdapterPlan(spec, conversion_config(config, layers, owners), owners, {n: why for n, _, why in others},
                       sum(p.numel() for p in net.parameters()), adapted)


def _plan_peft(net: nn.Module, config: BayesConfig, layers: List[Tuple[str, nn.Module]],
               allow_deterministic: bool) -> AdapterPlan:
    owners: Dict[str, str] = {}
    others: Dict[str, str] = {}
    chosen = []
    for name, layer in layers:
        why = check_peft_layer(name, layer)
        resolved, reason = (None, why) if why else config.resolve_layer(name, layer.base_layer)
        matrices = peft_matrices(name, layer) if hasattr(layer, "lora_A") else []
        if resolved is None:
            for matrix in matrices:
                others[matrix] = why or f"adapter left deterministic ({reason})"
            continue
        layer.base_layer.requires_grad_(False)
        chosen.append((name, layer.base_layer))
        owners.update({matrix: name for matrix in matrices})
    if not chosen and not allow_deterministic:
        raise ConfigError(_nothing_selected(net, config, "PEFT LoRA layer", [n for n, _ in layers]))
    return AdapterPlan(AdapterSpec("peft"), conversion_config(config, chosen, owners), owners, others,
                       sum(p.numel() for p in net.parameters()))


def conversion_config(config: BayesConfig, layers: List[Tuple[str, nn.Module]], owners: Mapping[str, str]
                      ) -> BayesConfig:
    """``config`` restricted to the adapter matrices ``owners`` names, each with the per-layer options (from
    ``overrides``) of the layer it adapts (``layers``: ``(name, module)`` of those layers).

    Example:
        >>> cfg = BayesConfig(include=["fc"], overrides={"fc": {"prior_scale": 0.1}})
        >>> conversion_config(cfg, [("fc", nn.Linear(2, 2))], {"fc.lora_A": "fc"}).overrides
        {'fc.lora_A': {'prior_scale': 0.1}}
    """
    modules = dict(layers)
    fields = [f.name for f in dataclasses.fields(config) if f.name not in _SELECTION]
    overrides: Dict[str, Dict[str, Any]] = {}
    for matrix, owner in owners.items():
        resolved, _ = config.resolve_layer(owner, modules.get(owner))
        changed = {} if resolved is None else {f: getattr(resolved, f) for f in fields
                                               if getattr(resolved, f) != getattr(config, f)}
        if changed:
            overrides[matrix] = changed
    return dataclasses.replace(config, layer_types=None, include=tuple(owners), exclude=(), filter_fn=None,
                               overrides=overrides)


def _nothing_selected(net: nn.Module, config: BayesConfig, what: str, names: List[str], note: str = "") -> str:
    """The error of a selection that matched no layer: the filters, the layers that exist, and a filter that
    would match some of them (built from their names, never the one that failed)."""
    filters = [f"{k}={getattr(config, k)!r}" for k in _SELECTION if getattr(config, k) not in (None, (), {})]
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    found = f"its {what}s: {shown}{note}" if names else f"it has no {what}"
    suffixes = list(dict.fromkeys(n.rpartition(".")[2] for n in names))[:3]
    example = (f"include={['*' + s for s in suffixes]!r} would select the {what}s named so" if suffixes else
               "convert the model without adapters")
    return (f"no {what} of {type(net).__name__} was selected for a Bayesian adapter"
            f"{' by ' + ', '.join(filters) if filters else ''}; {found}. Fix the filter ({example}; see "
            f"print(autobayes.inspect_model(model, adapter=...))), or pass allow_deterministic=True")
