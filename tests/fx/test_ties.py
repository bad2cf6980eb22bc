"""Tied tensors (issue 14, item 3): a tensor shared by several modules is one random variable on every route --
one posterior read by all its owners, one draw per forward, its KL counted once -- or deterministic in all of
them (``BayesConfig(tied="deterministic")``); never silently untied. Before, the head of a tied language model
became a ``BayesLinear`` holding a copy of the embedding (the embedding trained on its own), and RoBERTa's
``lm_head.bias`` got no gradient."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import autobayes
from autobayes import BayesConfig, UnknownNameError
from autobayes.fx.runtime import kl_units, total_kl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _nets import pickle_roundtrip  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, WIDTH = 11, 8
MODES = ["fx", "swap"]


class TiedLM(nn.Module):
    """The head shares its weight with the input embedding (``self.head.weight = self.emb.weight``)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, WIDTH)
        self.body = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, ids):
        return self.head(torch.tanh(self.body(self.emb(ids))))


def _convert(mode, **options):
    torch.manual_seed(0)
    return autobayes.bayesify(TiedLM(), mode=mode, posterior="gaussian", kl="closed", **options)


def _weights_seen(bnn, ids):
    """The embedding matrix the embedding used and the one the head used, from their inputs and outputs."""
    seen = {}
    hooks = [bnn.emb.register_forward_hook(lambda m, a, out: seen.__setitem__("emb", out)),
             bnn.head.register_forward_hook(lambda m, a, out: seen.__setitem__("head", (a[0], out)))]
    bnn(ids)
    for h in hooks:
        h.remove()
    w_emb = seen["emb"][0]  # ids = arange(VOCAB): row i is the embedding of token i
    h_in, h_out = seen["head"]
    w_head = torch.linalg.lstsq(h_in[0], h_out[0]).solution.T  # h_out = h_in @ W^T, h_in full column rank
    return w_emb, w_head


@pytest.mark.parametrize("mode", MODES)
def test_tie_is_one_posterior_with_one_draw_per_forward(mode):
    bnn = _convert(mode)
    assert bnn.bayes_report.mode == mode
    assert bnn.emb.weight_posterior is bnn.head.weight_posterior
    [tie] = bnn.bayes_report.ties
    assert tie.names == ["emb.weight", "head.weight"] and tie.decision == "shared"
    assert "tie: emb.weight = head.weight" in str(bnn.bayes_report)
    ids = torch.arange(VOCAB).unsqueeze(0)
    with torch.no_grad():
        e1, h1 = _weights_seen(bnn, ids)
        e2, h2 = _weights_seen(bnn, ids)
    # both owners see the same sample in one forward (lstsq recovers it to ~1e-5), a new one in the next
    torch.testing.assert_close(h1, e1, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(h2, e2, atol=1e-4, rtol=1e-4)
    assert (e1 - e2).abs().max() > 1e-3
    assert not torch.equal(e1, bnn.emb.weight_posterior.mu)  # a sample, not the mean


@pytest.mark.parametrize("mode", MODES)
def test_tied_kl_counts_once(mode):
    bnn = _convert(mode)
    assert len([u for u in kl_units(bnn).values() if u is bnn.emb.weight_posterior]) == 1
    kl = bnn(torch.randint(0, VOCAB, (2, 5))).kl
    torch.testing.assert_close(kl, bnn.body.kl() + bnn.emb.weight_posterior.kl())
    torch.testing.assert_close(kl, total_kl(*kl_units(bnn).values()))


@pytest.mark.parametrize("mode", MODES)
def test_training_step_and_state_dict_keep_the_tie(mode):
    bnn = _convert(mode)
    mu = bnn.emb.weight_posterior.mu
    assert sum(p is mu for p in bnn.parameters()) == 1
    before = mu.detach().clone()
    opt = torch.optim.SGD(bnn.parameters(), lr=0.1)
    out, kl = bnn(torch.randint(0, VOCAB, (4, 5)))
    (out.logsumexp(-1).mean() + kl / 100).backward()
    opt.step()
    assert bnn.emb.weight_posterior is bnn.head.weight_posterior and not torch.equal(mu, before)
    state = bnn.state_dict()
    assert {"emb.weight_posterior.mu", "head.weight_posterior.mu"} <= set(state)  # both keys, as the model had
    fresh = _convert(mode)
    fresh.load_state_dict(state)
    assert fresh.emb.weight_posterior is fresh.head.weight_posterior
    x = torch.randint(0, VOCAB, (2, 5))
    with autobayes.use_mean(bnn), autobayes.use_mean(fresh):
        torch.testing.assert_close(fresh(x).output, bnn(x).output)
    for clone in (pickle_roundtrip(bnn), copy.deepcopy(bnn)):
        assert clone.emb.weight_posterior is clone.head.weight_posterior


@pytest.mark.parametrize("mode", MODES)
def test_tied_deterministic_keeps_every_owner_deterministic(mode):
    bnn = _convert(mode, tied="deterministic")
    assert isinstance(bnn.emb.weight, nn.Parameter) and bnn.emb.weight is bnn.head.weight
    assert "weight_posterior" not in bnn.head._modules and "weight_posterior" not in bnn.emb._modules
    assert hasattr(bnn.body, "weight_posterior")  # untied layers are converted as usual
    [tie] = bnn.bayes_report.ties
    assert tie.decision == "deterministic" and "tied='deterministic'" in tie.reason
    assert bnn.bayes_report.get("head").status == "skipped"
    out, kl = bnn(torch.randint(0, VOCAB, (2, 5)))
    torch.testing.assert_close(kl, bnn.body.kl())


def test_selection_rule_any_owner_selected_none_excluded():
    included = _convert("fx", include=["head"])  # the embedding is the same tensor: Bayesian too
    assert included.emb.weight_posterior is included.head.weight_posterior
    assert not hasattr(included.body, "weight_posterior")
    excluded = _convert("fx", exclude=["emb"])  # an owner explicitly excluded: the tie stays deterministic
    assert excluded.emb.weight is excluded.head.weight
    assert "exclude pattern 'emb'" in excluded.bayes_report.ties[0].reason
    nulled = _convert("swap", overrides={"head": None})
    assert nulled.emb.weight is nulled.head.weight


def test_fx_route_keeps_the_tied_head_a_module_call():
    bnn = _convert("fx")
    assert "self.head(" in bnn.code and "self.emb(" in bnn.code


def test_tied_option_is_validated_and_serialised():
    with pytest.raises(UnknownNameError, match="deterministic"):
        BayesConfig(tied="determinstic")
    cfg = BayesConfig(tied="deterministic")
    assert BayesConfig.from_dict(cfg.to_dict()).tied == "deterministic"
    assert BayesConfig().tied == "shared"


def test_roberta_tied_bias_gets_a_gradient():
    transformers = pytest.importorskip("transformers")
    config = transformers.RobertaConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=37, max_position_embeddings=64)
    model = transformers.RobertaForMaskedLM(config)
    assert model.lm_head.bias is model.lm_head.decoder.bias
    bnn = autobayes.bayesify(model, mode="swap")
    assert bnn.lm_head.bias_posterior is bnn.lm_head.decoder.bias_posterior
    assert {("lm_head.bias", "lm_head.decoder.bias"), ("roberta.embeddings.word_embeddings.weight",
            "lm_head.decoder.weight")} == {tuple(t.names) for t in bnn.bayes_report.ties}
    out, kl = bnn(torch.randint(3, 99, (2, 7)))
    (out.logits.logsumexp(-1).mean() + kl / 1000).backward()
    missing = [n for n, p in bnn.named_parameters() if p.grad is None]
    assert not missing, missing
    assert bnn.lm_head.bias_posterior.mu.grad.abs().sum() > 0


def test_tied_model_compiles_as_one_graph():
    """The draw scope of a converted forward is visible to torch.compile (no graph break, no failing guard;
    before, a guard on the scope's thread-local attribute failed under fullgraph=True)."""
    torch._dynamo.reset()  # every converted root runs one forward code object: other tests' compiles count
    bnn = _convert("swap")  # towards its recompile limit, which fullgraph=True turns into an error
    compiled = torch.compile(bnn, backend="aot_eager", fullgraph=True)
    x = torch.randint(0, VOCAB, (2, 5))
    with autobayes.use_mean(bnn):
        torch.testing.assert_close(compiled(x).output, bnn(x).output)
    out, kl = compiled(x)
    torch.testing.assert_close(kl, bnn(x).kl)
