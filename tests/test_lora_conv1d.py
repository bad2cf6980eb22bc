"""LoRA adapters on transformers' ``Conv1D`` (GPT-2's matrices, weight stored ``(in, out)``), with the filters of
``nn.Linear`` layers; and the error of a filter that matches nothing (it lists the layers that exist and a filter
built from their names).

A tiny GPT-2 (random weights): ``bayesify(gpt2, adapter="lora", include=["*attn*"])`` wraps every attention
``Conv1D`` (``c_attn``, ``c_proj``) and nothing else; the model starts where the pretrained one was (``B = 0``:
under ``use_mean`` the logits equal the deterministic model's, float rounding only: atol 1e-5); the base weights
are frozen; after a few optimiser steps ``merge_adapters`` folds the posterior means back into ``Conv1D`` layers
whose outputs equal the Bayesian model's under ``use_mean`` (atol 1e-5 on O(1) logits).
"""

from __future__ import annotations

import warnings

import pytest
import torch

import autobayes
from autobayes import ConfigError

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32)
    return transformers.GPT2LMHeadModel(config).eval()


def _ids(batch=2, seq=6):
    return torch.randint(0, 50, (batch, seq), generator=torch.Generator().manual_seed(batch * 100 + seq))


def test_lora_adapts_gpt2_conv1d_layers_and_merges_back():
    model = _gpt2()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bnn = autobayes.bayesify(model, adapter="lora", rank=2, alpha=4, include=["*attn*"])
    adapted = sorted(n for n, m in bnn.named_modules() if isinstance(m, autobayes.LoRALinear))
    want = sorted(f"transformer.h.{i}.attn.{p}" for i in range(2) for p in ("c_attn", "c_proj"))
    assert adapted == want
    assert all(isinstance(m.base_layer, Conv1D) for m in bnn.modules() if isinstance(m, autobayes.LoRALinear))
    converted = sorted(r.name for r in bnn.bayes_report.converted)
    assert converted == sorted(f"{n}.lora_{p}" for n in want for p in "AB")
    assert all(not p.requires_grad for n, p in bnn.named_parameters() if "lora_" not in n)

    ids = _ids()
    with torch.no_grad(), autobayes.use_mean(bnn):
        assert torch.allclose(bnn(input_ids=ids).output.logits, model(input_ids=ids).logits, atol=1e-5)

    opt = torch.optim.Adam([p for p in bnn.parameters() if p.requires_grad], lr=0.05)
    bnn.train()
    for _ in range(3):
        out, kl = bnn(input_ids=ids, labels=ids)
        opt.zero_grad()
        (out.loss + kl / 1000).backward()
        opt.step()
    bnn.eval()
    merged = autobayes.merge_adapters(bnn).eval()
    assert isinstance(merged.transformer.h[0].attn.c_attn, Conv1D)
    with torch.no_grad(), autobayes.use_mean(bnn):
        got, want_logits = merged(input_ids=ids).logits, bnn(input_ids=ids).output.logits
    assert not torch.allclose(want_logits, model(input_ids=ids).logits, atol=1e-4)  # the adapters moved
    assert torch.allclose(got, want_logits, atol=1e-5)


def test_a_filter_matching_nothing_lists_what_would_match():
    with pytest.raises(ConfigError) as info:
        autobayes.bayesify(_gpt2(), adapter="lora", include=["*attention*"])
    message = str(info.value)
    assert "transformer.h.0.attn.c_attn" in message
    assert "include=['*c_attn'" in message  # a filter built from the layers' names
    assert "include=['*attention*']" not in message.split("Fix the filter")[1]
