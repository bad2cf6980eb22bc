"""autobayes.api: :func:`autobayes.bayesify` on small models (the contract, layer selection, option checks),
``use_mean`` / ``kl_disabled``, train / eval, dtype and DataParallel, and :func:`autobayes.inspect_model`.
How the graph route and the swap route convert is tested in tests/fx/; the model zoo in test_zoo.py."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import autobayes
from autobayes import BayesConfig, ConfigError, UnknownNameError
from autobayes.nn import BayesConv2d, BayesLayer, BayesLinear, BayesParameter

sys.path.insert(0, str(Path(__file__).parent))
from _nets import SmallCNN, Untraceable  # noqa: E402
from _zoo_check import check_conversion  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def posterior_params(bnn):
    return [m for m in bnn.modules() if isinstance(m, BayesParameter)]


# ---------------------------------------------------------------------------------------------------------------
# the contract on small models
# ---------------------------------------------------------------------------------------------------------------
def test_plain_model_contract():
    model = SmallCNN()
    model.autobayes_arch = {"name": "small_cnn"}
    bnn = check_conversion(model, torch.randn(2, 3, 8, 8))
    assert isinstance(bnn.features[0], BayesConv2d) and isinstance(bnn.fc, BayesLinear)
    assert bnn.autobayes_arch == {"name": "small_cnn"}
    assert isinstance(bnn, SmallCNN) and isinstance(bnn.bayes_config, BayesConfig)
    keys = set(bnn.state_dict())
    assert {"features.1.weight", "features.1.running_mean", "features.0.weight_posterior.mu",
            "features.0.weight_posterior.log_var", "fc.bias_posterior.mu"} <= keys
    assert "features.0.weight" not in keys
    assert not any(isinstance(m, BayesLayer) for m in model.modules())  # input untouched


# ---------------------------------------------------------------------------------------------------------------
# selection: filters and overrides
# ---------------------------------------------------------------------------------------------------------------
def bayesian_names(bnn):
    return sorted(r.name for r in bnn.bayes_report.converted)


def test_head_only_and_exclude_and_overrides():
    assert bayesian_names(autobayes.bayesify(SmallCNN(), include=["fc"])) == ["fc"]
    assert bayesian_names(autobayes.bayesify(SmallCNN(), exclude=["features.*"])) == ["fc"]
    assert bayesian_names(autobayes.bayesify(SmallCNN(), overrides={"fc": None})) == ["features.0"]
    assert bayesian_names(autobayes.bayesify(SmallCNN(), layer_types=["Linear"])) == ["fc"]
    assert bayesian_names(autobayes.bayesify(SmallCNN(), filter_fn=lambda m, n: isinstance(m, nn.Conv2d))) == ["features.0"]
    bnn = autobayes.bayesify(SmallCNN(), overrides={"fc": {"prior_scale": 0.1}})
    assert float(bnn.fc.weight_posterior.prior.scale.flatten()[0]) == pytest.approx(0.1)
    rec = autobayes.bayesify(SmallCNN(), include=["fc"]).bayes_report.get("features.0")
    assert rec.status == "skipped" and "include" in rec.reason
    x = torch.randn(2, 3, 8, 8)
    check_conversion(SmallCNN(), x, include=["fc"])


def test_options_reach_the_layers():
    bnn = autobayes.bayesify(SmallCNN(), posterior="gaussian", kl="repar", n_mc=7, init_scale=0.01)
    wp = bnn.fc.weight_posterior
    assert wp.posterior.name == "gaussian" and wp.kl_method == "repar" and wp.n_mc == 7
    torch.testing.assert_close(wp.scale, torch.full_like(wp.scale, 0.01))
    model = SmallCNN()
    bnn = autobayes.bayesify(model, posterior="radial", moped_delta=0.1, prior_loc="weights")
    torch.testing.assert_close(bnn.fc.weight_posterior.std, (0.1 * model.fc.weight.abs()).clamp_min(1e-8))
    cfg = BayesConfig(posterior="gaussian")
    assert autobayes.bayesify(SmallCNN(), cfg, n_mc=3).bayes_config.n_mc == 3


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"posterior": "gausian"}, UnknownNameError, "Did you mean 'gaussian'"),
        ({"kl": "closd"}, UnknownNameError, "Did you mean 'closed'"),
        ({"forward": "smaple"}, UnknownNameError, "Did you mean 'sample'"),
        ({"prior": "normall"}, UnknownNameError, "Did you mean 'normal'"),
        ({"n_mc": 0}, ConfigError, "n_mc"),
        ({"prior_scale": -1.0}, ConfigError, "prior_scale"),
        ({"prior_loc": "weight"}, ConfigError, "prior_loc"),
        ({"init_scale": 0.0}, ConfigError, "init_scale"),
        ({"moped_delta": -0.1}, ConfigError, "moped_delta"),
        ({"init_log_var": (1.0, -1.0)}, ConfigError, "init_log_var"),
        ({"mc_chunk_size": 0}, ConfigError, "mc_chunk_size"),
        ({"layer_types": ["Linaer"]}, UnknownNameError, "Did you mean 'Linear'"),
        ({"include": [3]}, ConfigError, "include"),
        ({"exclude": [None]}, ConfigError, "exclude"),
        ({"filter_fn": 3}, ConfigError, "filter_fn"),
        ({"overrides": {"fc": {"n_mcc": 3}}}, UnknownNameError, "Did you mean 'n_mc'"),
        ({"overrides": {"fc": 3}}, ConfigError, "overrides"),
        ({"posteriour": "radial"}, UnknownNameError, "Did you mean 'posterior'"),
        ({"mode": "fxx"}, ConfigError, "Did you mean 'fx'"),
        ({"inplace": "yes"}, ConfigError, "inplace"),
        ({"leaf_modules": ["Gate"]}, ConfigError, "leaf_modules"),
        ({"autowrap_functions": [3]}, ConfigError, "autowrap_functions"),
        ({"concrete_args": [None]}, ConfigError, "concrete_args"),
        ({"example_inputs": 3}, ConfigError, "example_inputs"),
    ],
)
def test_bad_option_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        autobayes.bayesify(SmallCNN(), **kwargs)


def test_bad_model_and_double_conversion():
    with pytest.raises(ConfigError, match="nn.Module"):
        autobayes.bayesify(lambda x: x)
    with pytest.raises(ConfigError, match="already"):
        autobayes.bayesify(autobayes.bayesify(SmallCNN()))


# ---------------------------------------------------------------------------------------------------------------
# context managers, modes, devices, DataParallel
# ---------------------------------------------------------------------------------------------------------------
def test_use_mean_nested_and_kl_disabled():
    bnn = autobayes.bayesify(SmallCNN())
    with autobayes.use_mean(bnn):
        with autobayes.use_mean(bnn):
            assert all(p.use_mean for p in posterior_params(bnn))
        assert all(p.use_mean for p in posterior_params(bnn))
        with autobayes.use_mean(bnn, False):
            assert not any(p.use_mean for p in posterior_params(bnn))
    assert not any(p.use_mean for p in posterior_params(bnn))
    x = torch.randn(2, 3, 8, 8)
    with autobayes.kl_disabled(bnn):
        with autobayes.kl_disabled(bnn):
            assert bnn(x).kl.item() == 0.0
        assert bnn(x).kl.item() == 0.0
    assert bnn(x).kl.item() > 0


def test_train_eval_keep_their_meaning():
    bnn = autobayes.bayesify(SmallCNN())
    x = torch.randn(4, 3, 8, 8)
    before = bnn.features[1].running_mean.clone()
    bnn.eval()
    with autobayes.use_mean(bnn):
        a, b = bnn(x).output, bnn(x).output
    torch.testing.assert_close(a, b)  # dropout off, BN frozen
    assert torch.equal(bnn.features[1].running_mean, before)
    bnn.train()
    bnn(x)
    assert not torch.equal(bnn.features[1].running_mean, before)


def test_to_dtype():
    bnn = autobayes.bayesify(SmallCNN()).to(torch.float64)
    out, kl = bnn(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64 and kl.dtype == torch.float64


def test_data_parallel_wrapper():
    bnn = autobayes.bayesify(SmallCNN())
    dp = nn.DataParallel(bnn)  # on CPU-only machines it runs the module directly
    out, kl = dp(torch.randn(2, 3, 8, 8))
    assert out.shape == (2, 5) and torch.isfinite(kl).all()
    with autobayes.kl_disabled(dp), autobayes.use_mean(dp):
        assert float(dp(torch.randn(2, 3, 8, 8)).kl.sum()) == 0.0


# ---------------------------------------------------------------------------------------------------------------
# inspect_model
# ---------------------------------------------------------------------------------------------------------------
def test_inspect_model_report():
    model = SmallCNN()
    report = autobayes.inspect_model(model, include=["fc"])
    assert not any(isinstance(m, BayesLayer) for m in model.modules())
    text = str(report)
    assert "fc" in text and "features.0" in text and "skipped" in text and "include" in text
    d = report.to_dict()
    assert d["n_converted"] == 1 and d["n_skipped"] == 2  # features.0 (include), features.1 (BatchNorm2d: opt-in)
    assert "BatchNorm2d is opt-in" in text
    assert d["n_params_converted"] == 32 * 5 + 5
    assert d["n_params_total"] == sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = autobayes.inspect_model(Untraceable())
    assert report.mode == "swap" and any("gate" in n for n in report.notes)
