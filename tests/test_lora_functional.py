"""LoRA on weights a forward reads itself (``bayesify(model, adapter="lora")``, on the fx, swap and export
routes): a weight parametrization.

A user module calling ``F.linear(x, self.weight)`` (found by the recording run on ``example_inputs``), an
``nn.MultiheadAttention`` (its ``in_proj_weight`` and its ``out_proj``, both read by its own forward) and a
``Linear`` subclass with its own forward get ``W + (alpha / r) * B @ A`` on the weight. Checked: the output at
initialisation (B = 0) equals the pretrained model's exactly, and with B set by hand it equals the functional
forward computed with ``W + scaling * B @ A`` by hand (float rounding only: atol 1e-5 on O(1) outputs); only the
adapter posteriors train; the filters select the weights; ``merge_adapters`` and ``save`` / ``load`` reproduce
the posterior-mean outputs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

import autobayes
from autobayes import ConfigError
from autobayes.adapters.parametrized import LoRADelta

pytestmark = pytest.mark.usefixtures("one_thread")


class FunctionalLinear(nn.Module):
    """Reads its weight in its own forward, as many research codebases do."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(d_out, d_in) / d_in ** 0.5)

    def forward(self, x):
        return F.linear(torch.tanh(x), self.weight)


class ScaledLinear(nn.Linear):
    """A Linear subclass whose forward is not the affine map: wrapping its output would be wrong."""

    def forward(self, x):
        return F.linear(x, 2.0 * self.weight, self.bias)


class Net(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.proj = FunctionalLinear(6, d)
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.scaled = ScaledLinear(d, d)
        self.head = nn.Linear(d, 3)

    def forward(self, x):
        h = self.proj(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.head(self.scaled(h))


def make_net() -> Net:
    torch.manual_seed(0)
    return Net()


X = torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(1))
WEIGHTS = ["attn.in_proj_weight", "attn.out_proj.weight", "proj.weight", "scaled.weight"]


def by_hand(model: Net, deltas: dict) -> torch.Tensor:
    """The forward of ``model`` with each weight ``W`` of ``deltas`` replaced by ``W + delta`` (functional)."""
    params = {k: v + deltas[k] if k in deltas else v for k, v in model.named_parameters()}
    return torch.func.functional_call(model, params, (X,))


def adapted(bnn) -> dict:
    """``{weight name: its LoRADelta}``."""
    return {name.replace(".parametrizations", "").rpartition(".")[0]: m for name, m in bnn.named_modules()
            if isinstance(m, LoRADelta)}


def set_b(bnn, seed: int = 2) -> dict:
    """Give every B a non-zero mean; returns ``{weight name: scaling * B_mu @ A_mu}``."""
    g = torch.Generator().manual_seed(seed)
    deltas = {}
    with torch.no_grad():
        for name, delta in adapted(bnn).items():
            b = delta.lora_B_posterior.mu
            b.copy_(torch.randn(b.shape, generator=g) * 0.3)
            deltas[name] = delta.scaling * b @ delta.lora_A_posterior.mu
    return deltas


@pytest.mark.parametrize("mode", ["fx", "swap", "export"])
def test_weights_read_functionally_are_adapted(mode):
    model = make_net()
    bnn = autobayes.bayesify(model, adapter="lora", rank=2, alpha=4, mode=mode, example_inputs=(X,),
                             posterior="gaussian")
    assert bnn.bayes_report.mode == mode and sorted(adapted(bnn)) == WEIGHTS
    assert not any(isinstance(m, autobayes.LoRALinear) for n, m in bnn.named_modules() if n != "head")
    assert isinstance(bnn.head, autobayes.LoRALinear)  # a plain nn.Linear is still wrapped
    report = bnn.bayes_report
    assert report.get("attn.parametrizations.in_proj_weight.0").reason == (
        "LoRA A and B of 'attn.in_proj_weight' (a weight parametrization)")
    # only the adapters' posteriors train; the base weights are frozen
    trainable = sorted(n for n, p in bnn.named_parameters() if p.requires_grad)
    assert all(".lora_A_posterior." in n or ".lora_B_posterior." in n for n in trainable if not n.startswith("head."))
    assert sorted(n for n in trainable if n.startswith("head.")) == [
        f"head.lora_{m}.weight_posterior.{p}" for m in "AB" for p in ("log_var", "mu")]
    assert len(trainable) == 2 * 2 * 5  # (A, B) x (mu, log_var) x 5 adapted weights (4 here + head's)
    with torch.no_grad(), autobayes.use_mean(bnn):  # B = 0: exactly the pretrained model
        torch.testing.assert_close(bnn(X).output, model(X), atol=0, rtol=0)
    deltas = set_b(bnn)
    deltas["head.weight"] = torch.zeros(3, 8)
    with torch.no_grad(), autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(X).output, by_hand(model, deltas), atol=1e-5, rtol=0)
    out = bnn(X)  # sampled: a different output, a positive KL, gradients to the adapters
    (out.output.square().mean() + out.kl).backward()
    assert out.kl.item() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in bnn.named_parameters() if p.requires_grad)
    assert all(p.grad is None for n, p in bnn.named_parameters() if not p.requires_grad)


def test_filters_select_the_weights():
    bnn = autobayes.bayesify(make_net(), adapter="lora", rank=2, include=["attn"], example_inputs=(X,))
    assert sorted(adapted(bnn)) == ["attn.in_proj_weight"]
    bnn = autobayes.bayesify(make_net(), adapter="lora", rank=2, exclude=["attn*", "head"], example_inputs=(X,))
    assert sorted(adapted(bnn)) == ["proj.weight", "scaled.weight"]
    assert not any(isinstance(m, autobayes.LoRALinear) for m in bnn.modules())
    assert "matched by exclude" in bnn.bayes_report.get("attn.out_proj").reason
    bnn = autobayes.bayesify(make_net(), adapter="lora", rank=2, filter_fn=lambda m, name: name == "scaled")
    assert sorted(adapted(bnn)) == ["scaled.weight"]
    with pytest.raises(ConfigError, match="no linear layer of Net was selected"):
        autobayes.bayesify(make_net(), adapter="lora", include=["nothing*"])


def test_without_example_inputs_the_tables_still_apply():
    """Without a recording run, ``proj`` (found only by running it) is not adapted; the others are."""
    bnn = autobayes.bayesify(make_net(), adapter="lora", rank=2)
    assert sorted(adapted(bnn)) == ["attn.in_proj_weight", "attn.out_proj.weight", "scaled.weight"]


def test_conv_weight_read_functionally_is_skipped_with_a_reason():
    class FunctionalConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(4, 3, 3, 3))

        def forward(self, x):
            return F.conv2d(x, self.weight)

    model = nn.Sequential(FunctionalConv(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    bnn = autobayes.bayesify(model, adapter="lora", rank=2, example_inputs=(torch.randn(1, 3, 6, 6),))
    assert not adapted(bnn)
    assert "4-d weight 'weight' (a convolution's)" in bnn.bayes_report.get("0").reason


def test_merge_folds_the_parametrizations():
    model = make_net()
    bnn = autobayes.bayesify(model, adapter="lora", rank=2, alpha=4, example_inputs=(X,), posterior="gaussian")
    deltas = set_b(bnn)
    merged = autobayes.merge_adapters(bnn)
    assert type(merged) is Net and type(merged.attn) is nn.MultiheadAttention and type(merged.scaled) is ScaledLinear
    assert not any(parametrize.is_parametrized(m) for m in merged.modules())
    assert sorted(n for n, _ in merged.named_parameters()) == sorted(n for n, _ in model.named_parameters())
    with torch.no_grad(), autobayes.use_mean(bnn):
        torch.testing.assert_close(merged(X), bnn(X).output, atol=1e-5, rtol=0)
    params = dict(merged.named_parameters())
    for name, delta in deltas.items():  # each weight is exactly W + scaling * B_mu @ A_mu
        torch.testing.assert_close(params[name].detach(), dict(model.named_parameters())[name] + delta)
    assert adapted(bnn)  # bnn itself untouched


def test_save_load_round_trip(tmp_path):
    bnn = autobayes.bayesify(make_net(), adapter="lora", rank=2, alpha=4, posterior="gaussian")
    set_b(bnn)
    path = autobayes.save(bnn, tmp_path / "lora.safetensors", arch={"arch": "test_lora_functional:make_net"})
    loaded = autobayes.load(path)
    bnn.eval(), loaded.eval()  # the same mode (nn.MultiheadAttention's eval fast path rounds differently)
    assert loaded.state_dict().keys() == bnn.state_dict().keys()
    assert all(torch.equal(v, bnn.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert sorted(adapted(loaded)) == sorted(adapted(bnn))
    with torch.no_grad(), autobayes.use_mean(bnn), autobayes.use_mean(loaded):
        torch.testing.assert_close(loaded(X).output, bnn(X).output, atol=0, rtol=0)
