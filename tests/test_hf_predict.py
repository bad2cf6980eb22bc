"""autobayes.predict on Hugging Face models: per-token predictive entropy and mutual information of a causal
LM's logits (N, T, V), per-example values of a sequence classifier (N, C), dict batches, seeds. Tiny random
configs, nothing downloaded."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import autobayes
from autobayes.uncertainty import ClassificationSummary, TokenSummary, token_summary
from autobayes.uncertainty.tokens import concat_token_summaries

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")
transformers.logging.set_verbosity_error()

V = 99


def _bayesify(model, **options):
    """Swap mode: fast on every branch (the graph routes have their own tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fall back to swap mode
        return autobayes.bayesify(model, allow_deterministic=True, mode="swap", **options).eval()


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                     bos_token_id=98, eos_token_id=98)
    model = transformers.GPT2LMHeadModel(config).eval()
    return model, _bayesify(model, posterior="gaussian", init_scale=0.3)


def _entropy(p):
    return -torch.special.xlogy(p, p).sum(-1)


def test_token_summary_matches_the_definitions():
    torch.manual_seed(0)
    logits = torch.randn(30, 2, 5, 11) * 2
    s = token_summary(logits, keep_samples=True)
    p = logits.double().softmax(-1)
    h_mean, h_each = _entropy(p.mean(0)), _entropy(p).mean(0)
    torch.testing.assert_close(s.predictive_entropy.double(), h_mean, rtol=0, atol=1e-5)
    torch.testing.assert_close(s.expected_entropy.double(), h_each, rtol=0, atol=1e-5)
    torch.testing.assert_close(s.mutual_information.double(), (h_mean - h_each).clamp_min(0), rtol=0, atol=1e-5)
    assert torch.equal(s.predicted, p.mean(0).argmax(-1)) and s.samples.shape == (30, 2, 5, 11)


def test_predict_gives_per_token_entropy_and_mutual_information(gpt2):
    _, bnn = gpt2
    ids = torch.randint(0, V, (3, 7))
    s = autobayes.predict(bnn, ids, n_samples=12, seed=0, progress=False, return_samples=True)
    assert isinstance(s, TokenSummary) and s.n_samples == 12
    for name in ("predictive_entropy", "expected_entropy", "mutual_information", "predicted", "confidence"):
        assert getattr(s, name).shape == (3, 7), name
    assert (s.mutual_information >= 0).all() and (s.predictive_entropy >= s.mutual_information - 1e-6).all()
    assert (s.predictive_entropy <= math.log(V) + 1e-5).all()
    assert s.mutual_information.mean() > 1e-3  # posterior std 0.3 on the head: the samples disagree
    p = s.samples.double()  # the kept samples give the same values (the accumulation is exact up to float32)
    torch.testing.assert_close(s.predictive_entropy.double(), _entropy(p.mean(0)), rtol=0, atol=1e-4)
    torch.testing.assert_close(s.expected_entropy.double(), _entropy(p).mean(0), rtol=0, atol=1e-4)
    assert bnn.training is False


def test_seeded_token_predictions_share_their_draws(gpt2):
    """seed= semantics unchanged (layers drawing weights, forward='sample'): the same seed, the same draws;
    another seed, other draws. (Local reparameterisation draws per-example noise, independent by design.)"""
    model, _ = gpt2
    bnn = _bayesify(model, posterior="gaussian", init_scale=0.3, forward="sample")
    ids = torch.randint(0, V, (3, 7))
    first = autobayes.predict(bnn, ids, n_samples=12, seed=0, progress=False)
    other = autobayes.predict(bnn, ids, n_samples=12, seed=1, progress=False)
    again = autobayes.predict(bnn, ids, n_samples=12, seed=0, progress=False)
    torch.testing.assert_close(again.predictive_entropy, first.predictive_entropy, rtol=0, atol=0)
    assert not torch.equal(other.predictive_entropy, first.predictive_entropy)


def test_mutual_information_is_zero_under_use_mean(gpt2):
    model, bnn = gpt2
    ids = torch.randint(0, V, (2, 6))
    with autobayes.use_mean(bnn):
        s = autobayes.predict(bnn, ids, n_samples=5, progress=False)
    assert s.mutual_information.abs().max() < 1e-5  # float32 rounding of the mean of 5 equal vectors
    logits = model(ids).logits
    torch.testing.assert_close(s.predictive_entropy, _entropy(logits.softmax(-1)).detach(), rtol=0, atol=1e-5)
    assert torch.equal(s.predicted, logits.argmax(-1))


def test_dict_batches_of_different_lengths_keep_mask_and_labels(gpt2):
    _, bnn = gpt2
    batches = []
    for n, t in ((2, 5), (3, 8)):
        ids = torch.randint(0, V, (n, t))
        mask = torch.ones(n, t, dtype=torch.long)
        mask[0, -2:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": ids})
    s = autobayes.predict(bnn, batches, n_samples=4, seed=0, progress=False)
    assert s.predictive_entropy.shape == (5, 8) and s.targets.shape == (5, 8)
    assert int(s.mask.sum()) == 2 * 5 + 3 * 8 - 4  # two masked positions in each batch, 2 x 3 padded ones
    assert torch.isnan(s.predictive_entropy[:2, 5:]).all() and (s.predicted[:2, 5:] == -1).all()
    labels = batches[1]["labels"]  # a causal LM: the target at t is labels[t + 1] (transformers' convention)
    assert torch.equal(s.targets[2:, :-1], labels[:, 1:]) and (s.targets[2:, -1] == -100).all()
    rows = s.to_rows()
    assert len(rows) == int(s.mask.sum()) and {"sequence", "position", "target", "mutual_information"} <= set(rows[0])


def test_sequence_classification_gives_per_example_values():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=64, num_labels=3)
    model = transformers.BertForSequenceClassification(config).eval()
    bnn = _bayesify(model, posterior="gaussian", init_scale=0.1)
    batch = {"input_ids": torch.randint(0, V, (4, 9)), "attention_mask": torch.ones(4, 9, dtype=torch.long),
             "labels": torch.tensor([0, 1, 2, 1])}
    s = autobayes.predict(bnn, batch, n_samples=10, seed=0, progress=False)
    assert isinstance(s, ClassificationSummary) and s.mean.shape == (4, 3)
    assert s.predictive_entropy.shape == (4,) and torch.equal(s.targets, batch["labels"])
    assert (s.mutual_information >= 0).all() and (s.predictive_entropy >= s.mutual_information).all()
    assert s.mutual_information.max() > 0
    with autobayes.use_mean(bnn):
        m = autobayes.predict(bnn, batch, n_samples=3, progress=False)
    assert m.mutual_information.abs().max() < 1e-6


def test_concat_pads_samples_along_tokens():
    a = token_summary(torch.randn(4, 2, 5, 7), keep_samples=True)
    b = token_summary(torch.randn(4, 3, 6, 7), keep_samples=True)
    both = concat_token_summaries([a, b])
    assert both.samples.shape == (4, 5, 6, 7) and both.mean.shape == (5, 6, 7)
    assert torch.equal(both.samples[:, 2:], b.samples) and torch.equal(both.samples[:, :2, :5], a.samples)
