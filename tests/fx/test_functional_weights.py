"""Swap mode converts every weight matrix the forward uses (issue 14, item 2): transformers' ``Conv1D`` (GPT-2's
matrices, used through ``torch.addmm``: 23% of GPT-2's matrix weights were Bayesian before), the weights of
``nn.MultiheadAttention``, and raw parameters a forward feeds to ``matmul`` / ``einsum`` / ``F.linear``, found by
a recording run on example inputs. Every read is a posterior sample; the KL of each parameter counts once."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autobayes
from autobayes.fx.runtime import kl_units, total_kl
from autobayes.fx.swap import record_functional_weights

pytestmark = pytest.mark.usefixtures("one_thread")


class RawWeights(nn.Module):
    """Weights held as raw parameters: ``w`` through ``.t()`` then ``@``, ``v`` through einsum, ``lin`` through
    ``F.linear``; ``gain`` is used elementwise (not a weight) and must stay deterministic."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4) / 2)
        self.v = nn.Parameter(torch.randn(6, 5) / 2)
        self.lin = nn.Parameter(torch.randn(3, 5) / 2)
        self.gain = nn.Parameter(torch.ones(5))

    def forward(self, x):
        h = torch.tanh(x @ self.w.t())
        h = torch.einsum("bi,ij->bj", h, self.v) * self.gain
        return F.linear(h, self.lin)


def test_recording_run_finds_parameters_fed_to_weight_ops():
    x = torch.randn(3, 4)
    found = record_functional_weights(RawWeights(), ((x,), {}))
    assert set(found[""]) == {"w", "v", "lin"}
    assert record_functional_weights(RawWeights(), None) == {}


def test_swap_mode_converts_raw_weights_found_by_the_recording_run():
    torch.manual_seed(0)
    model, x = RawWeights(), torch.randn(3, 4)
    bnn = autobayes.bayesify(model, mode="swap", example_inputs=(x,), posterior="gaussian", kl="closed")
    for name in ("w", "v", "lin"):
        assert hasattr(bnn, name + "_posterior"), name
    assert isinstance(bnn.gain, nn.Parameter)
    assert bnn(x).output.shape == (3, 3)
    assert not torch.equal(bnn(x).output, bnn(x).output)  # every read is a sample
    bnn.eval()
    with autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(x).output, model(x))
    kl = bnn(x).kl
    torch.testing.assert_close(kl, sum(getattr(bnn, n + "_posterior").kl() for n in ("w", "v", "lin")))


def _gpt2():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    torch.manual_seed(0)
    return transformers, transformers.GPT2LMHeadModel(config).eval()


def test_gpt2_conv1d_converted_in_swap_mode():
    transformers, model = _gpt2()
    from transformers.pytorch_utils import Conv1D

    bnn = autobayes.bayesify(model, mode="swap", posterior="gaussian", kl="closed")
    matrices = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D))]
    total = sum(model.get_submodule(n).weight.numel() for n in matrices)
    bayes = sum(model.get_submodule(n).weight.numel() for n in matrices
                if "weight_posterior" in bnn.get_submodule(n)._modules)
    assert bayes / total >= 0.9, (bayes, total)
    assert bnn.bayes_report.get("transformer.h.0.attn.c_attn").how == "attribute"

    ids = torch.randint(0, 99, (2, 7))
    with autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(ids).output.logits, model(ids).logits)
    out, kl = bnn(ids)
    assert isinstance(out, transformers.modeling_outputs.CausalLMOutputWithCrossAttentions)
    torch.testing.assert_close(kl, total_kl(*kl_units(bnn).values()))  # each parameter once
    out2 = bnn(torch.randint(0, 99, (3, 11))).output  # another batch size and sequence length
    (out.logits.logsumexp(-1).mean() + out2.logits.logsumexp(-1).mean() + kl / 1000).backward()
    missing = [n for n, p in bnn.named_parameters() if p.grad is None]
    assert not missing, missing
    assert bnn.transformer.wte.weight_posterior is bnn.lm_head.weight_posterior  # the tie is kept


def test_multihead_attention_in_proj_weight_is_a_posterior_in_swap_mode():
    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    torch.manual_seed(0)
    model, x = Attn(), torch.randn(2, 3, 8)
    bnn = autobayes.bayesify(model, mode="swap", example_inputs=(x,))
    assert "in_proj_weight_posterior" in bnn.attn._modules and "weight_posterior" in bnn.attn.out_proj._modules
    bnn.eval()
    model.eval()
    with autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(x).output, model(x))


class Table(nn.Module):
    """A raw embedding table (no nn.Embedding: that type is opt-in, see ``layer_types``)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(11, 8))

    def forward(self, ids):
        return F.embedding(ids, self.weight)


class ReadTwice(nn.Module):
    """The embedding matrix is read by the lookup and by the output matmul (a tie within one module)."""

    def __init__(self):
        super().__init__()
        self.emb = Table()
        self.body = nn.Linear(8, 8)

    def forward(self, ids):
        return torch.tanh(self.body(self.emb(ids))) @ self.emb.weight.t()


@pytest.mark.parametrize("mode", ["fx", "swap"])
def test_a_weight_read_twice_is_one_draw_and_one_kl(mode):
    torch.manual_seed(0)
    ids = torch.arange(11).unsqueeze(0)
    bnn = autobayes.bayesify(ReadTwice(), mode=mode, example_inputs=(ids,), posterior="gaussian", kl="closed")
    assert "weight_posterior" in bnn.emb._modules
    seen = {}
    bnn.body.register_forward_hook(lambda m, a, out: seen.update(w=a[0][0], h=out))  # ids = arange: the matrix
    with torch.no_grad():
        out, kl = bnn(ids)
    torch.testing.assert_close(out, torch.tanh(seen["h"]) @ seen["w"].t())  # the matmul read the lookup's draw
    assert not torch.equal(seen["w"], bnn.emb.weight_posterior.mu)
    torch.testing.assert_close(kl, bnn.body.kl() + bnn.emb.weight_posterior.kl())
