"""Bayesian LSTM / GRU / RNN against their deterministic twins: exact in ``mean`` mode for every option, one weight
draw per forward shared by every time step, KL by every estimator, gradients, and end-to-end conversions.

Statistical comparisons use fixed seeds and tolerances from the standard error (SE): a Monte Carlo KL estimate
averaged over n independent layers' draws must lie within 4 SE of the closed form (two-sided 4 sigma: a correct
estimator fails with probability ~6e-5).
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import autobayes
from autobayes import BayesConfig, BayesGRU, BayesLSTM, BayesRNN
from autobayes.kl import closed_kl

pytestmark = pytest.mark.usefixtures("one_thread")

# (Bayesian type, deterministic type, options): every option of the twins, each at a non-default value somewhere.
CASES = [
    (BayesLSTM, nn.LSTM, dict()),
    (BayesLSTM, nn.LSTM, dict(num_layers=2, bidirectional=True, batch_first=True, proj_size=3)),
    (BayesLSTM, nn.LSTM, dict(num_layers=2, bias=False, dropout=0.3)),
    (BayesGRU, nn.GRU, dict(num_layers=2, bidirectional=True)),
    (BayesGRU, nn.GRU, dict(bias=False, batch_first=True)),
    (BayesRNN, nn.RNN, dict(nonlinearity="relu", num_layers=3, dropout=0.2)),
    (BayesRNN, nn.RNN, dict(bidirectional=True, batch_first=True)),
]
IN, HID, T, B = 5, 6, 7, 4


def _ids(case):
    return case[0].__name__ + "-" + "-".join(f"{k}={v}" for k, v in case[2].items())


def _pair(case, posterior="gaussian", **cfg):
    _, det_cls, kwargs = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dropout with one layer
        det = det_cls(IN, HID, **kwargs)
    bayes = case[0].from_deterministic(det, BayesConfig(posterior=posterior, **cfg))
    return det, bayes


def _h0(det, batch=B):
    """A random initial state of the right shape (``(h, c)`` for an LSTM)."""
    layers = det.num_layers * (2 if det.bidirectional else 1)
    h = torch.randn(layers, batch, det.proj_size or det.hidden_size if isinstance(det, nn.LSTM) else det.hidden_size)
    return (h, torch.randn(layers, batch, det.hidden_size)) if isinstance(det, nn.LSTM) else h


def _inputs(det):
    """(input, hx) pairs: batched, unbatched, with an initial state, packed (unsorted lengths) with a state."""
    x = torch.randn(B, T, IN) if det.batch_first else torch.randn(T, B, IN)
    lengths = torch.tensor([3, T, 1, 5])
    padded = torch.randn(B, T, IN) if det.batch_first else torch.randn(T, B, IN)
    packed = pack_padded_sequence(padded, lengths, batch_first=det.batch_first, enforce_sorted=False)
    unbatched_h0 = _h0(det, 1)
    unbatched_h0 = tuple(h[:, 0] for h in unbatched_h0) if isinstance(unbatched_h0, tuple) else unbatched_h0[:, 0]
    return [(x, None), (torch.randn(T, IN), None), (torch.randn(T, IN), unbatched_h0), (x, _h0(det)),
            (packed, None), (packed, _h0(det))]


def _flat(out):
    """Every tensor of an RNN's output (packed data padded back), for exact comparison."""
    output, hidden = out
    if isinstance(output, torch.nn.utils.rnn.PackedSequence):
        output = pad_packed_sequence(output)[0]
    return [output, *(hidden if isinstance(hidden, tuple) else (hidden,))]


def _assert_equal(a, b):
    for x, y in zip(_flat(a), _flat(b), strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
@pytest.mark.parametrize("posterior", ["gaussian", "radial"])
def test_mean_mode_equals_the_twin_exactly_for_every_input_kind(case, posterior):
    torch.manual_seed(0)
    det, bayes = _pair(case, posterior)
    det.eval(), bayes.eval()  # dropout between layers is random in training
    with autobayes.use_mean(bayes):
        for x, hx in _inputs(det):
            _assert_equal(bayes(x, hx), det(x, hx))
    _assert_equal(bayes.to_deterministic()(x, hx), det(x, hx))
    # gradients too: backward through the means equals backward through the twin's parameters
    x, hx = _inputs(det)[3]
    with autobayes.use_mean(bayes):
        sum(t.sum() for t in _flat(bayes(x, hx))).backward()
    sum(t.sum() for t in _flat(det(x, hx))).backward()
    for name, p in zip(det._flat_weights_names, bayes.posteriors()):
        assert torch.allclose(p.mu.grad, getattr(det, name).grad, atol=1e-6), name


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_one_draw_per_forward_is_shared_by_every_time_step(case):
    """A seeded forward equals the deterministic layer holding the weights drawn from that seed: the same weights
    at every step (an independent draw per step could not equal any fixed-weight layer)."""
    det, bayes = _pair(case, init_scale=0.3)
    det.eval(), bayes.eval()
    for x, hx in _inputs(det):
        torch.manual_seed(1)
        out = bayes(x, hx)
        torch.manual_seed(1)
        drawn = [p.sample() for p in bayes.posteriors()]
        fixed = copy.deepcopy(det)
        with torch.no_grad():
            for name, w in zip(det._flat_weights_names, drawn):
                getattr(fixed, name).copy_(w)
        _assert_equal(out, fixed(x, hx))
        assert not torch.allclose(_flat(out)[0], _flat(det(x, hx))[0])  # it is a draw, not the mean
    assert not torch.equal(_flat(bayes(x, hx))[0], _flat(bayes(x, hx))[0])  # a new draw each forward


@pytest.mark.parametrize("forward", ["auto", "local", "sample"])
def test_local_and_auto_mean_sample_for_recurrent_layers(forward):
    layer = BayesLSTM(3, 4, config=BayesConfig(posterior="gaussian", forward=forward))
    assert layer.forward_mode == "sample" and not layer.per_example_noise
    assert BayesGRU(3, 4, config=BayesConfig(forward="mean")).forward_mode == "mean"


def test_state_dict_keys_follow_the_other_layers():
    layer = BayesLSTM(3, 4, proj_size=2, bidirectional=True, config=BayesConfig(posterior="radial"))
    keys = set(layer.state_dict())
    for name in nn.LSTM(3, 4, proj_size=2, bidirectional=True)._flat_weights_names:
        assert {f"{name}_posterior.mu", f"{name}_posterior.log_var"} <= keys
    assert not any(k.startswith("_runner") for k in keys)
    layer(torch.randn(5, 2, 3))
    assert all(w is None for w in layer.__dict__["_runner"]._flat_weights)  # a forward mutates no shared state
    clone = BayesLSTM(3, 4, proj_size=2, bidirectional=True, config=BayesConfig(posterior="radial"))
    clone.load_state_dict(layer.state_dict())
    x = torch.randn(5, 2, 3)
    with autobayes.use_mean(layer), autobayes.use_mean(clone):
        _assert_equal(layer(x), clone(x))
    assert torch.equal(layer.weight_hr_l0_reverse, layer.weight_hr_l0_reverse_posterior.mu)  # read-only view
    with pytest.raises(AttributeError, match="weight_ih_l0"):
        layer.weight


@pytest.mark.parametrize("posterior", ["gaussian", "radial"])
@pytest.mark.parametrize("method", ["repar", "direct"])
def test_monte_carlo_kl_is_unbiased_for_the_closed_form(posterior, method):
    """The layer's KL is the sum over its posteriors; its Monte Carlo estimates average to the closed form
    within 4 SE (n = 400 estimates, n_mc = 1 each)."""
    torch.manual_seed(0)
    layer = BayesGRU(2, 3, config=BayesConfig(posterior=posterior, kl=method, n_mc=1, prior_scale=0.5))
    closed = sum(closed_kl(p.posterior, p.prior, p.mu, p.scale) for p in layer.posteriors()).item()
    with torch.no_grad():
        draws = torch.tensor([layer.kl().item() for _ in range(400)], dtype=torch.float64)
    se = draws.std().item() / math.sqrt(len(draws))
    assert abs(draws.mean().item() - closed) <= 4 * se, (draws.mean().item(), closed, se)
    exact = BayesGRU.from_deterministic(layer.to_deterministic(), BayesConfig(posterior=posterior, kl="closed", prior_scale=0.5))
    exact.load_state_dict(layer.state_dict())
    assert torch.allclose(exact.kl(), torch.tensor(closed, dtype=torch.float32), rtol=1e-5)
    assert torch.allclose(exact.kl(), sum(p.kl() for p in exact.posteriors()))


def test_gradients_reach_every_posterior_parameter():
    torch.manual_seed(0)
    layer = BayesLSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2, config=BayesConfig(posterior="gaussian"))
    out, (h, c) = layer(torch.randn(6, 2, 3))
    (out.pow(2).sum() + c.sum() + layer.kl() * 1e-3).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


# --------------------------------------------------------------------------------------------------- end to end
class LanguageModel(nn.Module):
    def __init__(self, vocab=20, dim=8, hidden=16):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, batch_first=True, dropout=0.1)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        h, _ = self.lstm(self.embed(tokens))
        return self.head(h)


class GRUClassifier(nn.Module):
    """Variable-length sequences, packed in the forward."""

    def __init__(self, dim=4, hidden=8, classes=3):
        super().__init__()
        self.gru = nn.GRU(dim, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x, lengths):
        _, h = self.gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
        return self.head(torch.cat([h[0], h[1]], dim=-1))


def _train_step(bnn, inputs, target, loss_fn):
    opt = torch.optim.Adam(bnn.parameters(), lr=1e-2)
    before = {n: p.detach().clone() for n, p in bnn.named_parameters()}
    out, kl = bnn(*inputs)
    loss = loss_fn(out, target) + kl / 1000
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    return {n for n, p in bnn.named_parameters() if not torch.equal(p, before[n])}


@pytest.mark.parametrize("mode", ["fx", "swap"])
def test_lstm_language_model_end_to_end(mode):
    torch.manual_seed(0)
    model = LanguageModel()
    bnn = autobayes.bayesify(model, mode=mode, layer_types=["Linear", "LSTM", "Embedding"], posterior="gaussian")
    assert bnn.bayes_report.mode == mode
    assert {r.name: r.type for r in bnn.bayes_report.converted} == {"embed": "Embedding", "lstm": "LSTM", "head": "Linear"}
    tokens = torch.randint(0, 20, (3, 9))
    model.eval(), bnn.eval()
    with autobayes.use_mean(bnn):
        assert torch.equal(bnn(tokens).output, model(tokens))
    bnn.train()
    changed = _train_step(bnn, (tokens[:, :-1],), tokens[:, 1:],
                          lambda out, y: nn.functional.cross_entropy(out.reshape(-1, 20), y.reshape(-1)))
    assert changed == {n for n, _ in bnn.named_parameters()}  # every mu and log_var moved
    kl = bnn(tokens).kl
    assert torch.allclose(kl, sum(m.kl() for m in (bnn.embed, bnn.lstm, bnn.head)))


@pytest.mark.parametrize("mode, options, route", [
    ("auto", {}, "swap"),  # torch.fx cannot trace pack_padded_sequence: the documented fallback, with a warning
    ("swap", {}, "swap"),
    ("fx", {"autowrap_functions": [pack_padded_sequence]}, "fx"),  # or keep the packing out of the graph
])
def test_gru_classifier_with_packed_sequences_end_to_end(mode, options, route):
    torch.manual_seed(0)
    model = GRUClassifier()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bnn = autobayes.bayesify(model, mode=mode, posterior="gaussian", **options)
    assert bnn.bayes_report.mode == route
    assert (mode == "auto") == any("falls back to mode='swap'" in str(w.message) for w in caught)
    assert {r.name for r in bnn.bayes_report.converted} == {"gru", "head"}
    x, lengths, y = torch.randn(5, 6, 4), torch.tensor([6, 2, 4, 1, 3]), torch.tensor([0, 1, 2, 1, 0])
    with autobayes.use_mean(bnn):
        assert torch.allclose(bnn(x, lengths).output, model(x, lengths), atol=1e-6)
    changed = _train_step(bnn, (x, lengths), y, nn.functional.cross_entropy)
    assert changed == {n for n, _ in bnn.named_parameters()}


def test_recurrent_layers_are_on_by_default_and_follow_the_selection_options():
    model = LanguageModel()
    report = autobayes.inspect_model(model)
    assert {r.name for r in report.converted} == {"lstm", "head"}
    assert "layer_types=['Linear', 'Embedding']" in next(r.reason for r in report.skipped if r.name == "embed")
    bnn = autobayes.bayesify(model, exclude=["head"], overrides={"lstm": {"prior_scale": 0.1}})
    assert {r.name for r in bnn.bayes_report.converted} == {"lstm"}
    assert all(float(p.prior.scale) == pytest.approx(0.1) for p in bnn.lstm.posteriors())
    assert autobayes.inspect_model(model, layer_types=["GRU"], allow_deterministic=True).converted == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the cuDNN path)")
def test_cudnn_path_runs_sampled_weights_and_matches_the_twin_in_mean_mode():
    det = nn.LSTM(IN, HID, num_layers=2, bidirectional=True).cuda()
    bayes = BayesLSTM.from_deterministic(det, BayesConfig(posterior="gaussian")).cuda()
    x = torch.randn(T, B, IN, device="cuda")
    with autobayes.use_mean(bayes):
        for a, b in zip(_flat(bayes(x)), _flat(det(x))):
            assert torch.allclose(a, b, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "weights not contiguous" warning at every step
        out, _ = bayes(x)
    out.sum().backward()
    assert all(p.grad is not None for p in bayes.parameters())
