"""Tests of :func:`autobayes.bayesify` and its companions (fast; the model zoo is in test_zoo.py)."""

from __future__ import annotations

import copy
import io
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autobayes
from autobayes import BayesConfig, ConfigError, UnknownNameError, UntraceableModelError
from autobayes.nn import BayesConv2d, BayesLayer, BayesLinear, BayesParameter

sys.path.insert(0, str(Path(__file__).parent))
from _zoo_check import check_conversion  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        return self.fc(self.drop(self.features(x).flatten(1)))


class Shared(nn.Module):
    """One layer called twice, and registered under two names."""

    def __init__(self):
        super().__init__()
        self.block = nn.Linear(6, 6)
        self.alias = self.block
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.alias(torch.relu(self.block(x))))


class Functional(nn.Module):
    """Weights used functionally, next to parameters and buffers that must stay deterministic."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 4) * 0.1)
        self.b = nn.Parameter(torch.zeros(8))
        self.gamma = nn.Parameter(torch.ones(8))  # layer scale: multiplies activations
        self.pos = nn.Parameter(torch.zeros(1, 4))  # added to activations
        self.kernel = nn.Parameter(torch.randn(3, 3, 3, 3) * 0.1)
        self.register_buffer("blur", torch.ones(3, 1, 3, 3) / 9)  # blur-pool kernel: a buffer

    def forward(self, x, img):
        h = F.linear(x + self.pos, self.w * 1.0, self.b) * self.gamma
        k = self.kernel - self.kernel.mean(dim=(1, 2, 3), keepdim=True)  # weight standardisation
        y = F.conv2d(F.conv2d(img, self.blur, padding=1, groups=3), k, padding=1)
        return {"h": h, "y": (y, y.mean())}


class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return x
        return -x


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.gate = Gate()
        self.fc2 = nn.Linear(4, 3)
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc2(self.gate(self.fc1(x)))


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


def test_output_is_named_tuple_and_samples_in_eval_mode():
    bnn = autobayes.bayesify(SmallCNN())
    x = torch.randn(2, 3, 8, 8)
    bnn.eval()
    res = bnn(x)
    assert isinstance(res, autobayes.BayesOutput) and res.output.shape == (2, 5) and res.kl.dim() == 0
    assert not torch.equal(bnn(x).output, bnn(x).output)  # MC prediction works in eval mode
    with autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(x).output, bnn(x).output)


def test_shared_layer_kl_counted_once():
    bnn = autobayes.bayesify(Shared(), posterior="gaussian", kl="closed")
    assert bnn.block is bnn.alias and isinstance(bnn.block, BayesLinear)
    out, kl = bnn(torch.randn(3, 6))
    torch.testing.assert_close(kl, bnn.block.kl() + bnn.head.kl())
    swapped = autobayes.bayesify(Shared(), mode="swap", posterior="gaussian", kl="closed")
    _, kl = swapped(torch.randn(3, 6))
    torch.testing.assert_close(kl, swapped.block.kl() + swapped.head.kl())


def test_functional_weights():
    model = Functional()
    x, img = torch.randn(2, 4), torch.randn(2, 3, 6, 6)
    bnn = check_conversion(model, x, img, posterior="gaussian", kl="closed")
    assert isinstance(bnn.w_posterior, BayesParameter) and isinstance(bnn.b_posterior, BayesParameter)
    assert isinstance(bnn.kernel_posterior, BayesParameter)
    params = dict(bnn.named_parameters())
    for kept in ("gamma", "pos"):
        assert kept in params  # layer scale and position embedding stay deterministic
    assert "blur" in dict(bnn.named_buffers())
    assert "w" not in params and not any("blur_posterior" in n for n, _ in bnn.named_modules())
    out, kl = bnn(x, img)
    torch.testing.assert_close(kl, bnn.w_posterior.kl() + bnn.b_posterior.kl() + bnn.kernel_posterior.kl())
    assert bnn.w.shape == (8, 4)  # the attribute now returns a posterior sample
    rec = bnn.bayes_report.get("")
    assert rec is not None and rec.how == "functional"


def test_linear_subclass_with_own_forward_keeps_behaviour():
    class ScaledLinear(nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight * 2.0, self.bias)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = ScaledLinear(4, 4)
            self.b = nn.Linear(4, 2)

        def forward(self, x):
            return self.b(self.a(x))

    bnn = check_conversion(Net(), torch.randn(3, 4))
    assert isinstance(bnn.a, ScaledLinear) and isinstance(bnn.a.weight_posterior, BayesParameter)
    assert bnn.bayes_report.get("a").how == "attribute"


def test_multihead_attention_is_bayesian():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    bnn = check_conversion(Attn(), torch.randn(2, 3, 8))
    assert isinstance(bnn.mha.in_proj_weight_posterior, BayesParameter)
    assert isinstance(bnn.mha.out_proj.weight_posterior, BayesParameter)


# ---------------------------------------------------------------------------------------------------------------
# untraceable models
# ---------------------------------------------------------------------------------------------------------------
def test_untraceable_falls_back_to_swap_with_warning():
    with pytest.warns(UserWarning, match=r"'gate' \(Gate\).*mode='swap'"):
        bnn = autobayes.bayesify(Untraceable(), posterior="gaussian", kl="closed")
    assert bnn.bayes_report.mode == "swap"
    x = torch.randn(2, 4)
    out, kl = bnn(x)
    torch.testing.assert_close(kl, bnn.fc1.kl() + bnn.fc2.kl())  # the unused layer is not counted
    with autobayes.kl_disabled(bnn):
        assert bnn(x).kl.item() == 0.0
    (out.sum() + kl).backward()
    assert bnn.fc1.weight_posterior.mu.grad is not None
    bnn.eval()
    model = Untraceable().eval()
    bnn2 = autobayes.bayesify(model, mode="swap").eval()
    with autobayes.use_mean(bnn2):
        torch.testing.assert_close(bnn2(x).output, model(x))
    clone = pickle_roundtrip(bnn)
    torch.testing.assert_close(clone(x).kl, bnn(x).kl)


def test_untraceable_fx_mode_error_names_module_and_fixes():
    with pytest.raises(UntraceableModelError) as info:
        autobayes.bayesify(Untraceable(), mode="fx")
    msg = str(info.value)
    assert "'gate' (Gate)" in msg and "x.sum() > 0" in msg
    assert "leaf_modules=[" in msg and "mode='swap'" in msg and "inspect_model" in msg


def test_leaf_modules_option_makes_untraceable_model_traceable():
    bnn = autobayes.bayesify(Untraceable(), mode="fx", leaf_modules=[Gate])
    assert bnn.bayes_report.mode == "fx"
    assert bnn.bayes_report.get("unused").used is False


def test_example_inputs_catch_wrong_branch():
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, mask=None):
            if mask is not None:
                x = x * mask
            return self.fc(x)

    x = torch.randn(2, 4)
    with pytest.raises(UntraceableModelError, match="concrete_args"):
        autobayes.bayesify(Masked(), mode="fx", example_inputs=(x,))
    bnn = autobayes.bayesify(Masked(), mode="fx", concrete_args={"mask": None}, example_inputs=(x,))
    assert bnn(x).output.shape == (2, 4)
    with pytest.warns(UserWarning, match="falling back"):
        bnn = autobayes.bayesify(Masked(), example_inputs=(x,))
    assert bnn.bayes_report.mode == "swap"


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
    bnn = autobayes.bayesify(model, moped_delta=0.1, prior_loc="weights")
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
# context managers, modes
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


def test_train_only_branch():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(4, 4)
            self.aux = nn.Linear(4, 2)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            h = self.body(x)
            if self.training:
                return self.head(h), self.aux(h)
            return self.head(h)

    model = Aux().eval()  # traced in its current mode *and* in the other one
    bnn = autobayes.bayesify(model, posterior="gaussian", kl="closed")
    x = torch.randn(2, 4)
    _, kl_eval = bnn(x)
    torch.testing.assert_close(kl_eval, bnn.body.kl() + bnn.head.kl())
    bnn.train()
    (out, aux), kl_train = bnn(x)
    torch.testing.assert_close(kl_train, bnn.body.kl() + bnn.head.kl() + bnn.aux.kl())


# ---------------------------------------------------------------------------------------------------------------
# copies, state dicts, serialisation, devices, compile, DataParallel
# ---------------------------------------------------------------------------------------------------------------
def pickle_roundtrip(module):
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _same_mean_output(a, b, *args):
    a.eval()
    b.eval()
    with torch.no_grad(), autobayes.use_mean(a), autobayes.use_mean(b):
        torch.testing.assert_close(a(*args).output, b(*args).output)
        torch.testing.assert_close(a(*args).kl, b(*args).kl)


@pytest.mark.parametrize("mode", ["fx", "swap"])
def test_deepcopy_state_dict_and_pickle(mode):
    bnn = autobayes.bayesify(SmallCNN(), mode=mode, posterior="gaussian", filter_fn=lambda m, n: True)
    x = torch.randn(2, 3, 8, 8)
    _same_mean_output(bnn, copy.deepcopy(bnn), x)
    fresh = autobayes.bayesify(SmallCNN(), mode=mode, posterior="gaussian")
    fresh.load_state_dict(bnn.state_dict())
    _same_mean_output(bnn, fresh, x)
    clone = pickle_roundtrip(bnn)
    assert type(clone).__name__ == type(bnn).__name__
    _same_mean_output(bnn, clone, x)
    functional = autobayes.bayesify(Functional())
    xs = (torch.randn(2, 4), torch.randn(2, 3, 6, 6))
    clone = pickle_roundtrip(functional)
    functional.eval(), clone.eval()
    with autobayes.use_mean(functional), autobayes.use_mean(clone):
        torch.testing.assert_close(clone(*xs).output["h"], functional(*xs).output["h"])


def test_to_dtype():
    bnn = autobayes.bayesify(SmallCNN()).to(torch.float64)
    out, kl = bnn(torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert out.dtype == torch.float64 and kl.dtype == torch.float64


def test_torch_compile_small_model():

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2 = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            return self.l2(torch.relu(self.l1(x)))

    bnn = autobayes.bayesify(MLP(), posterior="gaussian").eval()
    x = torch.randn(3, 4)
    compiled = torch.compile(bnn, backend="aot_eager")  # dynamo + AOT autograd; inductor: test below (slow)
    with autobayes.use_mean(bnn):
        out, kl = compiled(x)
        ref, ref_kl = bnn(x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(kl, ref_kl)
    out, kl = compiled(x)
    (out.sum() + kl).backward()
    assert bnn.l1.weight_posterior.log_var.grad is not None


@pytest.mark.slow
def test_torch_compile_inductor():
    bnn = autobayes.bayesify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    out, kl = torch.compile(bnn)(torch.randn(3, 4))
    (out.sum() + kl).backward()
    assert torch.isfinite(kl) and bnn[0].weight_posterior.mu.grad is not None


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
    assert d["n_converted"] == 1 and d["n_skipped"] == 1
    assert d["n_params_converted"] == 32 * 5 + 5
    assert d["n_params_total"] == sum(p.numel() for p in model.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = autobayes.inspect_model(Untraceable())
    assert report.mode == "swap" and any("gate" in n for n in report.notes)


# ---------------------------------------------------------------------------------------------------------------
# messages: the fallback hint names the model's own forward arguments; the report names a root layer
# ---------------------------------------------------------------------------------------------------------------
class GatedWithOptions(nn.Module):
    """Untraceable (``Gate``), with optional forward arguments a user could fix with ``concrete_args``."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.gate = Gate()

    def forward(self, x, mask=None, *, return_features: bool = False):
        h = self.gate(self.fc(x if mask is None else x * mask))
        return (h, h) if return_features else h


def _fallback_warning(model) -> str:
    with pytest.warns(UserWarning, match="falls back to mode='swap'") as record:
        autobayes.bayesify(model)
    return " ".join(str(w.message) for w in record if "falls back" in str(w.message))


def test_fallback_hint_suggests_concrete_args_with_the_forwards_own_arguments():
    message = _fallback_warning(GatedWithOptions())
    assert "concrete_args={'mask': None, 'return_features': False}" in message, message
    assert "flag" not in message
    with pytest.raises(UntraceableModelError) as info:
        autobayes.bayesify(GatedWithOptions(), mode="fx")
    assert "concrete_args={'mask': None, 'return_features': False}" in str(info.value)


def test_fallback_hint_omits_concrete_args_when_the_forward_takes_only_its_input():
    message = _fallback_warning(Untraceable())  # forward(self, x): fixing x would fix the data
    assert "concrete_args" not in message and "flag" not in message, message
    assert "leaf_modules=[" in message  # the fix that does apply is still offered


def test_fallback_hint_is_generic_when_the_forward_takes_kwargs():
    class Kwargs(Untraceable):
        def forward(self, x, **options):
            return super().forward(x)

    message = _fallback_warning(Kwargs())
    assert "concrete_args={'<argument name>': <value>}" in message and "flag" not in message, message


def test_report_names_a_converted_root_module_instead_of_root_placeholder():
    text = str(autobayes.bayesify(nn.Linear(4, 2)).bayes_report)
    assert "<root>" not in text
    assert "(the model itself)  Linear" in text, text
