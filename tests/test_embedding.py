"""Bayesian ``nn.Embedding`` / ``nn.EmbeddingBag``: exact in ``mean`` mode, the rows of a batch drawn with the
posterior's law, the KL over the whole table, opt-in conversion.

Tolerances from standard errors (SE), fixed seeds: over n draws, an element's sample mean lies within 4.5 SE
(sigma / sqrt(n)) of mu and its sample variance within 4.5 SE (sigma^2 sqrt(2 / (n - 1)), normal theory; for the
Laplace family the SE uses its kurtosis 6: sigma_w^2 sqrt((6 + 2) / n)) of the posterior variance -- 4.5 SE
two-sided over the ~50 elements compared keeps a correct layer's failure probability below 1e-3. A Monte Carlo
KL averaged over n estimates lies within 4 SE of the closed form.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import autobayes
from autobayes import BayesConfig, BayesEmbedding, BayesEmbeddingBag, ConfigError
from autobayes.kl import closed_kl

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENS = torch.tensor([[3, 5, 5, 7, 0], [1, 3, 9, 9, 2]])
BAG_CASES = [
    (dict(mode="sum"), True),
    (dict(mode="mean", padding_idx=2), False),
    (dict(mode="max", padding_idx=4), False),
    (dict(mode="sum", include_last_offset=True), True),
    (dict(mode="mean", scale_grad_by_freq=True), False),
]


@pytest.mark.parametrize("options", [dict(), dict(padding_idx=3), dict(padding_idx=0, scale_grad_by_freq=True)])
@pytest.mark.parametrize("posterior", ["gaussian", "radial"])
def test_embedding_mean_mode_equals_the_twin_forward_and_backward(options, posterior):
    torch.manual_seed(0)
    det = nn.Embedding(12, 4, **options)
    bayes = BayesEmbedding.from_deterministic(det, BayesConfig(posterior=posterior))
    with autobayes.use_mean(bayes):
        out = bayes(TOKENS)
    assert torch.equal(out, det(TOKENS))
    out.pow(2).sum().backward()
    det(TOKENS).pow(2).sum().backward()
    assert torch.equal(bayes.weight_posterior.mu.grad, det.weight.grad)
    assert torch.equal(bayes.to_deterministic()(TOKENS), det(TOKENS))


@pytest.mark.parametrize("options, weighted", BAG_CASES, ids=[str(c[0]) for c in BAG_CASES])
def test_embedding_bag_mean_mode_equals_the_twin(options, weighted):
    torch.manual_seed(0)
    det = nn.EmbeddingBag(12, 4, **options)
    bayes = BayesEmbeddingBag.from_deterministic(det, BayesConfig(posterior="gaussian"))
    flat, offsets = torch.tensor([1, 2, 4, 5, 4, 2, 11]), torch.tensor([0, 3, 5])
    psw = torch.rand(7) if weighted else None
    with autobayes.use_mean(bayes):
        assert torch.equal(bayes(flat, offsets, psw), det(flat, offsets, psw))
        assert torch.equal(bayes(TOKENS), det(TOKENS))  # 2-D input: one bag per row


def _seeded_rows(layer, input, seed):
    """What a seeded sampled forward must be: the unique rows drawn in one call, looked up by the original
    indices in a table that holds them."""
    torch.manual_seed(seed)
    rows = torch.unique(input)
    wp = layer.weight_posterior
    drawn = wp.posterior.sample_weights(wp.mu[rows], torch.exp(0.5 * wp.log_var[rows]))
    table = wp.mu.detach().clone()
    table[rows] = drawn
    return table


def test_sampled_forward_draws_the_rows_the_batch_uses_and_remaps_them_exactly():
    torch.manual_seed(0)
    emb = BayesEmbedding(12, 4, padding_idx=3, config=BayesConfig(posterior="gaussian", init_scale=0.5))
    out = (torch.manual_seed(7), emb(TOKENS))[1]
    table = _seeded_rows(emb, TOKENS, 7)
    expected = F.embedding(TOKENS, table)
    expected[TOKENS == 3] = emb.weight_posterior.mu[3]  # the padding row is not sampled: its mean
    assert torch.equal(out, expected)
    assert torch.equal(out[0, 1], out[0, 2])  # one draw per forward: a token twice gets the same vector

    flat, offsets, psw = torch.tensor([1, 2, 4, 5, 4, 2, 11]), torch.tensor([0, 3, 5]), torch.rand(7)
    for options, weights in ((dict(mode="max", padding_idx=4), None), (dict(mode="sum", include_last_offset=True), psw)):
        bag = BayesEmbeddingBag(12, 4, **options, config=BayesConfig(posterior="laplace", init_scale=0.5))
        out = (torch.manual_seed(8), bag(flat, offsets, weights))[1]
        table = _seeded_rows(bag, flat, 8)
        assert torch.equal(out, F.embedding_bag(flat, table, offsets, per_sample_weights=weights, **options))


@pytest.mark.parametrize("posterior", ["gaussian", "laplace"])
def test_each_looked_up_element_has_the_posterior_mean_and_variance(posterior):
    torch.manual_seed(0)
    emb = BayesEmbedding(1000, 5, config=BayesConfig(posterior=posterior, init_scale=0.2))
    tokens = torch.tensor([4, 17, 999, 17, 4, 500, 3, 2, 1, 0])
    n = 4000
    with torch.no_grad():
        draws = torch.stack([emb(tokens) for _ in range(n)]).double()
        mu = emb.weight_posterior.mu[tokens].double()
        var = emb.weight_posterior.variance[tokens].double()
    kurtosis = 3.0 if posterior == "gaussian" else 6.0  # E[(w - mu)^4] / var^2
    se_mean = (var / n).sqrt()
    se_var = var * math.sqrt((kurtosis - 1) / n)
    assert ((draws.mean(0) - mu).abs() <= 4.5 * se_mean).all()
    assert ((draws.var(0) - var).abs() <= 4.5 * se_var).all()


def test_padding_row_is_its_mean_and_gets_no_gradient_from_the_output():
    emb = BayesEmbedding(12, 4, padding_idx=3, config=BayesConfig(posterior="gaussian", init_scale=0.5))
    with torch.no_grad():
        emb.weight_posterior.mu[3] = 1.5
    out = emb(TOKENS)
    assert (out[TOKENS == 3] == 1.5).all()
    out.pow(2).sum().backward()
    assert (emb.weight_posterior.mu.grad[3] == 0).all() and (emb.weight_posterior.log_var.grad[3] == 0).all()


def test_only_the_rows_used_get_a_data_gradient_and_every_posterior_parameter_a_gradient():
    emb = BayesEmbedding(50, 4, config=BayesConfig(posterior="gaussian"))
    emb(TOKENS).pow(2).sum().backward()
    used = torch.zeros(50, dtype=torch.bool)
    used[TOKENS.unique()] = True
    for grad in (emb.weight_posterior.mu.grad, emb.weight_posterior.log_var.grad):
        assert (grad[used] != 0).all() and (grad[~used] == 0).all()
    emb.zero_grad()
    (emb(TOKENS).pow(2).sum() + emb.kl()).backward()  # the KL reaches every row
    assert all((p.grad != 0).all() for p in emb.parameters())


def test_radial_and_seeded_draws_sample_the_whole_table():
    """Radial rows are not independent (one direction over the tensor), and a seeded draw must give every
    batch the same table: both draw the whole table, then look up."""
    emb = BayesEmbedding(12, 4, config=BayesConfig(posterior="radial"))
    out = (torch.manual_seed(3), emb(TOKENS))[1]
    torch.manual_seed(3)
    assert torch.equal(out, F.embedding(TOKENS, emb.weight_posterior.sample()))
    gauss = BayesEmbedding(12, 4, config=BayesConfig(posterior="gaussian"))
    gauss.weight_posterior.draw_seed = 5
    assert torch.equal(gauss(TOKENS[:, :2])[:, 0], gauss(TOKENS)[:, 0])  # the same rows whatever else is used


@pytest.mark.parametrize("posterior", ["gaussian", "radial"])
@pytest.mark.parametrize("method", ["repar", "direct"])
def test_kl_covers_the_whole_table_and_monte_carlo_is_unbiased(posterior, method):
    torch.manual_seed(0)
    emb = BayesEmbedding(40, 3, config=BayesConfig(posterior=posterior, kl=method, n_mc=1, prior_scale=0.5))
    wp = emb.weight_posterior
    closed = closed_kl(wp.posterior, wp.prior, wp.mu, wp.scale).item()  # every row of the table
    with torch.no_grad():
        draws = torch.tensor([emb.kl().item() for _ in range(400)], dtype=torch.float64)
    se = draws.std().item() / math.sqrt(len(draws))
    assert abs(draws.mean().item() - closed) <= 4 * se, (draws.mean().item(), closed, se)
    # in a converted model the KL is the whole table's, whichever rows the forward looked up
    model = nn.Sequential(nn.Embedding(40, 3), nn.Flatten(), nn.Linear(6, 2))
    bnn = autobayes.bayesify(model, layer_types=["Embedding"], posterior=posterior, kl="closed")
    wp = bnn[0].weight_posterior
    assert torch.allclose(bnn(torch.tensor([[1, 2]])).kl, closed_kl(wp.posterior, wp.prior, wp.mu, wp.scale))


def test_embeddings_are_opt_in_and_follow_the_selection_options():
    model = nn.Sequential(nn.Embedding(30, 4), nn.Flatten(), nn.Linear(8, 2))
    report = autobayes.inspect_model(model)
    skipped = {r.name: r.reason for r in report.skipped}
    assert "layer_types=['Linear', 'Embedding']" in skipped["0"] and "opt-in" in skipped["0"]
    for mode in ("fx", "swap"):
        bnn = autobayes.bayesify(model, mode=mode, layer_types=["Linear", "Embedding"], posterior="radial",
                                 overrides={"0": {"prior_scale": 0.2}})  # a closed-form KL: the sum checks exactly
        assert isinstance(bnn[0], BayesEmbedding) and float(bnn[0].weight_posterior.prior.scale) == pytest.approx(0.2)
        x = torch.tensor([[1, 2], [3, 3]])
        with autobayes.use_mean(bnn):
            assert torch.equal(bnn(x).output, model(x))
        assert torch.allclose(bnn(x).kl, bnn[0].kl() + bnn[2].kl())
    assert autobayes.bayesify(model, layer_types=["Embedding"], exclude=["0"], allow_deterministic=True).bayes_report.converted == []
    bag_model = nn.Sequential(nn.EmbeddingBag(30, 4), nn.Linear(4, 2))
    assert isinstance(autobayes.bayesify(bag_model, layer_types=["EmbeddingBag"])[0], BayesEmbeddingBag)


def test_max_norm_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"max_norm=None.*exclude"):
        BayesEmbedding.from_deterministic(nn.Embedding(5, 2, max_norm=1.0))
    model = nn.Sequential(nn.EmbeddingBag(5, 2, max_norm=1.0), nn.Linear(2, 2))
    for mode in ("auto", "swap"):
        with pytest.raises(ConfigError, match="layer '0': EmbeddingBag.max_norm=1.0."):
            autobayes.bayesify(model, mode=mode, layer_types=["Linear", "EmbeddingBag"])
    assert autobayes.bayesify(model).bayes_report.converted[0].name == "1"  # off by default: untouched


class TiedLM(nn.Module):
    """The output layer reuses the embedding's table (weight tying)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.lstm = nn.LSTM(8, 8, batch_first=True)

    def forward(self, tokens):
        return F.linear(self.lstm(self.embed(tokens))[0], self.embed.weight)


def test_an_opt_in_embedding_whose_table_feeds_a_linear_op_is_reported_once():
    """Off by default as a layer, but its weight is read by F.linear (a tied head), which converts it: the report
    keeps one record for it, the Bayesian one (it listed it as skipped too, before)."""
    bnn = autobayes.bayesify(TiedLM())
    records = [r for r in bnn.bayes_report.records if r.name == "embed"]
    assert [(r.status, r.how) for r in records] == [("bayesian", "functional")]


def test_a_model_of_opt_in_layers_only_says_how_to_convert_them():
    with pytest.raises(ConfigError, match=r"Embedding, LayerNorm layers are opt-in: convert them with "
                                          r"layer_types=\['Embedding', 'LayerNorm'\]"):
        autobayes.bayesify(nn.Sequential(nn.Embedding(10, 3), nn.LayerNorm(3)))


def test_default_layer_types_are_the_supported_ones_less_the_opt_in_ones():
    from autobayes.config import default_layer_types, supported_layer_types
    from autobayes.nn.mappings import OPT_IN_LAYER_TYPES

    defaults, supported = default_layer_types(), supported_layer_types()
    assert {"Linear", "Conv2d", "LSTM", "GRU", "RNN"} <= set(defaults)
    assert set(supported) - set(defaults) == {t.__name__ for t in OPT_IN_LAYER_TYPES}
    assert BayesConfig().resolve_layer("gru", nn.GRU(2, 2))[0] is not None
    assert BayesConfig().resolve_layer("attn", nn.MultiheadAttention(4, 2), as_type=nn.Linear)[0] is not None
    reason = BayesConfig().resolve_layer("bn", nn.BatchNorm2d(3), as_type=nn.BatchNorm2d)[1]
    assert "layer_types=['Linear', 'BatchNorm2d']" in reason
