"""BayesConfig: option checks whose errors name the problem (and the closest valid name), per-layer resolution
(with the reason a layer stays deterministic) and its precedence, the dict round trip, and its table of layer
types, which autobayes.nn registers so that config.py imports no layers."""

from __future__ import annotations

import pytest
from torch import nn

import autobayes.nn
from autobayes import BayesConfig, ConfigError, UnknownNameError
from autobayes.config import register_layer_table, supported_layer_types


@pytest.mark.parametrize(
    "options, name, reason",
    [
        ({"layer_types": ["Conv2d"]}, "fc", "type not in layer_types=['Conv2d']"),
        ({"include": ["head.*"]}, "fc", "not matched by include=['head.*']"),
        ({"exclude": ["aux", "f*"]}, "fc", "matched by exclude pattern 'f*'"),
        ({"filter_fn": lambda m, n: n != "fc"}, "fc", "filter_fn returned False"),
        ({"overrides": {"f?": {"n_mc": 3}, "f*": None}}, "fc", "overrides['f*'] is None"),
        # the rules in order: types before names before filter_fn before overrides
        ({"layer_types": ["Conv2d"], "exclude": ["fc"], "overrides": {"fc": None}}, "fc", "type not in layer_types=['Conv2d']"),
        ({"exclude": ["fc"], "filter_fn": lambda m, n: False}, "fc", "matched by exclude pattern 'fc'"),
    ],
)
def test_resolve_layer_says_which_rule_keeps_a_layer_deterministic(options, name, reason):
    cfg = BayesConfig(**options)
    assert cfg.resolve_layer(name, nn.Linear(2, 2)) == (None, reason)
    assert cfg.for_layer(name, nn.Linear(2, 2)) is None


def test_resolve_layer_applies_overrides_in_order_and_calls_filter_fn_once():
    calls = []
    cfg = BayesConfig(
        filter_fn=lambda m, n: calls.append(n) or True,
        overrides={"fc": {"prior_scale": 0.2}, "f*": {"prior_scale": 0.5, "n_mc": 7}},
    )
    resolved, reason = cfg.resolve_layer("fc", nn.Linear(2, 2))
    assert reason == "" and calls == ["fc"]
    assert (resolved.prior_scale, resolved.n_mc) == (0.2, 7)  # the exact name last, after the patterns
    assert cfg.for_layer("fc", nn.Linear(2, 2)) == resolved


def test_as_type_counts_for_layer_types():
    """A weight fed to F.linear / matmul counts as nn.Linear (nn.MultiheadAttention's in_proj_weight)."""
    cfg = BayesConfig(layer_types=["Linear"])
    attn = nn.MultiheadAttention(4, 2)
    assert cfg.resolve_layer("attn", attn)[0] is None
    assert cfg.resolve_layer("attn", attn, as_type=nn.Linear)[0] is not None
    assert cfg.resolve_layer("attn")[0] is not None  # no module, no type check (for_layer("name"))


def test_layer_types_names_come_from_the_nn_table():
    tables = [*autobayes.nn.DEFAULT_MAPPINGS, *autobayes.nn.ATTRIBUTE_LAYERS]
    assert supported_layer_types() == {t.__name__: t for t in tables}
    assert BayesConfig(layer_types=["Conv2d", nn.Linear]).layer_types == (nn.Conv2d, nn.Linear)
    with pytest.raises(UnknownNameError, match="Did you mean 'ConvTranspose2d'"):
        BayesConfig(layer_types=["ConvTranspose2D"])


def test_the_layer_table_is_read_live(monkeypatch):
    """A type added to DEFAULT_MAPPINGS after import is accepted, as when config read the table itself."""

    class Bilinear(nn.Bilinear):
        pass

    monkeypatch.setitem(autobayes.nn.DEFAULT_MAPPINGS, nn.Bilinear, autobayes.BayesLinear)
    assert BayesConfig(layer_types=["Bilinear"]).layer_types == (nn.Bilinear,)
    assert BayesConfig(layer_types=[Bilinear]).layer_types == (Bilinear,)
    register_layer_table(autobayes.nn.DEFAULT_MAPPINGS)  # registering twice lists it once
    assert list(supported_layer_types()).count("Bilinear") == 1


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(n_mc=0), ConfigError, "n_mc must be an integer >= 1"),
        (dict(n_mc=2.5), ConfigError, "n_mc must be an integer >= 1"),
        (dict(n_mc="10"), ConfigError, "n_mc must be an integer >= 1"),
        (dict(n_mc=True), ConfigError, "n_mc must be an integer >= 1"),
        (dict(posterior="gausian"), UnknownNameError, "Did you mean 'gaussian'"),
        (dict(prior="norml"), UnknownNameError, "Did you mean 'normal'"),
        (dict(kl="repr"), UnknownNameError, "Did you mean 'repar'"),
        (dict(forward="locl"), UnknownNameError, "Did you mean 'local'"),
        (dict(prior_scale=0), ConfigError, "prior_scale must be a finite number > 0"),
        (dict(prior_loc="weight"), ConfigError, "prior_loc must be a float or 'weights'"),
        (dict(init_log_var=(-1, -2)), ConfigError, "low <= high"),
        (dict(init_scale=-1.0), ConfigError, "init_scale must be a finite number > 0"),
        (dict(moped_delta=float("nan")), ConfigError, "moped_delta must be a finite number"),
        (dict(layer_types=["Conv2D"]), UnknownNameError, "Did you mean 'Conv2d'"),
        (dict(overrides={"fc": {"n_mcc": 3}}), UnknownNameError, "Did you mean 'n_mc'"),
        (dict(overrides={"fc": {"n_mc": -3}}), ConfigError, "n_mc must be an integer >= 1"),
        (dict(nmc=3), UnknownNameError, "Did you mean 'n_mc'"),
    ],
)
def test_bad_options_name_the_problem(options, error, message):
    with pytest.raises(error, match=message):
        BayesConfig.make(**options)


def test_config_for_layer_precedence_and_round_trip():
    cfg = BayesConfig(
        exclude=("features.0",),
        overrides={"classifier.*": {"prior_scale": 0.1}, "classifier.2": {"n_mc": 7}, "aux.*": None},
    )
    assert cfg.for_layer("features.0") is None
    assert cfg.for_layer("aux.fc") is None
    head = cfg.for_layer("classifier.2")
    assert (head.prior_scale, head.n_mc) == (0.1, 7)
    assert cfg.for_layer("classifier.1").n_mc is None  # the family's own default (100, or K for rank-1)
    assert BayesConfig(include=("fc",)).for_layer("conv1") is None
    assert BayesConfig(layer_types=("Linear",)).for_layer("conv1", nn.Conv2d(1, 1, 1)) is None
    assert BayesConfig(filter_fn=lambda m, n: n != "x").for_layer("x", nn.Linear(1, 1)) is None
    assert BayesConfig.from_dict(cfg.to_dict()) == cfg


def test_bad_prior_kwargs_fail_when_the_config_is_built():
    with pytest.raises(ConfigError, match="Did you mean 'df'"):
        BayesConfig(prior="student_t", prior_kwargs={"dff": 3})
