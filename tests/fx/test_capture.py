"""The capture route (``mode="export"``, autobayes.fx.capture*): torch.export of a forward torch.fx cannot trace,
rewritten to sample posteriors and thread the KL; dynamic shapes, train / eval graphs, one draw per posterior,
optional ``None`` arguments, state dicts, copies, torch.compile, and small Hugging Face models (BERT, GPT-2 from
random configs, nothing downloaded)."""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import autobayes
from autobayes.errors import ConfigError
from autobayes.fx.capture_root import CAPTURED, captured_entries
from autobayes.fx.runtime import kl_of, kl_units

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _nets import pickle_roundtrip  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


class _Shaped(nn.Module):
    """torch.fx cannot trace it (a branch on ``x.dim()``); torch.export can. ``w`` is a raw parameter read by two
    matmuls (one random variable: one draw per forward); ``mask`` an optional argument defaulting to ``None``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 16)
        self.w = nn.Parameter(torch.randn(16, 4) / 4)
        self.drop = nn.Dropout(0.5)
        self.norm = nn.LayerNorm(16)

    def forward(self, x, mask=None):
        if x.dim() == 3:
            x = x.flatten(0, 1)
        h = self.drop(torch.relu(self.norm(self.fc(x))))
        if mask is not None:
            h = h * mask
        return {"out": h @ self.w, "gate": torch.sigmoid(h @ self.w).mean(-1)}


def _convert(model=None, **options):
    torch.manual_seed(0)
    model = model or _Shaped()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnn = autobayes.bayesify(model, example_inputs=(torch.randn(5, 6),), posterior="gaussian", kl="closed",
                                 init_scale=0.05, **options)
    return model, bnn, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def shaped():
    return _convert()


def test_auto_falls_back_to_export_and_says_why(shaped):
    _, bnn, messages = shaped
    report = bnn.bayes_report
    assert report.mode == "export"
    assert any(n.startswith("fx route not taken") for n in report.notes), report.notes
    assert not [m for m in messages if "falls back" in m], messages  # a graph route: the notes say why, no warning
    assert report.get("").how == "functional" and report.get("").params == ["w"]  # the matmul weight, found
    assert report.get("fc").how == "layer"
    assert report.get("fc").used and report.get("").used


def test_export_needs_example_inputs_and_auto_skips_it_without_them():
    with pytest.raises(ConfigError, match="example_inputs"):
        autobayes.bayesify(_Shaped(), mode="export")
    with pytest.warns(UserWarning, match=r"falls back to mode='swap'.*mode='export' was not taken"):
        bnn = autobayes.bayesify(_Shaped())
    assert bnn.bayes_report.mode == "swap"


def test_output_type_kl_each_unit_once_and_one_draw_per_posterior(shaped):
    _, bnn, _ = shaped
    calls = []
    handle = bnn.w_posterior.register_forward_hook(lambda m, a, out: calls.append(out))
    try:
        out, kl = bnn(torch.randn(5, 6))
    finally:
        handle.remove()
    assert isinstance(out, dict) and out["out"].shape == (5, 4)
    assert len(calls) == 1  # w is read by two matmuls: one draw
    expected = sum(kl_of(u) for u in kl_units(bnn).values())  # closed form: deterministic, exact
    torch.testing.assert_close(kl, expected)
    assert set(kl_units(bnn)) == {"fc", "w_posterior"}
    with autobayes.kl_disabled(bnn):
        assert bnn(torch.randn(5, 6)).kl.item() == 0.0


def test_use_mean_matches_the_deterministic_model_and_train_eval_graphs_differ(shaped):
    model, bnn, _ = shaped
    model.eval(), bnn.eval()
    x = torch.randn(3, 6)
    with autobayes.use_mean(bnn):
        ev = bnn(x).output
        torch.testing.assert_close(ev["out"], model(x)["out"], atol=1e-5, rtol=0)
        bnn.train()
        torch.manual_seed(1)
        tr = bnn(x).output["out"]  # dropout active in the train graph
    assert not torch.allclose(tr, ev["out"])
    assert {key[0] for key in bnn.__dict__[CAPTURED]} == {True, False}


def test_new_batch_size_and_length_without_a_new_capture_and_every_parameter_gets_a_gradient(shaped):
    _, bnn, _ = shaped
    bnn.train()
    bnn(torch.randn(5, 6))
    n = len(captured_entries(bnn))
    for shape in [(9, 6), (2, 7, 6)]:  # a new batch size; a new rank is a new structure (the x.dim() branch)
        bnn.zero_grad()
        out, kl = bnn(torch.randn(*shape))
        assert out["out"].shape == (shape[0] * (shape[1] if len(shape) == 3 else 1), 4)
        (out["out"].square().mean() + out["gate"].mean() + kl).backward()
        missing = [name for name, p in bnn.named_parameters() if p.grad is None]
        assert not missing, missing
    assert len(captured_entries(bnn)) == n + 1


def test_optional_none_argument_is_captured_as_none_and_a_given_one_separately(shaped):
    model, bnn, _ = shaped
    model.eval(), bnn.eval()
    x, mask = torch.randn(4, 6), (torch.rand(4, 16) > 0.5).float()
    with autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(x).output["out"], model(x)["out"], atol=1e-5, rtol=0)
        torch.testing.assert_close(bnn(x, mask=mask).output["out"], model(x, mask=mask)["out"], atol=1e-5, rtol=0)
        torch.testing.assert_close(bnn(x, mask).output["out"], model(x, mask)["out"], atol=1e-5, rtol=0)


def test_state_dict_copies_and_pickles(shaped):
    model, bnn, _ = shaped
    bnn.eval()
    x = torch.randn(3, 6)
    keys = set(bnn.state_dict())
    assert not [k for k in keys if "_autobayes" in k], keys  # lifted constants / graphs never in the state dict
    _, other, _ = _convert(_Shaped())
    other.load_state_dict(bnn.state_dict())
    other.eval()
    with autobayes.use_mean(bnn), autobayes.use_mean(other):
        expected = bnn(x).output["out"]
        torch.testing.assert_close(other(x).output["out"], expected)
        for clone in (copy.deepcopy(bnn), pickle_roundtrip(bnn)):
            assert CAPTURED not in clone.__dict__ or not clone.__dict__[CAPTURED]  # recaptured lazily
            clone.eval()
            with autobayes.use_mean(clone):
                torch.testing.assert_close(clone(x).output["out"], expected)
            assert clone.bayes_report.mode == "export" and captured_entries(clone)


def test_state_dict_keys_equal_swap_mode_for_the_same_layers():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)

        def forward(self, x):
            if x.dim() == 2:
                x = torch.relu(self.a(x))
            return self.b(x)

    x = torch.randn(3, 4)
    exported = autobayes.bayesify(Plain(), mode="export", example_inputs=(x,))
    swapped = autobayes.bayesify(Plain(), mode="swap")
    assert list(exported.state_dict()) == list(swapped.state_dict())


def test_torch_compile_of_the_converted_model(shaped):
    _, bnn, _ = shaped
    bnn.eval()
    x = torch.randn(4, 6)
    with autobayes.use_mean(bnn):
        expected = bnn(x).output["out"]
        compiled = torch.compile(bnn, backend="aot_eager")
        out, kl = compiled(x)
    torch.testing.assert_close(out["out"], expected)
    assert kl.item() > 0


def test_a_posterior_under_two_owners_is_one_draw_and_one_kl():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Module(), nn.Module()
            self.a.w = nn.Parameter(torch.randn(6, 6) / 3)
            self.b.w = nn.Parameter(torch.randn(6, 6) / 3)

        def forward(self, x):
            if x.dim() == 2:
                x = x @ self.a.w
            return torch.tanh(x) @ self.b.w

    x = torch.randn(3, 6)
    bnn = autobayes.bayesify(Pair(), mode="export", example_inputs=(x,), posterior="radial", kl="closed")
    shared = bnn.a.w_posterior
    bnn.b._modules["w_posterior"] = shared  # a tie, as the tie-keeping conversion makes it
    bnn.__dict__[CAPTURED] = {}
    bnn(x)  # recaptured: torch.export reads the shared tensor through one name
    calls = []
    shared.register_forward_hook(lambda m, a, out: calls.append(out))
    out, kl = bnn(x)
    assert len(calls) == 1
    torch.testing.assert_close(kl, kl_of(shared))
    with autobayes.use_mean(bnn):
        w = shared.mu
        torch.testing.assert_close(bnn(x).output, torch.tanh(x @ w) @ w)


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face transformers, from small random configs (marked slow: two captures each, ~10 s on a busy CPU)
# ---------------------------------------------------------------------------------------------------------------
def _hf(name):
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    if name == "bert":
        config = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=37)
        return transformers.BertForSequenceClassification(config)
    config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return transformers.GPT2LMHeadModel(config)


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def hf(request):
    model = _hf(request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bnn = autobayes.bayesify(model, posterior="gaussian", init_scale=0.05)
    return request.param, model, bnn


@pytest.mark.slow
def test_hf_model_converts_by_export_and_keeps_its_output_type(hf):
    name, model, bnn = hf
    assert bnn.bayes_report.mode == "export"
    assert any("autobayes.hf.example_inputs" in n for n in bnn.bayes_report.notes)
    bnn.eval(), model.eval()
    ids = torch.randint(4, 99, (3, 11))  # a new batch size and sequence length (captured with 2 x 8)
    with autobayes.use_mean(bnn):
        out, kl = bnn(input_ids=ids)
    assert type(out) is type(model(input_ids=ids))
    torch.testing.assert_close(out.logits, model(input_ids=ids).logits, atol=1e-5, rtol=0)
    assert kl.item() > 0
    if name == "gpt2":  # transformers' Conv1D reads its weight with addmm: found by the analysis
        assert bnn.bayes_report.get("transformer.h.0.attn.c_attn").how == "functional"


@pytest.mark.slow
def test_hf_model_trains_at_a_new_size_with_every_parameter_getting_a_gradient(hf):
    _, _, bnn = hf
    bnn.train()
    bnn.zero_grad()
    ids = torch.randint(4, 99, (3, 13))
    out, kl = bnn(input_ids=ids, attention_mask=torch.ones_like(ids))
    (out.logits.square().mean() + kl * 1e-6).backward()
    missing = [n for n, p in bnn.named_parameters() if p.grad is None]
    assert not missing, missing


def test_an_input_structure_that_cannot_be_captured_runs_eagerly_after_one_warning():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x, flag=None):
            if x.dim() == 2 and flag is not None and float(flag.sum()) > 0:  # data-dependent: no capture
                return self.b(x)
            return self.b(torch.relu(self.a(x)))

    x = torch.randn(3, 4)
    bnn = autobayes.bayesify(Branchy(), mode="export", example_inputs=(x,), posterior="radial", kl="closed")
    with pytest.warns(UserWarning, match="runs its own forward for inputs of this structure"):
        out, kl = bnn(x, torch.ones(1))
    torch.testing.assert_close(kl, kl_of(bnn.b))  # only the layer the forward called
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per structure
        out, kl = bnn(x, torch.ones(1))
        (out.sum() + kl).backward()
        torch.testing.assert_close(bnn(x).kl, kl_of(bnn.a) + kl_of(bnn.b))  # the captured structure still runs
    assert bnn.b.weight_posterior.mu.grad is not None


@pytest.mark.slow
def test_hf_state_dict_round_trip_and_deepcopy_recapture(hf):
    name, model, bnn = hf
    keys = list(bnn.state_dict())
    assert not [k for k in keys if "_autobayes" in k]  # GPT-2's lifted constants stay out of the state dict
    if name == "bert":  # no functionally used weights: the same module tree as swap mode
        assert keys == list(autobayes.bayesify(model, mode="swap", posterior="gaussian").state_dict())
    clone = copy.deepcopy(bnn)
    with torch.no_grad():
        for p in clone.parameters():
            p.add_(0.5)
    clone.load_state_dict(bnn.state_dict())
    bnn.eval(), clone.eval()
    ids = torch.randint(4, 99, (2, 6))
    with autobayes.use_mean(bnn), autobayes.use_mean(clone):
        torch.testing.assert_close(clone(input_ids=ids).output.logits, bnn(input_ids=ids).output.logits)


def test_a_layer_whose_forward_is_more_than_its_op_samples_its_posteriors_instead_of_being_called():
    class Convs(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")  # F.pad, then the convolution
            self.d = nn.Conv2d(4, 2, 3)

        def forward(self, x):
            if x.dim() == 4:
                x = self.d(self.c(x))
            return x.mean((2, 3))

    model, x = Convs().eval(), torch.randn(2, 3, 8, 8)
    bnn = autobayes.bayesify(model, mode="export", example_inputs=(x,), posterior="radial", kl="closed").eval()
    assert "self.c.weight_posterior()" in bnn.code and "self.d(" in bnn.code  # c is not called: it would pad twice
    with autobayes.use_mean(bnn):
        out, kl = bnn(x)
    torch.testing.assert_close(out, model(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(kl, kl_of(bnn.c) + kl_of(bnn.d))


def test_a_size_one_dimension_gets_its_own_specialised_capture(shaped):
    model, bnn, _ = shaped
    model.eval(), bnn.eval()
    x = torch.randn(1, 6)  # torch.export specialises sizes 0 and 1: the dynamic graph (sizes >= 2) is not used
    with autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(x).output["out"], model(x)["out"], atol=1e-5, rtol=0)
        torch.testing.assert_close(bnn(torch.randn(4, 6)).output["out"].shape, torch.Size([4, 4]))
    assert any(e.fixed == {(0, 0): 1} for e in captured_entries(bnn))


def test_ever_new_non_tensor_values_stop_being_captured_after_a_bound(monkeypatch):
    from autobayes.fx import capture_root

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x, scale=1.0):
            if x.dim() == 2:
                x = self.fc(x) * scale  # a Python float: each value is a new structure
            return x

    monkeypatch.setattr(capture_root, "MAX_CAPTURES", 3)
    x = torch.randn(2, 3)
    bnn = autobayes.bayesify(Scaled(), mode="export", example_inputs=(x,), posterior="radial", kl="closed")  # train + eval (the check)
    bnn(x, scale=0.5)  # the third capture
    with pytest.warns(UserWarning, match="captured for 3 input structures"):
        out, kl = bnn(x, scale=0.25)
    torch.testing.assert_close(kl, kl_of(bnn.fc))
    torch.testing.assert_close(bnn(x, scale=0.25).output.shape, torch.Size([2, 3]))  # eager, no second warning
    assert len(captured_entries(bnn)) == 3


def make_shaped() -> nn.Module:
    """The architecture factory ``autobayes.load`` rebuilds :class:`_Shaped` with (``test_capture:make_shaped``)."""
    torch.manual_seed(1)
    return _Shaped()


def test_a_checkpoint_of_an_export_route_model_loads_by_capturing_again(tmp_path, monkeypatch):
    # load has no example inputs of its own: the checkpoint records the shapes and dtypes the model was captured on
    # (it failed with "mode='export' captures the forward on example inputs, and none were given")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    _, bnn, _ = _convert(make_shaped())
    path = tmp_path / "shaped.safetensors"
    autobayes.save(bnn, path, arch={"arch": "test_capture:make_shaped"})
    loaded = autobayes.load(path)
    assert loaded.bayes_report.mode == "export"
    x = torch.randn(7, 6)
    with autobayes.use_mean(bnn), autobayes.use_mean(loaded):
        bnn.eval()
        torch.testing.assert_close(loaded(x).output["out"], bnn(x).output["out"])
