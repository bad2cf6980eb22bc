import math
from collections import namedtuple

import pytest
import torch

from autobayes.errors import ConfigError
from autobayes.losses import CategoricalELBO, ELBOTerms, GaussianELBO, split_mean_logvar


def test_categorical_scaling_hand_computed():
    # Two examples, two classes. Logits [0, 0] -> p = 1/2; logits [log 3, 0] with label 0 -> p = 3/4.
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    y = torch.tensor([1, 0])
    n, b, kl, beta = 1000, 2, 40.0, 0.5
    nll_sum = -math.log(0.5) - math.log(0.75)
    # The documented convention: (nll_sum * N / B + beta * KL) / N.
    expected = (nll_sum * n / b + beta * kl) / n
    terms = CategoricalELBO(num_data=n)(logits, y, torch.tensor(kl), beta=beta)
    assert isinstance(terms, ELBOTerms)
    assert terms.loss.item() == pytest.approx(expected, rel=1e-6)
    assert terms.loss.item() == pytest.approx(nll_sum / b + beta * kl / n, rel=1e-6)
    assert terms.nll.item() == pytest.approx(nll_sum / b, rel=1e-6)
    assert terms.kl.item() == kl and terms.beta == beta


def test_categorical_accepts_output_kl_pair_and_default_beta():
    Out = namedtuple("Out", ["output", "kl"])
    logits, y = torch.zeros(4, 3), torch.tensor([0, 1, 2, 0])
    crit = CategoricalELBO(num_data=10, beta=2.0)
    a = crit(Out(logits, torch.tensor(3.0)), y)
    assert a.loss.item() == pytest.approx(math.log(3) + 2.0 * 3.0 / 10, rel=1e-6)


def test_categorical_per_example_nll_sums_over_positions():
    # Segmentation-shaped logits: NLL per example is summed over the 2x2 positions, never averaged.
    logits = torch.zeros(3, 4, 2, 2)
    y = torch.zeros(3, 2, 2, dtype=torch.long)
    terms = CategoricalELBO(num_data=3)(logits, y, kl=0.0)
    assert terms.nll.item() == pytest.approx(4 * math.log(4), rel=1e-6)


def test_categorical_soft_labels():
    logits = torch.randn(5, 3)
    probs = torch.softmax(torch.randn(5, 3), -1)
    terms = CategoricalELBO(num_data=5)(logits, probs, kl=0.0)
    expected = -(probs * torch.log_softmax(logits, -1)).sum(-1).mean()
    assert terms.nll.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gaussian_fixed_variance_hand_computed():
    mean = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[1.0], [1.0]])
    var, n = 2.0, 50
    nll0 = 0.5 * (math.log(2 * math.pi * var) + 1.0 / var)
    nll1 = 0.5 * math.log(2 * math.pi * var)
    terms = GaussianELBO(num_data=n, variance=var)(mean, y, kl=5.0)
    assert terms.loss.item() == pytest.approx((nll0 + nll1) / 2 + 5.0 / n, rel=1e-6)


def test_gaussian_learned_variance_is_a_parameter_and_trains():
    torch.manual_seed(0)
    crit = GaussianELBO(num_data=100, variance="learned")
    assert [p.shape for p in crit.parameters()] == [torch.Size([])]
    y = torch.randn(256, 1) * 3.0
    opt = torch.optim.Adam(crit.parameters(), lr=0.1)
    for _ in range(300):
        opt.zero_grad()
        crit(torch.zeros_like(y), y, kl=0.0).loss.backward()
        opt.step()
    # The maximum-likelihood variance is mean(y^2), the optimum of the loss.
    assert crit.log_variance.exp().item() == pytest.approx(y.pow(2).mean().item(), rel=0.02)


def test_gaussian_heteroscedastic_matches_torch():
    torch.manual_seed(1)
    out = torch.randn(6, 4)  # D = 2
    y = torch.randn(6, 2)
    mean, log_var = split_mean_logvar(out)
    terms = GaussianELBO(num_data=6, variance="heteroscedastic")(out, y, kl=0.0)
    ref = torch.nn.functional.gaussian_nll_loss(mean, y, log_var.exp(), full=True, reduction="sum") / 6
    assert terms.nll.item() == pytest.approx(ref.item(), rel=1e-5)


def test_split_mean_logvar_odd_channels():
    with pytest.raises(ConfigError, match="even number of channels"):
        split_mean_logvar(torch.zeros(3, 5))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "100"])
def test_num_data_validated(bad):
    with pytest.raises(ConfigError, match="num_data"):
        CategoricalELBO(num_data=bad)


def test_shape_errors_name_the_fix():
    with pytest.raises(ConfigError, match=r"unsqueeze\(-1\)"):
        GaussianELBO(num_data=4)(torch.zeros(4, 1), torch.zeros(4), kl=0.0)
    with pytest.raises(ConfigError, match="does not match logits"):
        CategoricalELBO(num_data=4)(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), kl=0.0)
    with pytest.raises(ConfigError, match="class indices"):
        CategoricalELBO(num_data=4)(torch.zeros(4, 3), torch.zeros(4), kl=0.0)
    with pytest.raises(ConfigError, match="kl.mean"):
        CategoricalELBO(num_data=4)(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), kl=torch.ones(2))
    with pytest.raises(ConfigError, match="needs the model's KL"):
        CategoricalELBO(num_data=4)(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ConfigError, match="beta"):
        CategoricalELBO(num_data=4)(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), kl=0.0, beta=-1)
    with pytest.raises(ConfigError, match="variance"):
        GaussianELBO(num_data=4, variance="learnt")
    with pytest.raises(ConfigError, match="variance"):
        GaussianELBO(num_data=4, variance=0.0)
