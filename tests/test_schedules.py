import pytest

from autobayes.errors import ConfigError, UnknownNameError
from autobayes.schedules import BETA_SCHEDULES, get_beta_schedule


def _epoch(schedule, m, epoch=0):
    return [schedule(epoch * m + i, epoch, i, m) for i in range(m)]


def _paper_beta(beta_type, n_batches, batch_idx):
    # The paper repository's definitions (JurijsNazarovs/bayesian_nn, vi_posteriors.Utils.get_beta), restated.
    if beta_type == "blundell":
        return 2 ** (n_batches - (batch_idx + 1)) / (2**n_batches - 1)
    if beta_type == "graves":
        return 1 / n_batches
    return 1


@pytest.mark.parametrize("name", ["blundell", "graves"])
@pytest.mark.parametrize("m", [1, 2, 7, 30])
def test_paper_schedules_are_num_batches_times_the_repository_beta(name, m):
    ours = _epoch(get_beta_schedule(name), m)
    assert ours == pytest.approx([m * _paper_beta(name, m, i) for i in range(m)], rel=1e-12)
    # Our loss is mean NLL + beta * KL / N: the KL counts once per epoch when the betas average to 1.
    assert sum(ours) / m == pytest.approx(1.0, rel=1e-12)


def test_blundell_values_and_no_overflow():
    s = get_beta_schedule("Blundell")  # case-insensitive
    assert _epoch(s, 3) == pytest.approx([12 / 7, 6 / 7, 3 / 7])
    big = _epoch(s, 5000)
    assert big[0] == pytest.approx(2500.0) and big[-1] == 0.0
    assert sum(big) / 5000 == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("name", ["none", "standard", "original"])
def test_full_elbo_schedules_are_one(name):
    assert set(_epoch(get_beta_schedule(name), 5, epoch=3)) == {1.0}


def test_constant_reproduces_the_repository_original():
    # The repository's "original" (beta_repo = 1) weights the KL num_batches times per epoch.
    m = 4
    s = get_beta_schedule("constant", value=m)
    assert _epoch(s, m) == [m * _paper_beta("original", m, i) for i in range(m)]


def test_linear_warmup():
    s = get_beta_schedule("warmup", warmup_steps=10, beta_min=0.2)
    assert [s(t, 0, t, 100) for t in (0, 5, 10, 50)] == pytest.approx([0.2, 0.6, 1.0, 1.0])
    assert get_beta_schedule("linear", warmup_steps=0)(0, 0, 0, 1) == 1.0


def test_cyclical_fu_et_al():
    s = get_beta_schedule("cyclical", total_steps=20, n_cycles=2, ratio=0.5)
    got = [s(t, 0, 0, 1) for t in range(22)]
    ramp = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert got == pytest.approx(ramp + ramp + [1.0, 1.0])  # beta_max after total_steps
    s2 = get_beta_schedule("cyclical", total_steps=8, n_cycles=1, ratio=1.0, beta_min=0.5)
    assert s2(4, 0, 0, 1) == pytest.approx(0.75)


def test_unknown_name_suggests_closest():
    with pytest.raises(UnknownNameError, match="Did you mean 'cyclical'") as err:
        get_beta_schedule("cyclic")
    assert "blundell" in str(err.value)
    assert set(BETA_SCHEDULES.names()) >= {"none", "blundell", "graves", "standard", "linear", "cyclical"}


def test_bad_options_and_positions():
    with pytest.raises(UnknownNameError, match="warmup_steps"):
        get_beta_schedule("warmup", warmup=10)
    with pytest.raises(UnknownNameError, match="constant"):
        get_beta_schedule("graves", value=2)
    with pytest.raises(ConfigError, match="ratio"):
        get_beta_schedule("cyclical", total_steps=10, ratio=0)
    with pytest.raises(ConfigError, match="batch_idx < num_batches"):
        get_beta_schedule("blundell")(3, 0, 3, 3)
    fn = lambda step, epoch, batch_idx, num_batches: 0.1  # noqa: E731
    assert get_beta_schedule(fn) is fn
