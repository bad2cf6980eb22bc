"""Bayesian low-rank adapters: autobayes' own (``bayesify(model, adapter="lora", ...)``) and PEFT's.

For a small pretrained-style transformer (random weights) with Bayesian adapters only: the variational
parameters are exactly 2x the adapters' parameters (``mu`` and ``log_var`` each), the base weights are
bit-identical after an optimiser step (AdamW with weight decay, which would move any parameter it is handed a
gradient for), every adapter posterior gets a gradient, and ``merge_adapters`` gives a deterministic model whose
outputs equal the Bayesian model's under ``use_mean`` (float rounding only: atol 1e-5 on O(1) logits).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autobayes
from autobayes import ConfigError, UnknownNameError

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------
class Block(nn.Module):
    """A pre-norm transformer block written with plain nn.Linear layers (torch.fx traces it)."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.attn_q, self.attn_k, self.attn_v, self.attn_out = (nn.Linear(d, d) for _ in range(4))
        self.norm2 = nn.LayerNorm(d)
        self.mlp_in, self.mlp_out = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.norm1(x)
        q, k, v = (f(h).view(b, t, self.heads, d // self.heads).transpose(1, 2) for f in (self.attn_q, self.attn_k, self.attn_v))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        x = x + self.attn_out(a)
        return x + self.mlp_out(F.gelu(self.mlp_in(self.norm2(x))))


class TinyTransformer(nn.Module):
    def __init__(self, vocab: int = 20, d: int = 16, n_classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.Sequential(Block(d), Block(d))
        self.head = nn.Linear(d, n_classes)

    def forward(self, tokens):
        return self.head(self.blocks(self.embed(tokens)).mean(1))


def tiny_bert():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=16, num_labels=3)
    return transformers.BertForSequenceClassification(cfg).eval()


def tiny_peft_bert():
    peft = pytest.importorskip("peft")
    return peft.get_peft_model(tiny_bert(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))


def tokens(n: int = 6, t: int = 5, vocab: int = 20) -> torch.Tensor:
    return torch.randint(0, vocab, (n, t), generator=torch.Generator().manual_seed(1))


def logits(out):
    return out.logits if hasattr(out, "logits") else out


def run(model, x):
    return model(input_ids=x) if "Bert" in type(model).__name__ or "Peft" in type(model).__name__ else model(x)


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
def frozen_state(bnn):
    """Every tensor of the state dict that is not a posterior's (base weights, norms, embeddings, buffers)."""
    return {k: v.detach().clone() for k, v in bnn.state_dict().items() if "_posterior." not in k}


def posteriors(bnn):
    return [m for m in bnn.modules() if isinstance(m, autobayes.BayesParameter)]


def train_step(bnn, x, y, lr=0.05):
    opt = torch.optim.AdamW(bnn.parameters(), lr=lr, weight_decay=0.1)
    bnn.train()
    out, kl = run(bnn, x)
    loss = F.cross_entropy(logits(out), y) + kl / 1000
    opt.zero_grad()
    loss.backward()
    opt.step()
    bnn.eval()


def check_adapter_model(bnn, adapter_param_count, x):
    """The properties every Bayesian-adapter model must have (see the module docstring)."""
    variational = sum(p.numel() for m in posteriors(bnn) for p in (m.mu, m.log_var))
    assert variational == 2 * adapter_param_count
    assert bnn.bayes_report.n_params_bayesian == 2 * adapter_param_count
    trainable = [n for n, p in bnn.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "_posterior." in n for n in trainable)

    before = frozen_state(bnn)
    mu_before = [m.mu.detach().clone() for m in posteriors(bnn)]
    y = torch.arange(len(x)) % 3
    train_step(bnn, x, y)
    for m in posteriors(bnn):  # gradients reached every adapter posterior (mu and log_var)
        for p in (m.mu, m.log_var):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    after = frozen_state(bnn)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before), "a base weight changed"
    assert all(not torch.equal(a, m.mu) for a, m in zip(mu_before, posteriors(bnn)))

    merged = autobayes.merge_adapters(bnn)
    assert not any(isinstance(m, (autobayes.BayesParameter, autobayes.BayesLayer, autobayes.LoRALinear))
                   for m in merged.modules())
    merged.eval()
    with torch.no_grad(), autobayes.use_mean(bnn):
        expected = logits(run(bnn, x).output)
        got = logits(run(merged, x))
        again = logits(run(bnn, x).output)
    assert torch.equal(expected, again)  # use_mean is deterministic
    assert expected.abs().max() > 0.01
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the adapters moved: the merged model differs from the base it started from
        assert not torch.allclose(logits(run(bnn, x).output), got)
    return merged


# ---------------------------------------------------------------------------------------------------------------
# autobayes' own adapters
# ---------------------------------------------------------------------------------------------------------------
def test_own_adapters_fx_route_tiny_transformer():
    torch.manual_seed(0)
    model = TinyTransformer()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    x = tokens()
    bnn = autobayes.bayesify(model, adapter="lora", rank=2, alpha=4, include=["*attn_*"], posterior="gaussian",
                             example_inputs=x)
    assert bnn.bayes_report.mode == "fx"
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())  # the input is untouched
    layers = [m for m in bnn.modules() if isinstance(m, autobayes.LoRALinear)]
    assert len(layers) == 8 and all(m.scaling == 2.0 for m in layers)
    n_adapter = sum(2 * (16 + 16) for _ in layers)  # A: 16 -> 2, B: 2 -> 16, no bias
    merged = check_adapter_model(bnn, n_adapter, x)
    assert type(merged) is TinyTransformer
    assert merged.state_dict().keys() == model.state_dict().keys()
    assert all(p.requires_grad for p in merged.parameters())


def test_own_adapters_on_hugging_face_bert():
    model = tiny_bert()
    x = tokens(vocab=30)
    bnn = autobayes.bayesify(model, adapter="lora", rank=4, alpha=8, include=["*attention.self.*"])
    assert bnn.bayes_report.mode == "export"  # captured with torch.export on autobayes.hf.example_inputs
    n_adapter = 2 * 3 * 4 * (16 + 16)  # 2 layers x (query, key, value) x rank 4 x (in + out)
    merged = check_adapter_model(bnn, n_adapter, x)
    assert type(merged) is type(model)


def test_report_says_only_adapters_are_bayesian():
    bnn = autobayes.bayesify(TinyTransformer(), adapter="lora", rank=2, include=["*attn_q"])
    report = bnn.bayes_report
    assert {r.name for r in report.converted} == {f"blocks.{i}.attn_q.lora_{p}" for i in (0, 1) for p in "AB"}
    base = report.get("blocks.0.attn_q.base_layer")
    assert base.status == "skipped" and "frozen base weight" in base.reason
    assert "no adapter" in report.get("head").reason and "frozen" in report.get("head").reason
    assert any("only the adapter matrices A / B are Bayesian" in n for n in report.notes)
    assert report.n_params_total == sum(p.numel() for p in bnn.parameters() if p.requires_grad is False) + 2 * 2 * 2 * 16
    assert report.n_params_deterministic == report.n_params_total - 2 * 2 * 2 * 16
    assert bnn.bayes_adapter == {"adapter": "lora", "rank": 2, "alpha": 2.0}
    assert "only the adapter matrices" in str(report)
    assert all(r.reason.startswith("LoRA") for r in report.converted)


def test_adapter_priors_are_centred_at_zero_and_overrides_follow():
    bnn = autobayes.bayesify(TinyTransformer(), adapter="lora", rank=2, include=["*attn_q"], prior_scale=0.5,
                             overrides={"blocks.1.*": {"prior_scale": 0.1}})
    p0 = bnn.blocks[0].attn_q.lora_A.weight_posterior.prior
    p1 = bnn.blocks[1].attn_q.lora_B.weight_posterior.prior
    assert float(p0.loc) == 0.0 and float(p0.scale) == 0.5 and float(p1.scale) == pytest.approx(0.1)
    assert torch.equal(bnn.blocks[0].attn_q.lora_B.weight_posterior.mu, torch.zeros(16, 2))  # B starts at zero


def test_inspect_model_shows_the_adapters_and_leaves_the_model_alone():
    model = TinyTransformer()
    report = autobayes.inspect_model(model, adapter="lora", rank=2, include=["head"])
    assert [r.name for r in report.converted] == ["head.lora_A", "head.lora_B"]
    assert not any(isinstance(m, autobayes.LoRALinear) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_save_load_round_trip(tmp_path):
    model = autobayes.build_model("fcnet", num_classes=3, num_features=6, hidden=(8,))
    bnn = autobayes.bayesify(model, adapter="lora", rank=2, alpha=4, include=["1"], posterior="gaussian")
    x = torch.randn(5, 6)
    train_step(bnn, x, torch.tensor([0, 1, 2, 0, 1]))
    path = autobayes.save(bnn, tmp_path / "lora.safetensors")
    info = autobayes.read_checkpoint_info(path)
    loaded = autobayes.load(path)  # safetensors tensors + JSON: nothing is unpickled
    assert loaded.bayes_adapter == bnn.bayes_adapter
    assert loaded.state_dict().keys() == bnn.state_dict().keys()
    assert all(torch.equal(v, bnn.state_dict()[k]) for k, v in loaded.state_dict().items())
    assert [r.name for r in loaded.bayes_report.converted] == ["1.lora_A", "1.lora_B"]
    assert not any(p.requires_grad for n, p in loaded.named_parameters() if "_posterior." not in n)
    with torch.no_grad(), autobayes.use_mean(bnn), autobayes.use_mean(loaded):
        torch.testing.assert_close(loaded(x).output, bnn(x).output, atol=0, rtol=0)
    assert info is not None


# ---------------------------------------------------------------------------------------------------------------
# PEFT-wrapped models
# ---------------------------------------------------------------------------------------------------------------
def test_peft_model_adapters_become_bayesian():
    pm = tiny_peft_bert()
    lora_params = sum(p.numel() for n, p in pm.named_parameters() if "lora_" in n)
    bnn = autobayes.bayesify(pm, mode="swap", posterior="gaussian")  # recognised without adapter="peft"
    assert bnn.bayes_adapter == {"adapter": "peft"}
    assert sorted(r.name.rsplit(".", 3)[-3] for r in bnn.bayes_report.converted) == ["query"] * 4 + ["value"] * 4
    merged = check_adapter_model(bnn, lora_params, tokens(vocab=30))
    assert type(merged).__name__ == "BertForSequenceClassification"
    assert not any("lora" in n for n, _ in merged.named_modules())


def test_peft_selection_and_state_dict_round_trip():
    pm = tiny_peft_bert()
    bnn = autobayes.bayesify(pm, mode="swap", adapter="peft", include=["*layer.0.*"])
    assert {r.name.split(".")[5] for r in bnn.bayes_report.converted} == {"0"}
    left = bnn.bayes_report.get("base_model.model.bert.encoder.layer.1.attention.self.query.lora_A.default")
    assert left.status == "skipped" and "adapter left deterministic" in left.reason
    train_step(bnn, tokens(vocab=30), torch.tensor([0, 1, 2, 0, 1, 2]))
    fresh = autobayes.bayesify(tiny_peft_bert(), mode="swap", adapter="peft", include=["*layer.0.*"])
    fresh.load_state_dict(bnn.state_dict())  # the documented round trip of a PEFT model: its state dict
    x = tokens(vocab=30)
    with torch.no_grad(), autobayes.use_mean(bnn), autobayes.use_mean(fresh):
        assert torch.equal(fresh(input_ids=x).output.logits, bnn(input_ids=x).output.logits)


def test_peft_save_load_with_a_factory(tmp_path, monkeypatch):
    (tmp_path / "peft_factory_for_test.py").write_text(
        "import peft, transformers\n"
        "def make(num_classes=3):\n"
        "    cfg = transformers.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,\n"
        "                                  intermediate_size=32, max_position_embeddings=16, num_labels=num_classes)\n"
        "    model = transformers.BertForSequenceClassification(cfg)\n"
        "    return peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=['query', 'value']))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pytest.importorskip("peft")
    model = autobayes.build_model("peft_factory_for_test:make", num_classes=3)
    bnn = autobayes.bayesify(model, mode="swap")
    train_step(bnn, tokens(vocab=30), torch.tensor([0, 1, 2, 0, 1, 2]))
    loaded = autobayes.load(autobayes.save(bnn, tmp_path / "peft.safetensors"))
    x = tokens(vocab=30)
    with torch.no_grad(), autobayes.use_mean(bnn), autobayes.use_mean(loaded):
        assert torch.equal(loaded(input_ids=x).output.logits, bnn(input_ids=x).output.logits)
    torch.testing.assert_close(autobayes.merge_adapters(loaded)(input_ids=x).logits,
                               autobayes.merge_adapters(bnn)(input_ids=x).logits, atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rank", [0, -2, 2.5, True, "8"])
def test_bad_rank(rank):
    with pytest.raises(ConfigError, match="rank must be a positive integer"):
        autobayes.bayesify(TinyTransformer(), adapter="lora", rank=rank)


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), "16"])
def test_bad_alpha(alpha):
    with pytest.raises(ConfigError, match="alpha must be a positive number"):
        autobayes.bayesify(TinyTransformer(), adapter="lora", alpha=alpha)


@pytest.mark.parametrize("options, message", [
    ({"moped_delta": 0.1}, "moped_delta sets the posterior std from trained weights"),
    ({"overrides": {"head": {"moped_delta": 0.1}}}, "overrides\\['head'\\]: moped_delta"),
    ({"prior_loc": "weights"}, "prior_loc='weights' would centre the adapters' prior"),
])
def test_options_meant_for_trained_weights_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        autobayes.bayesify(TinyTransformer(), adapter="lora", **options)


def test_nothing_matched():
    with pytest.raises(ConfigError, match=r"no linear layer of TinyTransformer was selected.*include=\('nope',\)"):
        autobayes.bayesify(TinyTransformer(), adapter="lora", include=["nope"])


def test_adapter_on_a_non_linear_layer():
    with pytest.raises(ConfigError, match="'embed', a Embedding: adapter='lora' adds adapters to nn.Linear layers only"):
        autobayes.bayesify(TinyTransformer(), adapter="lora", include=["embed", "head"])
    with pytest.raises(ConfigError, match=r"layer_types=\['Conv2d'\]"):
        autobayes.bayesify(TinyTransformer(), adapter="lora", layer_types=["Conv2d"])


def test_linear_read_by_its_torch_nn_parent_gets_a_weight_parametrization():
    """nn.TransformerEncoderLayer reads its layers' weights itself (its eval fast path, nn.MultiheadAttention's
    in_proj_weight / out_proj): those weights get a LoRA parametrization (see tests/test_lora_functional.py), which
    every read goes through, fast path included; merge_adapters folds it (float rounding only: atol 1e-5)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)).eval()
    bnn = autobayes.bayesify(model, adapter="lora", rank=2, include=["1.*"])
    deltas = {n: m for n, m in bnn.named_modules() if isinstance(m, autobayes.adapters.parametrized.LoRADelta)}
    assert sorted(deltas) == sorted(f"1.{w}.parametrizations.{a}.0" for w, a in (
        ("linear1", "weight"), ("linear2", "weight"), ("self_attn", "in_proj_weight"),
        ("self_attn.out_proj", "weight")))
    assert "reads this layer's weights itself" not in str(bnn.bayes_report)
    x = torch.randn(3, 5, 8)
    with torch.no_grad(), autobayes.use_mean(bnn):
        torch.testing.assert_close(bnn(x).output, model(x), atol=0, rtol=0)  # B = 0: the pretrained model
        for delta in deltas.values():
            delta.lora_B_posterior.mu.normal_()
        out = bnn(x).output
    assert (out - model(x)).abs().max() > 1e-2
    with torch.no_grad():
        torch.testing.assert_close(autobayes.merge_adapters(bnn).eval()(x), out, atol=1e-5, rtol=0)


def test_bad_adapter_arguments():
    with pytest.raises(UnknownNameError, match="Did you mean 'lora'"):
        autobayes.bayesify(TinyTransformer(), adapter="lorra")
    with pytest.raises(ConfigError, match="options of LoRA adapters"):
        autobayes.bayesify(TinyTransformer(), rank=4)
    with pytest.raises(ConfigError, match="holds no PEFT LoRA layer"):
        autobayes.bayesify(TinyTransformer(), adapter="peft")
    with pytest.raises(ConfigError, match="merge_adapters expects a model converted with Bayesian adapters"):
        autobayes.merge_adapters(autobayes.bayesify(TinyTransformer()))


def test_peft_errors():
    pm = tiny_peft_bert()
    with pytest.raises(ConfigError, match="already holds PEFT LoRA layers"):
        autobayes.bayesify(pm, adapter="lora", mode="swap")
    with pytest.raises(ConfigError, match="drop \\['rank'\\]"):
        autobayes.bayesify(pm, adapter="peft", rank=4, mode="swap")
    peft = pytest.importorskip("peft")
    dora = peft.get_peft_model(tiny_bert(), peft.LoraConfig(r=2, target_modules=["query"], use_dora=True))
    with pytest.raises(ConfigError, match="use_dora"):
        autobayes.bayesify(dora, mode="swap")


@pytest.mark.slow
def test_lora_example_improves_accuracy_nll_and_ece():
    """examples/lora_finetune.py, as its docstring states (seed 0, one thread: accuracy 0.424 -> 0.786, NLL 6.45 ->
    0.66, ECE 0.49 -> 0.06; the posterior mean alone NLL 0.90). One fixed seed; the floors below leave wide room
    under those numbers (~10 s of CPU)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "lora_finetune.py"
    spec = importlib.util.spec_from_file_location("lora_finetune", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rows = example.run()
    before, after = rows["pretrained, new domain (before)"], rows["Bayesian LoRA, new domain (after)"]
    assert after["acc"] > before["acc"] + 0.2
    assert after["nll"] < before["nll"] / 3 and after["ece"] < before["ece"] / 3
    assert after["nll"] < rows["  posterior mean only"]["nll"]  # the model average beats its mean


def test_import_autobayes_loads_neither_peft_nor_transformers():
    code = "import sys, autobayes; print(sorted(m for m in ('peft', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
