"""`BayesConfig`: every option of a Bayesian layer and of `bayesify`, validated where it is built.

Precedence for a layer named ``name`` (its qualified name in the model):

1. ``overrides``: the patterns (``fnmatch`` style, e.g. ``"layer4.*"``) that match ``name`` are applied in
   the order of the dict, an exact name last; a value of ``None`` leaves the layer deterministic, a dict
   replaces the fields it names.
2. ``layer_types`` (by type; ``None``: the default types, see :func:`default_layer_types`), ``include`` /
   ``exclude`` (name patterns) and ``filter_fn(module, name)`` must all accept the layer.

:meth:`BayesConfig.resolve_layer` applies these rules and says which one keeps a layer deterministic.

This module imports no layers: the types ``layer_types`` may name come from the layer table that
:mod:`autobayes.nn.mappings` registers in :mod:`autobayes.layer_types` (:func:`register_layer_table`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

from .checks import check_finite, check_int, check_nonnegative, check_positive
from .errors import ConfigError, UnknownNameError
from .layer_types import (check_layer_type, default_layer_types, opt_in_type, register_layer_names,
                          register_layer_table, supported_layer_types, type_matches)
from .registry import did_you_mean

__all__ = [
    "BayesConfig",
    "FORWARD_MODES",
    "KL_METHODS",
    "TIE_MODES",
    "register_layer_table",
    "register_layer_names",
    "supported_layer_types",
    "default_layer_types",
]

#: The number of Monte Carlo samples of a mean-field family's KL estimator when ``BayesConfig.n_mc`` is ``None``.
DEFAULT_N_MC = 100
#: Forward modes of a Bayesian layer (see :class:`autobayes.nn.BayesLayer`).
FORWARD_MODES = ("auto", "local", "sample", "mean")
#: KL estimators (see :mod:`autobayes.kl`).
KL_METHODS = ("auto", "closed", "repar", "direct")
#: What becomes of a tensor shared by several modules (see ``BayesConfig.tied`` and :mod:`autobayes.fx.ties`).
TIE_MODES = ("shared", "deterministic")

@dataclass
class BayesConfig:
    """Options of the Bayesian layers and of the conversion.

    Args:
        posterior: name of a registered posterior: the rank-1 mixtures ``"rank1"`` (the default) /
            ``"rank1_cauchy"`` (:class:`autobayes.posteriors.Rank1`), the mean-field families ``"radial"``,
            ``"gaussian"``, ``"laplace"``, ``"logistic"``, or one you registered. The default follows the quality
            benchmark (``benchmarks/RESULTS.md``): on the digits CNN, rank-1 beat the deterministic network, the
            Radial and the deep ensemble of 5 on NLL and held-out-class AUROC.
        kl: KL estimator: ``"auto"`` (closed form where the pair has one, else ``"repar"``), ``"closed"``,
            ``"repar"`` (the paper's graph-reparameterised Monte Carlo estimator, memory independent of
            ``n_mc``) or ``"direct"`` (plain Monte Carlo, graph grows with ``n_mc``; the reference).
        n_mc: number M of Monte Carlo samples of the KL estimators, an integer >= 1, or ``None`` (the default):
            100 (``DEFAULT_N_MC``) for the mean-field families' Monte Carlo estimators (their ``repar`` estimator's
            memory and, for the Gaussian, time do not grow with M), ``components`` (one draw per mixture component)
            for the rank-1 mixtures, whose KL costs time in proportion to M and whose quality was measured not to
            depend on it (``benchmarks/RESULTS.md``, the n_mc question for rank-1).
        forward: ``"auto"`` (the posterior's own default: local reparameterisation for the Gaussian, weight
            sampling for the Radial), ``"local"``, ``"sample"`` or ``"mean"``.
        prior: name of a registered prior (``"normal"``, ``"laplace"``, ``"student_t"``, ``"scale_mixture"``,
            or one you registered).
        prior_loc: location of the prior: a float, or ``"weights"`` to centre it on the weights the layer was
            converted from (a pretrained model's weights become the prior mean).
        prior_scale: scale (standard deviation for ``"normal"``) of the prior, > 0.
        prior_kwargs: extra arguments of the prior family.
        init_log_var: ``(low, high)``: the log-variance ``log s^2`` of each weight's posterior starts uniform in
            this range, unless ``init_scale`` or ``moped_delta`` is given. ``None`` (the default): uniform in
            ``(-3 - log d, -2 - log d)`` for a ``d``-element tensor, so the tensor's total posterior variance
            ``sum_j s_j^2`` starts between ``e^-3`` and ``e^-2`` (the Radial posterior's initialisation in the
            paper repository, unchanged). A per-weight std of ~0.3 everywhere, ``(-3, -2)``, drowns a small
            network in noise: on digits_cnn it stays at chance accuracy after 30 epochs.
        init_scale: a constant initial posterior standard deviation ``s`` of each weight (> 0); useful when
            converting trained weights (e.g. ``1e-2``).
        moped_delta: MOPED initialisation, ``s = moped_delta * |w|`` (floored at 1e-8) from the converted
            weights w.

            These three set the per-weight standard deviation ``s`` whatever the posterior family: each
            family's own scale is ``sigma = s / sqrt(E[xi_j^2])`` (e.g. ``s * sqrt(d)`` for the Radial of a
            ``d``-element tensor, ``s / sqrt(2)`` for the Laplace), see
            :func:`autobayes.nn.parameter.initial_log_var`.
        mc_chunk_size: how many noise tensors the sampled-statistics estimators draw at once (memory bound).
        components: the number K of mixture components of the rank-1 posteriors (``"rank1"``,
            ``"rank1_cauchy"``), an integer >= 1; a batch is split across them (see
            :class:`autobayes.posteriors.Rank1`). The other families ignore it.
        factor_init_std: the spread of the rank-1 mixtures' component means around 1 at the start: every element
            of ``r`` and ``s`` differs across the ``K`` components with this standard deviation, while the average
            weight of the components stays the converted ``W`` (:func:`autobayes.nn.rank1.balanced_spread`). The
            components start as different networks, the diversity of a deep ensemble (Dusenberry et al. start
            theirs at random too): on the digits CNN, 0.5 against 0 raised the held-out-class AUROC and lowered
            the NLL (``benchmarks/RESULTS.md``). ``0`` starts every component at the converted network itself
            (what ``autobayes convert`` does for trained checkpoints). A float >= 0; the other families ignore it.
        layer_types: the deterministic layer types to convert (classes or their names such as ``"Conv2d"``);
            ``None`` converts every supported type that is on by default (:func:`default_layer_types`: linear,
            convolutional, recurrent layers and ``nn.MultiheadAttention``). Embeddings and normalisation layers
            are opt-in: name them, e.g. ``layer_types=["Linear", "LSTM", "Embedding", "LayerNorm"]``.
        include: qualified-name patterns; when given, only matching layers are converted.
        exclude: qualified-name patterns of layers to keep deterministic.
        filter_fn: ``filter_fn(module, name) -> bool``; layers for which it returns False stay deterministic.
        overrides: per-layer options, ``{pattern: {field: value} | None}``; ``None`` keeps the layer
            deterministic.
        tied: a tensor shared by several modules (an output head tied to the input embedding, GPT-2's
            ``lm_head.weight`` *is* ``transformer.wte.weight``) is one random variable, never silently untied:
            ``"shared"`` (the default) gives all its owners ONE posterior (one draw per forward, read by every
            owner; its KL counts once); ``"deterministic"`` keeps it deterministic in every owner. The default is
            ``"shared"`` because the head is the layer that matters most for predictive uncertainty (a
            head-only posterior is the usual cheap Bayesian last layer) and sharing keeps the tie the model was
            trained with. A tie is Bayesian when an owner autobayes converts is selected and no owner is
            matched by ``exclude`` or an ``overrides`` entry of ``None``; the report lists every tie.

    Example:
        >>> cfg = BayesConfig(posterior="gaussian", n_mc=1000, overrides={"fc": {"prior_scale": 0.1}})
        >>> cfg.for_layer("fc").prior_scale
        0.1
    """

    posterior: str = "rank1"
    kl: str = "auto"
    n_mc: Optional[int] = None
    forward: str = "auto"
    prior: str = "normal"
    prior_loc: Union[float, str] = 0.0
    prior_scale: float = 1.0
    prior_kwargs: Dict[str, Any] = field(default_factory=dict)
    init_log_var: Optional[Tuple[float, float]] = None
    init_scale: Optional[float] = None
    moped_delta: Optional[float] = None
    mc_chunk_size: int = 32
    components: int = 4
    factor_init_std: float = 0.5
    layer_types: Optional[Tuple[Union[type, str], ...]] = None
    include: Optional[Tuple[str, ...]] = None
    exclude: Tuple[str, ...] = ()
    filter_fn: Optional[Callable[[Any, str], bool]] = None
    overrides: Dict[str, Optional[Dict[str, Any]]] = field(default_factory=dict)
    tied: str = "shared"

    # ------------------------------------------------------------------ validation
    def __post_init__(self) -> None:
        from .posteriors import POSTERIORS
        from .priors import PRIORS

        self.posterior = _name_in(self.posterior, POSTERIORS.names(), "posterior")
        self.prior = _name_in(self.prior, PRIORS.names(), "prior")
        self.kl = _name_in(self.kl, KL_METHODS, "kl")
        self.forward = _name_in(self.forward, FORWARD_MODES, "forward")
        self.tied = _name_in(self.tied, TIE_MODES, "tied")
        if self.n_mc is not None:
            self.n_mc = check_int(self.n_mc, "n_mc", 1,
                                  hint="the number of Monte Carlo samples of the KL, e.g. n_mc=100 (None: the default)")
        check_int(self.mc_chunk_size, "mc_chunk_size", 1)
        self.components = check_int(self.components, "components", 1,
                                    hint="the number of rank-1 mixture components, e.g. components=4")
        self.factor_init_std = check_nonnegative(
            self.factor_init_std, "factor_init_std",
            hint="the spread of the rank-1 components' initial means around 1, e.g. 0.5 (0: start at the model)")
        if isinstance(self.prior_loc, str):
            if self.prior_loc != "weights":
                raise ConfigError(
                    f"prior_loc must be a float or 'weights' (centre the prior on the converted weights), "
                    f"got {self.prior_loc!r}"
                )
        else:
            self.prior_loc = check_finite(self.prior_loc, "prior_loc")
        self.prior_scale = check_positive(self.prior_scale, "prior_scale")
        if not isinstance(self.prior_kwargs, Mapping):
            raise ConfigError(f"prior_kwargs must be a dict, got {type(self.prior_kwargs).__name__}")
        self.prior_kwargs = dict(self.prior_kwargs)
        _check_prior(self.prior, self.prior_scale, self.prior_kwargs)
        POSTERIORS.get(self.posterior).check_config(self)
        if self.init_log_var is not None:
            try:
                low, high = (float(v) for v in self.init_log_var)
            except (TypeError, ValueError) as err:
                raise ConfigError(
                    f"init_log_var must be a pair (low, high) of floats or None, got {self.init_log_var!r}; "
                    f"e.g. init_log_var=(-10.0, -9.0)"
                ) from err
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ConfigError(
                    f"init_log_var must satisfy low <= high (finite), got {self.init_log_var!r}; e.g. (-10.0, -9.0)"
                )
            self.init_log_var = (low, high)
        if self.init_scale is not None:
            self.init_scale = check_positive(self.init_scale, "init_scale")
        if self.moped_delta is not None:
            self.moped_delta = check_positive(self.moped_delta, "moped_delta")
        if self.layer_types is not None:
            self.layer_types = tuple(check_layer_type(t) for t in _as_tuple(self.layer_types, "layer_types"))
        if self.include is not None:
            self.include = _patterns(self.include, "include")
        self.exclude = _patterns(self.exclude, "exclude")
        if self.filter_fn is not None and not callable(self.filter_fn):
            raise ConfigError(f"filter_fn must be callable as filter_fn(module, name) -> bool, got {self.filter_fn!r}")
        if not isinstance(self.overrides, Mapping):
            raise ConfigError(f"overrides must be a dict {{pattern: dict | None}}, got {type(self.overrides).__name__}")
        fields = {f.name for f in dataclasses.fields(self)} - _MODEL_LEVEL
        for pattern, value in self.overrides.items():
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"overrides[{pattern!r}] must be a dict of options or None, got {value!r}")
            for key in value:
                if key not in fields:
                    raise UnknownNameError(
                        f"overrides[{pattern!r}] has an unknown option {key!r}; per-layer options are "
                        f"{sorted(fields)}.{did_you_mean(key, fields)}"
                    )
            dataclasses.replace(self, **value, overrides={})  # validate the overridden values now

    # ------------------------------------------------------------------ per-layer resolution
    def for_layer(self, name: str, module: Any = None) -> Optional["BayesConfig"]:
        """The configuration of the layer ``name`` (``module`` checked against the type / filter options),
        or ``None`` when the layer stays deterministic (:meth:`resolve_layer` also says why)."""
        return self.resolve_layer(name, module)[0]

    def included(self, name: str) -> bool:
        """Whether an ``include`` pattern names the layer ``name`` (``False`` when ``include`` is ``None``).

        Example:
            >>> BayesConfig(include=["layer4.*"]).included("layer4.0.conv1")
            True
        """
        return self.include is not None and any(_match(name, p) for p in self.include)

    def resolve_layer(
        self, name: str, module: Any = None, *, as_type: Optional[type] = None
    ) -> Tuple[Optional["BayesConfig"], str]:
        """``(configuration, "")`` of the layer ``name``, or ``(None, reason)`` when it stays deterministic.

        The first rule that rejects the layer gives the reason, in this order: ``layer_types``, ``include``,
        ``exclude``, ``filter_fn`` (called at most once), an override of ``None``; then the matching overrides
        are applied (see the module docstring). ``module`` is checked against ``layer_types`` and ``filter_fn`` (skipped when ``None``); ``as_type`` is a
        layer type the module also counts as for ``layer_types`` (``nn.Linear`` for a weight fed to ``F.linear``).

        Example:
            >>> cfg = BayesConfig(exclude=["head"], overrides={"fc": {"prior_scale": 0.1}})
            >>> cfg.resolve_layer("head")
            (None, "matched by exclude pattern 'head'")
            >>> cfg.resolve_layer("fc")[0].prior_scale
            0.1
        """
        if self.layer_types is not None and (module is not None or as_type is not None):
            if not any(type_matches(module, as_type, t) for t in self.layer_types):
                return None, f"type not in layer_types={[getattr(t, '__name__', t) for t in self.layer_types]}"
        elif module is not None or as_type is not None:
            opt_in = opt_in_type(module, as_type)
            if opt_in is not None:
                return None, (f"{opt_in} is opt-in (off by default); turn it on by naming it in layer_types, "
                              f"e.g. layer_types=['Linear', '{opt_in}']")
        if self.include is not None and not self.included(name):
            return None, f"not matched by include={list(self.include)}"
        for p in self.exclude:
            if _match(name, p):
                return None, f"matched by exclude pattern {p!r}"
        if module is not None and self.filter_fn is not None and not self.filter_fn(module, name):
            return None, "filter_fn returned False"
        for p, value in self.overrides.items():
            if value is None and _match(name, p):
                return None, f"overrides[{p!r}] is None"
        cfg = self
        matching = [p for p in self.overrides if p != name and _match(name, p)]
        if name in self.overrides:
            matching.append(name)
        for pattern in matching:
            cfg = dataclasses.replace(cfg, **self.overrides[pattern])
        return cfg, ""

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> Dict[str, Any]:
        """A JSON-serialisable dict (``filter_fn`` cannot be saved: it is dropped, with ``None`` in its place)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["filter_fn"] = None
        out["init_log_var"] = None if self.init_log_var is None else list(self.init_log_var)
        out["layer_types"] = None if self.layer_types is None else [t if isinstance(t, str) else t.__name__ for t in self.layer_types]
        out["include"] = None if self.include is None else list(self.include)
        out["exclude"] = list(self.exclude)
        out["overrides"] = {k: (None if v is None else dict(v)) for k, v in self.overrides.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BayesConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error naming the valid ones."""
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                raise UnknownNameError(f"unknown BayesConfig option {key!r}; valid: {sorted(names)}.{did_you_mean(key, names)}")
        return cls(**dict(data))

    @classmethod
    def make(cls, config: "BayesConfig | Mapping[str, Any] | None" = None, **options: Any) -> "BayesConfig":
        """Build a config from a config, a dict and/or keyword options (keywords win)."""
        if config is None:
            base: Dict[str, Any] = {}
        elif isinstance(config, BayesConfig):
            base = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        elif isinstance(config, Mapping):
            base = dict(config)
        else:
            raise ConfigError(f"config must be a BayesConfig, a dict or None, got {type(config).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        for key in list(base) + list(options):
            if key not in names:
                raise UnknownNameError(f"unknown option {key!r}; valid options are {sorted(names)}.{did_you_mean(key, names)}")
        base.update(options)
        return cls(**base)


# Options that select layers; they make no sense inside a per-layer override.
_MODEL_LEVEL = {"layer_types", "include", "exclude", "filter_fn", "overrides", "tied"}


def _check_prior(name: str, scale: float, kwargs: Dict[str, Any]) -> None:
    """Build a throwaway prior so that a bad ``prior_kwargs`` fails here, not at conversion."""
    import torch

    from .priors import PRIORS

    try:
        PRIORS.get(name).from_config(torch.tensor(0.0), scale, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"prior {name!r} does not accept prior_kwargs={kwargs!r}: {err}") from err


def _name_in(value: Any, choices: Sequence[str], what: str) -> str:
    key = str(value).lower() if isinstance(value, str) else value
    if key not in choices:
        raise UnknownNameError(f"unknown {what} {value!r}; choose one of {list(choices)}.{did_you_mean(str(value), choices)}")
    return key


def _as_tuple(value: Any, what: str) -> tuple:
    if isinstance(value, (str, type)):
        return (value,)
    try:
        return tuple(value)
    except TypeError as err:
        raise ConfigError(f"{what} must be a sequence, got {value!r}") from err


def _patterns(value: Any, what: str) -> Tuple[str, ...]:
    items = _as_tuple(value, what)
    for p in items:
        if not isinstance(p, str):
            raise ConfigError(f"{what} must hold name patterns (str) such as 'fc' or 'layer4.*', got {p!r}")
    return items


def _match(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern)
